//! The `shardhouse` binary.

use std::path::PathBuf;

use shardhouse::server::config::Config;

const USAGE: &str = "shardhouse — a replicated, sharded, columnar SQL database

USAGE:
  shardhouse server [-c FILE] [--data DIR] [--listen ADDR] [--max-body BYTES]
      Runs a one-node server: data in ./shardhouse-data, the ClickHouse HTTP
      interface on 127.0.0.1:8123. Stops cleanly on SIGTERM or Ctrl-C.
      -c/--config FILE reads a TOML file (flags given as well override it):
        [server]
        data_dir = \"shardhouse-data\"
        http_listen = \"127.0.0.1:8123\"
        max_body_bytes = 1073741824   # largest request body, after decompression
        merge_threads = 2             # background merge pool (default: cores, at most 8)
        memory_limit_bytes = 0        # default max_memory_usage of a query (0: none)
        os_threads_nice_value_merge_mutate = 10  # CPU priority of merges and mutations
        max_concurrent_queries = 0    # statements run at once (0: no limit)
        [cluster]                     # several nodes (default: a one-node cluster)
        name = \"shardhouse\"
        node_id = 1                   # this node
        [[cluster.nodes]]             # one per node, this one included
        id = 1
        raft = \"127.0.0.1:9234\"       # gRPC: Raft and part transfer
        http = \"127.0.0.1:8123\"
        [remote_servers.c]            # a logical cluster of shards (system.clusters)
        shards = [ { weight = 1, replicas = [1, 2] }, { weight = 2, replicas = [3, 4] } ]
        [macros]                      # {shard}/{replica} default to this node's place
        layer = \"eu\"
        [settings]                    # default query settings, e.g.
        max_threads = 2
        [users.default]               # users and passwords (default: default, no password)
        password = \"\"
  shardhouse client [--host HOST] [--port PORT] [--database DB] [--format FMT] [--query SQL]
      Sends statements to a server: --query, or statements from stdin
      (interactive on a terminal).
  shardhouse benchmark [--host HOST:PORT]... [--concurrency N] [--json]
      Like clickhouse-benchmark: runs the queries read from stdin (one per
      line) from N concurrent keep-alive connections, spread over the hosts
      in turn, and prints queries/s and latency percentiles.
  shardhouse --version";

fn parse_server_args(args: &[String]) -> Result<Config, String> {
    // The file first, so flags override it wherever they stand.
    let mut config = Config::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if flag == "-c" || flag == "--config" {
            config = Config::load(std::path::Path::new(value)).map_err(|e| e.to_string())?;
        }
    }
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let s = &mut config.server;
        match flag.as_str() {
            "-c" | "--config" => {}
            "--data" => s.data_dir = PathBuf::from(value),
            "--listen" => s.http_listen = value.parse().map_err(|e| format!("--listen {value}: {e}"))?,
            "--max-body" => s.max_body_bytes = value.parse().map_err(|e| format!("--max-body {value}: {e}"))?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn run_server(config: Config) -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let server = shardhouse::server::Server::open_with(&config).map_err(|e| e.to_string())?;
        // Groups must answer their peers whether or not this node gets queries.
        server.replication().start().await.map_err(|e| e.to_string())?;
        let data = config.server.data_dir.display().to_string();
        let listen = config.server.http_listen;
        shardhouse::server::http::serve(
            server.clone(),
            listen,
            config.server.max_body_bytes,
            |addr| tracing::info!(%addr, data = %data, "shardhouse serving the ClickHouse HTTP interface"),
            shutdown_signal(),
        )
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
        server.shutdown();
        server.replication().shutdown().await;
        tracing::info!("shut down");
        Ok(())
    })
}

fn run_benchmark(args: &[String]) -> Result<(), String> {
    let mut opts = shardhouse::client::benchmark::BenchmarkOptions { hosts: Vec::new(), concurrency: 1, json: false };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--json" => opts.json = true,
            "--host" => opts.hosts.push(it.next().ok_or("--host needs HOST:PORT")?.clone()),
            "--concurrency" | "-c" => {
                let v = it.next().ok_or("--concurrency needs a number")?;
                opts.concurrency = v.parse().map_err(|e| format!("--concurrency {v}: {e}"))?;
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if opts.hosts.is_empty() {
        opts.hosts.push("127.0.0.1:8123".into());
    }
    std::process::exit(shardhouse::client::benchmark::run(&opts));
}

fn run_client(args: &[String]) -> Result<(), String> {
    let mut opts = shardhouse::client::ClientOptions::default();
    let mut query = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--host" => opts.host = value.clone(),
            "--port" => opts.port = value.parse().map_err(|e| format!("--port {value}: {e}"))?,
            "--database" | "-d" => opts.database = value.clone(),
            "--format" | "-f" => opts.format = Some(value.clone()),
            "--query" | "-q" => query = Some(value.clone()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    std::process::exit(shardhouse::client::run(&opts, query.as_deref()));
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("shardhouse {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some("server") => parse_server_args(&args[1..]).and_then(run_server),
        Some("client") => run_client(&args[1..]),
        Some("benchmark") => run_benchmark(&args[1..]),
        Some("--help") | Some("-h") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other}\n\n{USAGE}")),
    };
    if let Err(e) = result {
        eprintln!("shardhouse: {e}");
        std::process::exit(2);
    }
}
