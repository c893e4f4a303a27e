//! `jepsen --bin target/debug/shardhouse [--seconds 60] [--seed 1] [--writers 4] [--dir D]`:
//! runs the fault workload against real server processes; exit 1 on an anomaly.

fn main() {
    let mut opts = jepsen::Options {
        bin: "target/debug/shardhouse".into(),
        dir: std::env::temp_dir().join(format!("shardhouse-jepsen-{}", std::process::id())),
        seconds: 60,
        seed: 1,
        writers: 4,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().cloned().unwrap_or_default();
        let num = || value.parse::<u64>().unwrap_or_else(|_| usage(flag));
        match flag.as_str() {
            "--bin" => opts.bin = value.clone().into(),
            "--dir" => opts.dir = value.clone().into(),
            "--seconds" => opts.seconds = num(),
            "--seed" => opts.seed = num(),
            "--writers" => opts.writers = num(),
            _ => usage(flag),
        }
    }
    match jepsen::run(&opts) {
        Ok(summary) => {
            eprintln!("ok: {summary}");
            let _ = std::fs::remove_dir_all(&opts.dir);
        }
        Err(report) => {
            eprintln!("ANOMALIES (data kept in {}):\n{report}", opts.dir.display());
            std::process::exit(1);
        }
    }
}

fn usage(flag: &str) -> ! {
    eprintln!(
        "jepsen: bad argument {flag}\nusage: jepsen --bin PATH [--seconds N] [--seed N] [--writers N] [--dir DIR]"
    );
    std::process::exit(2);
}
