"""Issue 17: a mutation must not stop inserts.

Three `shardhouse server` processes on loopback (RF = 3) with one
ReplicatedMergeTree table of ROWS rows in one partition. One client inserts
one-row blocks in a loop, round robin over the three nodes (a keep-alive
connection per node): its latency p50/p99 while the table is idle, then
while `ALTER TABLE m DELETE WHERE k % 7 = 0 SETTINGS mutations_sync = 2`
runs (the ALTER returns once every replica rewrote every part). Then the
mutation's own time next to chDB's on the same rows: the replicated table
(three replicas rewriting on the same cores), a single-node MergeTree table
on node 1, and chDB's MergeTree with `mutations_sync = 2`.

Usage: mutation.py BINARY WORKDIR OUT [--rows N] [--idle-seconds S]
Writes OUT.md and OUT.json. Ratios, not absolute times: the machine is noisy.
"""

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path

from cluster import cluster, settle
from run import Shardhouse, pct

COLUMNS = "(k UInt64, v UInt64, s String)"
SETTINGS = " SETTINGS parts_to_delay_insert = 100000, parts_to_throw_insert = 100000"
CHUNK = 1_000_000


def load(sh, table, rows):
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        sh.post(f"INSERT INTO {table} SELECT number, number * 3, toString(number) FROM numbers({start}, {n})")


class Inserter(threading.Thread):
    """One client inserting one-row blocks round robin over `ports` until stopped."""

    def __init__(self, ports, first_key):
        super().__init__(daemon=True)
        self.clients = [Shardhouse(f"http://127.0.0.1:{p}") for p in ports]
        self.key = first_key
        self.stop = threading.Event()
        self.lat = []  # (start time, seconds)

    def run(self):
        i = 0
        while not self.stop.is_set():
            c = self.clients[i % len(self.clients)]
            t = time.perf_counter()
            c.post(f"INSERT INTO m VALUES ({self.key}, 0, 'x')")
            self.lat.append((t, time.perf_counter() - t))
            self.key += 1
            i += 1


def summary(lat):
    ms = [x * 1000 for _, x in lat]
    return {"inserts": len(ms), "p50_ms": round(pct(ms, 50), 2), "p99_ms": round(pct(ms, 99), 2),
            "max_ms": round(max(ms), 1) if ms else 0.0}


