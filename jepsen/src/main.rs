//! `jepsen --bin target/debug/shardhouse [--seconds 60] [--seed 1] [--writers 4] [--dir D]
//! [--faults kills,pauses,partitions,optimize,mutation|all] [--optimize-ms 3000-7000]`:
//! runs the fault workload against real server processes; exit 1 on an anomaly.

fn main() {
    let mut opts = jepsen::Options {
        bin: "target/debug/shardhouse".into(),
        dir: std::env::temp_dir().join(format!("shardhouse-jepsen-{}", std::process::id())),
        seconds: 60,
        seed: 1,
        writers: 4,
        faults: jepsen::Faults::all(),
        optimize_ms: (3000, 7000),
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
            "--faults" => opts.faults = jepsen::Faults::parse(&value).unwrap_or_else(|e| usage(&e)),
            "--optimize-ms" => {
                let (lo, hi) = value.split_once('-').unwrap_or((&value, &value));
                let ms = |x: &str| x.parse::<u64>().unwrap_or_else(|_| usage(flag));
                opts.optimize_ms = (ms(lo), ms(hi).max(ms(lo) + 1));
            }
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
        "jepsen: bad argument {flag}\nusage: jepsen --bin PATH [--seconds N] [--seed N] [--writers N] [--dir DIR] [--faults LIST] [--optimize-ms LO-HI]"
    );
    std::process::exit(2);
}
