"""Small-insert latency on a 3-node cluster alone (no other workload):
`small_probe.py BINARY WORKDIR [CLIENTS] [N]` prints `shardhouse benchmark`'s
numbers and the CPU seconds each node spent."""
import json, os, random, shutil, subprocess, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from cluster import cluster

binary, root = sys.argv[1], Path(sys.argv[2])
clients = int(sys.argv[3]) if len(sys.argv) > 3 else 16
n = int(sys.argv[4]) if len(sys.argv) > 4 else 400
shutil.rmtree(root, ignore_errors=True); root.mkdir(parents=True)
nodes = cluster(binary, root, 3)
try:
    for nd in nodes:
        nd.sh.post("CREATE TABLE s (k UInt64, v String) ENGINE = ReplicatedMergeTree ORDER BY k "
                   "SETTINGS parts_to_delay_insert = 100000, parts_to_throw_insert = 100000")
    if os.environ.get("STOP_MERGES"):
        for nd in nodes:
            nd.sh.post("SYSTEM STOP MERGES s")
    nodes[0].sh.post("INSERT INTO s FORMAT TSV", b"0\twarm\n")
    rng = random.Random(clients)
    qs = []
    for j in range(n):
        r = rng.randint(1, 100)
        qs.append("INSERT INTO s VALUES " + ", ".join(f"({j * 1000 + x}, 'v{x}')" for x in range(r)))
    targets = nodes
    if os.environ.get("LEADER_ONLY"):
        leader = int(nodes[0].sh.post("SELECT leader FROM system.raft_groups").split()[0])
        targets = [nd for nd in nodes if nd.node_id == leader]
    hosts = sum((["--host", f"127.0.0.1:{nd.http}"] for nd in targets), [])
    c0 = [nd.cpu_seconds() for nd in nodes]
    out = subprocess.run([binary, "benchmark", "--concurrency", str(clients), "--json", *hosts],
                         input="\n".join(qs).encode(), capture_output=True, check=False)
    c1 = [nd.cpu_seconds() for nd in nodes]
    r = json.loads(out.stdout)
    print({k: r[k] for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "qps", "errors")})
    print("server CPU ms per insert:", round(sum(b - a for a, b in zip(c0, c1)) / n * 1000, 2), [round(b - a, 2) for a, b in zip(c0, c1)])
    print("parts:", [nd.sh.post("SELECT count() FROM system.parts WHERE table = 's' AND active") for nd in nodes])
finally:
    for nd in nodes:
        nd.kill()
