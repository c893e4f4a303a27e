//! The `shardhouse` binary.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => println!("shardhouse {}", env!("CARGO_PKG_VERSION")),
        Some("server") => {
            eprintln!(
                "shardhouse server: the single-node server lands with issue 4; the storage engine is in the `storage` crate"
            );
            std::process::exit(2);
        }
        _ => {
            println!(
                "shardhouse {}\n\nUSAGE:\n  shardhouse server    run a server (not yet implemented)\n  shardhouse --version",
                env!("CARGO_PKG_VERSION")
            );
        }
    }
}
