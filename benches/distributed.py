"""Workload 7 (issue 19): the hits rows through a Distributed table over 3
shards (3 `shardhouse server` processes on this one machine, one replica
each) next to a single-node server in the same run.

Reports the insert rows/s ratio (Distributed / single node), each of the 12
queries' median time ratio and their geomean (the fan-out's overhead: one
machine cannot show scale-out), the primary-key query (q08), whether every
answer equals the single node's, and the rows each shard holds.

Usage: distributed.py BINARY HITS_PARQUET WORKDIR OUT [--reps N]
Writes OUT.md and OUT.json.
"""

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from cluster import Node, free_port, timed
from run import DDL, QUERIES, geomean, rows_norm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("parquet")
    ap.add_argument("workdir")
    ap.add_argument("out")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--key", default="intHash64(user_id)", help="the Distributed table's sharding key")
    a = ap.parse_args()
    root = Path(a.workdir) / "distributed"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    data = Path(a.parquet).read_bytes()

    ports = [(free_port(), free_port()) for _ in range(3)]
    toml = "".join(
        f'[[cluster.nodes]]\nid = {i + 1}\nraft = "127.0.0.1:{r}"\nhttp = "127.0.0.1:{h}"\n'
        for i, (r, h) in enumerate(ports)
    )
    toml += "[remote_servers.c]\nshards = [{ replicas = [1] }, { replicas = [2] }, { replicas = [3] }]\n"
    # The [remote_servers] section must follow [cluster]'s keys: Node puts
    # its text at the end of the file.
    nodes = [Node(a.binary, root, i + 1, toml, h, 2000) for i, (_, h) in enumerate(ports)]
    single = Node(a.binary, root, 9, "", free_port(), 2000)
    for nd in nodes + [single]:
        nd.start()
    try:
        single.sh.post(DDL)
        local = DDL.replace("CREATE TABLE hits", "CREATE TABLE hits_local ON CLUSTER c")
        nodes[0].sh.post(local)
        nodes[0].sh.post(f"CREATE TABLE hits ON CLUSTER c AS hits_local ENGINE = Distributed(c, default, hits_local, {a.key})")
        print("workload 7: loading ...", flush=True)
        t_single = timed(lambda: single.sh.post("INSERT INTO hits FORMAT Parquet", data))
        t_dist = timed(lambda: nodes[0].sh.post("INSERT INTO hits FORMAT Parquet", data))
        single.sh.post("OPTIMIZE TABLE hits FINAL")
        nodes[0].sh.post("OPTIMIZE TABLE hits_local ON CLUSTER c FINAL")
        rows = int(single.sh.post("SELECT count() FROM hits"))
        per_shard = [int(nd.sh.post("SELECT count() FROM hits_local")) for nd in nodes]
        report = {
            "rows": rows,
            "sharding_key": a.key,
            "insert": {
                "single_rows_per_s": rows / t_single,
                "distributed_rows_per_s": rows / t_dist,
                "ratio": (rows / t_dist) / (rows / t_single),
            },
            "rows_per_shard": per_shard,
            "queries": {},
        }
        for name, sql in QUERIES:
            print(f"workload 7: {name} ...", flush=True)
            want = rows_norm(single.sh.rows(sql))
            got = rows_norm(nodes[0].sh.rows(sql))
            ts, td = [], []
            for _ in range(a.reps):
                ts.append(timed(lambda: single.sh.post(sql)))
                td.append(timed(lambda: nodes[0].sh.post(sql)))
            s, d = statistics.median(ts), statistics.median(td)
            report["queries"][name] = {"single_s": s, "distributed_s": d, "ratio": d / s, "same_answer": want == got}
        report["geomean_ratio"] = geomean([q["ratio"] for q in report["queries"].values()])
        report["all_answers_equal"] = all(q["same_answer"] for q in report["queries"].values())
    finally:
        for nd in nodes + [single]:
            nd.kill()

    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    ins = report["insert"]
    lines = [
        "## Workload 7: a Distributed table over 3 shards (3 processes, 1 replica each) vs one node",
        "",
        f"{rows} rows, sharding key `{a.key}`, rows per shard {per_shard}; medians of {a.reps} runs; "
        "ratio = Distributed / single node (insert: rows/s, higher is better; queries: time, lower is better).",
        "",
        f"**Insert: {ins['ratio']:.2f}x the single node's rows/s "
        f"({ins['distributed_rows_per_s']:,.0f} vs {ins['single_rows_per_s']:,.0f}). "
        f"Queries: geomean {report['geomean_ratio']:.2f}x; every answer equal to the single node's: "
        f"{report['all_answers_equal']}.**",
        "",
        "| query | single s | distributed s | ratio | same answer |",
        "|---|---|---|---|---|",
    ]
    for name, q in report["queries"].items():
        pk = " (PK)" if name == "q08" else ""
        lines.append(f"| {name}{pk} | {q['single_s']:.3f} | {q['distributed_s']:.3f} | {q['ratio']:.2f} | {q['same_answer']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
