//! Logical clusters of shards (issue 19): `[remote_servers]` in the
//! configuration shows in `system.clusters` with ClickHouse's columns, the
//! `{shard}` / `{replica}` macros in `system.macros` and in a Replicated
//! table's path, and an unknown macro fails the CREATE.

use std::sync::Arc;

use shardhouse::server::Server;
use shardhouse::server::config::Config;

fn run(server: &Arc<Server>, sql: &str) -> Result<String, String> {
    crate::rows(server, sql)
}

#[test]
fn remote_servers_show_in_system_clusters_and_macros_expand() {
    let dir = tempfile::tempdir().unwrap();
    // Node 3 of four; only this one runs (nothing here talks to the others).
    let text = format!(
        "[server]\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:18123\"\n\
         [cluster]\nnode_id = 3\nnodes = [\n\
         {{ id = 1, raft = \"127.0.0.1:19001\", http = \"127.0.0.1:18121\" }},\n\
         {{ id = 2, raft = \"127.0.0.1:19002\", http = \"127.0.0.1:18122\" }},\n\
         {{ id = 3, raft = \"127.0.0.1:19003\", http = \"127.0.0.1:18123\" }},\n\
         {{ id = 4, raft = \"127.0.0.1:19004\", http = \"127.0.0.1:18124\" }}]\n\
         [remote_servers.c]\nshards = [{{ replicas = [1, 2] }}, {{ weight = 2, replicas = [3, 4] }}]\n\
         [remote_servers.solo]\nshards = [{{ replicas = [3] }}]\n\
         [macros]\nlayer = \"eu\"\n",
        dir.path().display()
    );
    let server = Server::open_with(&Config::parse(&text).unwrap()).unwrap();
    let clusters = run(
        &server,
        "SELECT cluster, shard_num, shard_weight, replica_num, host_name, port, is_local, errors_count \
         FROM system.clusters ORDER BY cluster, shard_num, replica_num",
    )
    .unwrap();
    assert_eq!(
        clusters,
        "c\t1\t1\t1\t127.0.0.1\t18121\t0\t0\n\
         c\t1\t1\t2\t127.0.0.1\t18122\t0\t0\n\
         c\t2\t2\t1\t127.0.0.1\t18123\t1\t0\n\
         c\t2\t2\t2\t127.0.0.1\t18124\t0\t0\n\
         solo\t1\t1\t1\t127.0.0.1\t18123\t1\t0"
    );
    let macros = run(&server, "SELECT macro, substitution FROM system.macros ORDER BY macro").unwrap();
    assert_eq!(macros, "layer\teu\nreplica\t3\nshard\t2");
    let err = run(
        &server,
        "CREATE TABLE bad (k UInt64) ENGINE = ReplicatedMergeTree('/t/{region}/bad', '{replica}') ORDER BY k",
    )
    .unwrap_err();
    assert!(err.contains("NO_ELEMENTS_IN_CONFIG") && err.contains("region"), "{err}");
    run(
        &server,
        "CREATE TABLE hits_local (k UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{layer}/{shard}/{table}', '{replica}') ORDER BY k",
    )
    .unwrap();
    let paths = run(&server, "SELECT table, zookeeper_path, replica_name FROM system.replicas").unwrap();
    assert_eq!(paths, "hits_local\t/clickhouse/tables/eu/2/hits_local\t3");
    // SHOW CREATE keeps the macros: every node expands its own.
    let shown = run(&server, "SHOW CREATE TABLE hits_local").unwrap();
    assert!(shown.contains("'/clickhouse/tables/{layer}/{shard}/{table}', '{replica}'"), "{shown}");
    server.shutdown();
}
