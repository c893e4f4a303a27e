"""Replication benchmarks (issue 5; suite workload 6): three `shardhouse server`
processes on loopback with a ReplicatedMergeTree table (RF = 3) next to a
single-node server in the same run.

1. insert throughput of 100k-row Parquet blocks: RF=3 cluster vs the single
   node (MergeTree, and ReplicatedMergeTree with RF=1), interleaved per block;
2. small-insert (1-100 rows) commit latency p50/p99 at 1, 16 and 64 clients;
3. idle CPU of a node hosting 1,000 groups, quiesced and not;
4. catch-up speed of a replica that was down during a load (MB/s).

Usage: cluster.py BINARY HITS_PARQUET WORKDIR OUT [--blocks N] [--groups N]
Writes OUT.md and OUT.json. Ratios, not absolute times: the machine is noisy.
"""

import argparse
import concurrent.futures as cf
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from run import DDL, Shardhouse, pct


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Node:
    def __init__(self, binary, root, node_id, cluster_toml, http, quiesce_ms):
        self.binary, self.node_id, self.http = binary, node_id, http
        self.dir = root / f"n{node_id}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "shardhouse.toml"
        cluster = ""
        # MERGE_NICE=N: the merge threads' nice value (else the server's default).
        nice = f"os_threads_nice_value_merge_mutate = {os.environ['MERGE_NICE']}\n" if "MERGE_NICE" in os.environ else ""
        if cluster_toml:
            cluster = f"\n[cluster]\nnode_id = {node_id}\nquiesce_after_ms = {quiesce_ms}\n{cluster_toml}"
        self.config.write_text(
            f'[server]\ndata_dir = "{self.dir / "data"}"\nhttp_listen = "127.0.0.1:{http}"\n'
            f"max_body_bytes = 4294967296\n{nice}{cluster}"
        )
        self.proc = None
        self.sh = Shardhouse(f"http://127.0.0.1:{http}")

    def start(self):
        log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen([self.binary, "server", "-c", str(self.config)], stdout=log, stderr=log)
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http}/ping", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"node {self.node_id} did not start")

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def peak_rss_mb(self):
        """Peak resident memory of the process so far (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
        return 0

    def cpu_seconds(self):
        f = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def cluster(binary, root, n, quiesce_ms=2000):
    ports = [(free_port(), free_port()) for _ in range(n)]
    toml = "".join(
        f'[[cluster.nodes]]\nid = {i + 1}\nraft = "127.0.0.1:{r}"\nhttp = "127.0.0.1:{h}"\n'
        for i, (r, h) in enumerate(ports)
    )
    nodes = [Node(binary, root, i + 1, toml, h, quiesce_ms) for i, (_, h) in enumerate(ports)]
    for nd in nodes:
        nd.start()
    return nodes


def replicated(ddl, name, extra=""):
    ddl = ddl.replace("TABLE hits", f"TABLE {name}").replace("ENGINE = MergeTree", "ENGINE = ReplicatedMergeTree")
    return ddl + extra


def settle(nodes, limit=180):
    """Waits (up to `limit` s) until no merge runs on any node, so one
    phase's background merges do not slow the next phase; returns the
    seconds the merges still took."""
    t0 = time.time()
    while time.time() < t0 + limit:
        if all(int(nd.sh.post("SELECT count() FROM system.merges")) == 0 for nd in nodes):
            waited = time.time() - t0
            time.sleep(1)
            return waited
        time.sleep(0.5)
    return time.time() - t0


def drop(nodes, table):
    for nd in nodes:
        nd.sh.post(f"DROP TABLE {table}")


def median_run(runs):
    """The run with the median ratio, listing every run's ratio."""
    mid = sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2]
    return dict(mid, ratios=[round(r["ratio"], 2) for r in runs])


