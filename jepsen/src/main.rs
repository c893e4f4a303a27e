//! jepsen: drives real shardhouse server processes through faults and checks the
//! recorded history. The fault harness arrives with replication (issue 5).

fn main() {
    eprintln!("jepsen: no workloads yet; they arrive with replication (issue 5)");
    std::process::exit(2);
}