def chdb_mutation(rows, workdir):
    from chdb import session

    path = Path(workdir) / "chdb"
    shutil.rmtree(path, ignore_errors=True)
    s = session.Session(str(path))
    s.query(f"CREATE TABLE m {COLUMNS} ENGINE = MergeTree ORDER BY k")
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        s.query(f"INSERT INTO m SELECT number, number * 3, toString(number) FROM numbers({start}, {n})")
    t = time.perf_counter()
    s.query("ALTER TABLE m DELETE WHERE k % 7 = 0 SETTINGS mutations_sync = 2")
    took = time.perf_counter() - t
    left = int(s.query("SELECT count() FROM m", "CSV").bytes().decode().strip())
    s.close()
    return took, left


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("workdir")
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--idle-seconds", type=float, default=10)
    a = ap.parse_args()
    root = Path(a.workdir) / "mutation"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    load_before = os.getloadavg()[0]
    nodes = cluster(a.binary, root, 3)
    report = {"rows": a.rows}
    try:
        for nd in nodes:
            nd.sh.post(f"CREATE TABLE m {COLUMNS} ENGINE = ReplicatedMergeTree ORDER BY k" + SETTINGS)
        print(f"mutation: loading {a.rows} rows ...", flush=True)
        load(nodes[0].sh, "m", a.rows)
        nodes[0].sh.post(f"CREATE TABLE m1 {COLUMNS} ENGINE = MergeTree ORDER BY k" + SETTINGS)
        load(nodes[0].sh, "m1", a.rows)
        settle(nodes)
        report["parts_before"] = int(nodes[0].sh.post("SELECT count() FROM system.parts WHERE table = 'm' AND active"))
        ports = [nd.http for nd in nodes]

        print("mutation: idle inserts ...", flush=True)
        idle = Inserter(ports, 10**12)
        idle.start()
        time.sleep(a.idle_seconds)
        idle.stop.set()
        idle.join()
        settle(nodes)

        print("mutation: inserts during the ALTER DELETE ...", flush=True)
        during = Inserter(ports, 2 * 10**12)
        during.start()
        time.sleep(1)
        t0 = time.perf_counter()
        nodes[0].sh.post("ALTER TABLE m DELETE WHERE k % 7 = 0 SETTINGS mutations_sync = 2")
        t1 = time.perf_counter()
        during.stop.set()
        during.join()
        in_alter = [x for x in during.lat if t0 <= x[0] < t1]
        report["alter_delete_rf3_s"] = round(t1 - t0, 2)
        report["idle"] = summary(idle.lat)
        report["during"] = summary(in_alter)
        left = [int(nd.sh.post(f"SELECT count() FROM m WHERE k < {a.rows}")) for nd in nodes]
        report["rows_left_rf3"] = left

        print("mutation: single-node ALTER DELETE ...", flush=True)
        t = time.perf_counter()
        nodes[0].sh.post("ALTER TABLE m1 DELETE WHERE k % 7 = 0 SETTINGS mutations_sync = 2")
        report["alter_delete_single_s"] = round(time.perf_counter() - t, 2)
        report["rows_left_single"] = int(nodes[0].sh.post("SELECT count() FROM m1"))
    finally:
        for nd in nodes:
            nd.kill()
    print("mutation: chDB ALTER DELETE ...", flush=True)
    took, left = chdb_mutation(a.rows, root)
    report["alter_delete_chdb_s"] = round(took, 2)
    report["rows_left_chdb"] = left
    report["load"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    write(report, a.out)


def write(r, out):
    Path(out + ".json").write_text(json.dumps(r, indent=1))
    idle, during = r["idle"], r["during"]
    ratio = lambda x, y: f"{x / y:.2f}x" if y else "n/a"
    md = [
        "## Inserts during a mutation (issue 17; `benches/mutation.py`)",
        "",
        f"3 server processes on loopback (RF = 3), one ReplicatedMergeTree table of {r['rows']:,} rows in one "
        f"partition ({r['parts_before']} active parts); one client inserting one-row blocks round robin over the "
        f"three nodes. `ALTER TABLE m DELETE WHERE k % 7 = 0 SETTINGS mutations_sync = 2`. "
        f"Machine load {r['load'][0]} before, {r['load'][1]} after.",
        "",
        "| phase | inserts | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        f"| idle | {idle['inserts']} | {idle['p50_ms']} | {idle['p99_ms']} | {idle['max_ms']} |",
        f"| during the ALTER DELETE ({r['alter_delete_rf3_s']} s) | {during['inserts']} | {during['p50_ms']} | "
        f"{during['p99_ms']} | {during['max_ms']} |",
        "",
        f"p99 during / idle: **{ratio(during['p99_ms'], idle['p99_ms'])}** (target: at most 3x); "
        f"p50: {ratio(during['p50_ms'], idle['p50_ms'])}.",
        "",
        "The mutation's own time (ALTER DELETE with mutations_sync = 2, same rows):",
        "",
        "| engine | seconds | rows left | vs chDB |",
        "|---|---|---|---|",
        f"| chDB MergeTree | {r['alter_delete_chdb_s']} | {r['rows_left_chdb']:,} | 1.00x |",
        f"| shardhouse MergeTree (one node) | {r['alter_delete_single_s']} | {r['rows_left_single']:,} | "
        f"**{ratio(r['alter_delete_single_s'], r['alter_delete_chdb_s'])}** |",
        f"| shardhouse ReplicatedMergeTree, RF = 3 (every replica rewrites, same 2 cores) | "
        f"{r['alter_delete_rf3_s']} | {', '.join(f'{x:,}' for x in r['rows_left_rf3'])} | "
        f"{ratio(r['alter_delete_rf3_s'], r['alter_delete_chdb_s'])} |",
        "",
    ]
    Path(out + ".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