def load_concurrent(ports, table, blocks, clients):
    """Inserts every block with `clients` threads (block i through
    ports[i % len(ports)], a keep-alive connection per thread and port);
    returns the seconds the whole load took."""
    local = threading.local()

    def one(i):
        conns = getattr(local, "conns", None)
        if conns is None:
            conns = local.conns = {}
        port = ports[i % len(ports)]
        if port not in conns:
            conns[port] = Shardhouse(f"http://127.0.0.1:{port}")
        conns[port].post(f"INSERT INTO {table} FORMAT Parquet", blocks[i])

    t = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as ex:
        list(ex.map(one, range(len(blocks))))
    return time.perf_counter() - t


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("parquet")
    ap.add_argument("workdir")
    ap.add_argument("out")
    ap.add_argument("--blocks", type=int, default=100, help="100k-row blocks to insert (100: the whole 10M rows)")
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each insert load (the median is reported)")
    ap.add_argument("--small", type=int, default=2000,
                    help="small inserts per concurrency level (a p99 of 200 was their second worst: noise)")
    ap.add_argument("--only-idle", action="store_true", help="only the idle-CPU measurement")
    ap.add_argument("--only-inserts", action="store_true", help="only the 100k-row insert throughput")
    ap.add_argument("--skip-idle", action="store_true", help="everything but the idle-CPU measurement")
    ap.add_argument("--only-small", action="store_true", help="only the small-insert latency")
    a = ap.parse_args()
    root = Path(a.workdir) / "cluster_bench"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    report = {"machine": {"cores": os.cpu_count(), "load_before": os.getloadavg()[0]}}

    tbl = pq.read_table(a.parquet)
    rows_per_block = 100_000
    blocks = []
    for i in range(a.blocks):
        buf = pa.BufferOutputStream()
        pq.write_table(tbl.slice(i * rows_per_block, rows_per_block), buf, compression="none")
        blocks.append(buf.getvalue().to_pybytes())
    mb_in = sum(len(b) for b in blocks) / 1e6

    nodes = cluster(a.binary, root / "rf3", 3)
    single = Node(a.binary, root, "single", "", free_port(), 0)
    single.start()
    try:
        if not a.only_idle and not a.only_small:
            # 1. Insert throughput: each configuration in a phase of its own,
            # interleaved per block with a fresh single-node MergeTree table,
            # so no other table's merges run meanwhile; merges settle between.
            single_merges = " SETTINGS execute_merges_on_single_replica_time_threshold = 300"
            phases = [
                # Every replica merges (the default, as in ClickHouse).
                ("rf3", nodes, replicated(DDL, "ins3"), "ins3"),
                # One replica merges, the others fetch its result.
                ("rf3_single_replica_merges", nodes, replicated(DDL, "ins3s", single_merges), "ins3s"),
                ("single_replicated_rf1", [single], replicated(DDL, "ins1", " SETTINGS replication_factor = 1"), "ins1"),
            ]
            n = rows_per_block * len(blocks)
            # Each load is repeated `--reps` times, the configurations taking
            # turns, and the repetition with the median ratio is reported with
            # every ratio beside it: one 10-second load on this shared
            # machine swings by 0.2x from run to run.
            runs = {label: [] for label, *_ in phases}
            for rep in range(a.reps):
                for k, (label, where, ddl, tname) in enumerate(phases):
                    print(f"cluster: 100k-row inserts, {label}, repetition {rep + 1} ...", flush=True)
                    t = f"{tname}_r{rep}"
                    for nd in where:
                        nd.sh.post(ddl.replace(f"TABLE {tname}", f"TABLE {t}"))
                    base = f"ins_base{k}_r{rep}"
                    single.sh.post(DDL.replace("TABLE hits", f"TABLE {base}"))
                    t_eng = t_base = 0.0
                    for i, b in enumerate(blocks):
                        t_eng += timed(lambda: where[i % len(where)].sh.post(f"INSERT INTO {t} FORMAT Parquet", b))
                        t_base += timed(lambda: single.sh.post(f"INSERT INTO {base} FORMAT Parquet", b))
                    r = {"rows_per_s": n / t_eng, "MB_per_s": mb_in / t_eng,
                         "single_rows_per_s": n / t_base, "ratio": t_base / t_eng}
                    # Each node shows the inserts it took; the others' may still be
                    # applying on a replica that was not in their majority.
                    deadline = time.time() + 10
                    while True:
                        counts = [int(nd.sh.post(f"SELECT count() FROM {t}")) for nd in where]
                        if all(c == n for c in counts) or time.time() > deadline:
                            break
                        time.sleep(0.05)
                    assert all(c == n for c in counts), f"replicas of {t} disagree 10 s after the load: {counts}"
                    r["merges_after_s"] = settle(nodes + [single])
                    runs[label].append(r)
                    # Dropped once measured: later phases (restart, catch-up, idle
                    # CPU) see as many tables as with one repetition.
                    drop(where, t)
                    drop([single], base)
            ins = {label: median_run(rs) for label, rs in runs.items()}
            report["inserts"] = ins
            # The same loads with 4 concurrent clients: throughput when the
            # machine, not one client's round trips, is the limit. Each load
            # alone, merges settled before and after it.
            cruns = {label: [] for label, *_ in phases[:2]}
            for rep in range(a.reps):
                for k, (label, where, ddl, tname) in enumerate(phases[:2]):
                    print(f"cluster: 100k-row inserts, 4 clients, {label}, repetition {rep + 1} ...", flush=True)
                    base = f"ins_cbase{k}_r{rep}"
                    single.sh.post(DDL.replace("TABLE hits", f"TABLE {base}"))
                    t_base = load_concurrent([single.http], base, blocks, 4)
                    base_after = settle(nodes + [single])
                    t = f"{tname}_c{rep}"
                    for nd in where:
                        nd.sh.post(ddl.replace(f"TABLE {tname}", f"TABLE {t}"))
                    t_eng = load_concurrent([nd.http for nd in where], t, blocks, 4)
                    cruns[label].append({"rows_per_s": n / t_eng, "MB_per_s": mb_in / t_eng,
                                         "single_rows_per_s": n / t_base, "ratio": t_base / t_eng,
                                         "merges_after_s": settle(nodes + [single]),
                                         "single_merges_after_s": base_after})
                    drop(where, t)
                    drop([single], base)
            conc = {label: median_run(rs) for label, rs in cruns.items()}
            report["inserts_4_clients"] = conc
            rss = report.setdefault("peak_rss_mb", {})
            rss["inserts (rf3 nodes)"] = [nd.peak_rss_mb() for nd in nodes]
            rss["inserts (single node)"] = [single.peak_rss_mb()]

        if not a.only_idle and not a.only_inserts:
            # 2. Small inserts: commit latency at 1, 16, 64 clients.
            print("cluster: small-insert latency ...", flush=True)
            small = {}
            for clients in (1, 16, 64):
                # Each level alone: the previous level's parts still merging
                # would take CPU from this one.
                settle(nodes)
                name = f"small{clients}"
                ddl = (f"CREATE TABLE {name} (k UInt64, v String) ENGINE = ReplicatedMergeTree ORDER BY k "
                       "SETTINGS parts_to_delay_insert = 100000, parts_to_throw_insert = 100000")
                for nd in nodes:
                    nd.sh.post(ddl)
                rng = random.Random(clients)
                queries = []
                for j in range(a.small):
                    r = rng.randint(1, 100)
                    rows = ", ".join(f"({j * 1000 + x}, 'v{x}')" for x in range(r))
                    queries.append(f"INSERT INTO {name} VALUES {rows}")
                nodes[0].sh.post(f"INSERT INTO {name} FORMAT TSV", b"0\twarm\n")  # creates the group
                # `shardhouse benchmark` (keep-alive connections, native threads):
                # a Python client's own overhead exceeds a small insert's latency.
                hosts = sum((["--host", f"127.0.0.1:{nd.http}"] for nd in nodes), [])
                out = subprocess.run([a.binary, "benchmark", "--concurrency", str(clients), "--json", *hosts],
                                     input="\n".join(queries).encode(), capture_output=True, check=False)
                r = json.loads(out.stdout)
                assert r["errors"] == 0, r
                small[clients] = {k: r[k] for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms")}
                small[clients]["inserts_per_s"] = r["qps"]
            report["small_inserts"] = small
            report.setdefault("peak_rss_mb", {})["small inserts (rf3 nodes)"] = [nd.peak_rss_mb() for nd in nodes]

        if not a.only_idle and not a.only_inserts and not a.only_small:
            # 4. Catch-up: node 3 down during a load, then time to apply it all.
            print("cluster: catch-up ...", flush=True)
            for nd in nodes:
                nd.sh.post(replicated(DDL, "catch"))
            nodes[0].sh.post("INSERT INTO catch FORMAT Parquet", blocks[0])
            nodes[2].kill()
            for b in blocks[1:11]:
                nodes[0].sh.post("INSERT INTO catch FORMAT Parquet", b)
            want = int(nodes[0].sh.post("SELECT count() FROM catch"))
            size = int(nodes[0].sh.post(
                "SELECT sum(bytes_on_disk) FROM system.parts WHERE table = 'catch' AND active = 1") or 0)
            t0 = time.perf_counter()
            nodes[2].start()
            while int(nodes[2].sh.post("SELECT count() FROM catch")) != want:
                time.sleep(0.05)
            secs = time.perf_counter() - t0
            report["catch_up"] = {"seconds": secs, "MB": size / 1e6, "MB_per_s": size / 1e6 / secs}
            report["peak_rss_mb"]["catch-up (node 3 restarted)"] = [nd.peak_rss_mb() for nd in nodes]

        if not a.only_inserts and not a.skip_idle and not a.only_small:
            # 3. Idle CPU with many groups: one partition per group.
            print(f"cluster: idle CPU with {a.groups} groups ...", flush=True)
            for nd in nodes:
                nd.sh.post("CREATE TABLE many (p UInt32, v UInt8) ENGINE = ReplicatedMergeTree PARTITION BY p ORDER BY v")
            body = "".join(f"{p}\t1\n" for p in range(a.groups)).encode()
            nodes[0].sh.post("INSERT INTO many FORMAT TSV", body)
            idle = {}
            for mode, quiesce_ms in (("quiesced", 2000), ("not_quiesced", 0)):
                if mode == "not_quiesced":
                    for nd in nodes:
                        nd.kill()
                        nd.config.write_text(nd.config.read_text().replace("quiesce_after_ms = 2000", "quiesce_after_ms = 0"))
                        nd.start()
                groups_here = int(nodes[0].sh.post("SELECT count() FROM system.raft_groups"))
                deadline = time.time() + 120
                while mode == "quiesced" and time.time() < deadline:
                    q = [int(nd.sh.post("SELECT countIf(quiesced) FROM system.raft_groups")) for nd in nodes]
                    if all(x >= groups_here for x in q):
                        break
                    time.sleep(1)
                time.sleep(3)
                c0 = [nd.cpu_seconds() for nd in nodes]
                t0 = time.perf_counter()
                time.sleep(20)
                dt = time.perf_counter() - t0
                c1 = [nd.cpu_seconds() for nd in nodes]
                report.setdefault("peak_rss_mb", {})[f"idle, {mode} ({a.groups} groups)"] = [
                    nd.peak_rss_mb() for nd in nodes]
                idle[mode] = {"groups_per_node": groups_here,
                              "cpu_pct_of_core": [round((b - a_) / dt * 100, 2) for a_, b in zip(c0, c1)]}
            report["idle"] = idle
    finally:
        for nd in nodes:
            nd.kill()
        single.kill()
    report["machine"]["load_after"] = os.getloadavg()[0]

    ins = report.get("inserts", {})
    L = [f"# shardhouse replication benchmark: 3 server processes on loopback, RF = 3", "",
         f"Machine: {report['machine']['cores']} cores, load {report['machine']['load_before']:.2f} before, "
         f"{report['machine']['load_after']:.2f} after.", "",
         ]
    if ins:
        L += [f"## Inserts of {a.blocks} Parquet blocks of 100k hits rows", "",
              "Each configuration in its own phase, interleaved per block with a fresh single-node "
              "MergeTree table on the single-node server; merges settle between phases.", "",
              f"Each load ran {a.reps} times, the configurations taking turns: the row is the run with "
              "the median ratio, and every run's ratio is listed. \"Merges after\" is how long merges "
              "still ran once the load was done (merge threads yield the CPU to inserts; the backlog "
              "they leave shows here).", "",
              "| configuration | rows/s | MB/s (Parquet in) | single-node MergeTree rows/s (same phase) | ratio "
              "| every run | merges after (s) |",
              "|---|---|---|---|---|---|---|"]
        for k, v in ins.items():
            L.append(f"| {k} | {v['rows_per_s']:,.0f} | {v['MB_per_s']:.1f} | {v['single_rows_per_s']:,.0f} "
                     f"| **{v['ratio']:.2f}x** | {', '.join(map(str, v.get('ratios', [])))} "
                     f"| {v.get('merges_after_s', 0):.1f} |")
        conc = report.get("inserts_4_clients", {})
        if conc:
            L += ["", "The same blocks from 4 concurrent clients (each load alone, merges settled around it):", "",
                  "| configuration | rows/s | MB/s (Parquet in) | single-node MergeTree rows/s (4 clients) | ratio "
                  "| every run | merges after (s), this / single |",
                  "|---|---|---|---|---|---|---|"]
            for k, v in conc.items():
                L.append(f"| {k} | {v['rows_per_s']:,.0f} | {v['MB_per_s']:.1f} | {v['single_rows_per_s']:,.0f} "
                         f"| **{v['ratio']:.2f}x** | {', '.join(map(str, v.get('ratios', [])))} "
                         f"| {v.get('merges_after_s', 0):.1f} / "
                         f"{v.get('single_merges_after_s', 0):.1f} |")
    if report.get("small_inserts"):
        L += ["", f"## Small inserts (1-100 rows, {a.small} per level, spread over the 3 nodes; client: `shardhouse benchmark`)", "",
              "| clients | p50 ms | p90 ms | p99 ms | p99.9 ms | inserts/s |", "|---|---|---|---|---|---|"]
        for c, v in report["small_inserts"].items():
            L.append(f"| {c} | {v['p50_ms']:.1f} | {v['p90_ms']:.1f} | {v['p99_ms']:.1f} | {v['p999_ms']:.1f} "
                     f"| {v['inserts_per_s']:.0f} |")
    if report.get("catch_up"):
        cu = report["catch_up"]
        L += ["", "## Catch-up of a replica down during 10 block inserts", "",
              f"{cu['MB']:.1f} MB of parts applied in {cu['seconds']:.2f} s: **{cu['MB_per_s']:.1f} MB/s**."]
    L += ["", "## Idle CPU (% of one core per node process, over 20 s)", "", "| mode | groups per node | nodes 1, 2, 3 |",
          "|---|---|---|"]
    for m, v in report.get("idle", {}).items():
        L.append(f"| {m} | {v['groups_per_node']} | {', '.join(str(x) for x in v['cpu_pct_of_core'])} |")
    L += ["", "## Peak RSS (MB, VmHWM of each process at the end of each phase; restarted nodes start over)", "",
          "| phase | per process |", "|---|---|"]
    for phase, v in report.get("peak_rss_mb", {}).items():
        L.append(f"| {phase} | {', '.join(str(x) for x in v)} |")
    Path(a.out + ".md").write_text("\n".join(L) + "\n")
    Path(a.out + ".json").write_text(json.dumps(report, indent=2))
    print("\n".join(L))


if __name__ == "__main__":
    main()
