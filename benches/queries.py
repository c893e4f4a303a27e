#!/usr/bin/env python3
"""The 12-query set of ../shared/bench/README.md over HTTP against a running
shardhouse server, side by side with chDB (MergeTree) and DuckDB (native) on
the same rows, engines interleaved per repetition; every engine's answer is
checked against chDB's.

Usage: queries.py HITS.parquet SHARDHOUSE_URL WORKDIR OUT_PREFIX [--reps N]
Writes OUT_PREFIX.json and OUT_PREFIX.md.
"""
import argparse
import datetime as dt
import decimal
import json
import math
import os
import shutil
import statistics
import time
import urllib.request
from pathlib import Path

QUERIES = [
    ("q01", "SELECT count(*) FROM hits"),
    ("q02", "SELECT count(*) FROM hits WHERE is_mobile = 1"),
    ("q03", "SELECT sum(duration), avg(revenue), count(*) FROM hits"),
    ("q04", "SELECT count(DISTINCT user_id) FROM hits"),
    ("q05", "SELECT counter_id, count(*) AS c FROM hits GROUP BY counter_id ORDER BY c DESC, counter_id LIMIT 10"),
    ("q06", "SELECT url, count(*) AS c FROM hits GROUP BY url ORDER BY c DESC, url LIMIT 10"),
    ("q07", "SELECT region, is_mobile, count(*) AS c, sum(revenue) AS r FROM hits GROUP BY region, is_mobile "
            "ORDER BY c DESC, region, is_mobile LIMIT 10"),
    ("q08", "SELECT count(*), sum(revenue), count(DISTINCT user_id) FROM hits WHERE counter_id = 62"),
    ("q09", "SELECT count(*), avg(duration) FROM hits WHERE event_time >= '2013-07-15 00:00:00' "
            "AND event_time < '2013-07-16 00:00:00'"),
    ("q10", "SELECT count(*) FROM hits WHERE url LIKE '%google%'"),
    ("q11", "SELECT event_date, count(*) AS c FROM hits WHERE counter_id = 62 AND event_date >= '2013-07-01' "
            "AND event_date <= '2013-07-31' GROUP BY event_date ORDER BY event_date"),
    ("q12", "SELECT user_id, count(*) AS c FROM hits GROUP BY user_id ORDER BY c DESC, user_id LIMIT 10"),
]
DDL = """CREATE TABLE hits (event_date Date, event_time DateTime, user_id UInt64, counter_id UInt32,
 url String, region UInt16, duration UInt32, revenue Float64, is_mobile UInt8) ENGINE = MergeTree
 PARTITION BY toYYYYMM(event_date) ORDER BY (counter_id, event_date, user_id)"""


def norm(v):
    if isinstance(v, decimal.Decimal):
        v = float(v)
    if isinstance(v, str):
        try:
            v = float(v) if any(c in v for c in ".e") else int(v)
        except ValueError:
            return v[:10] if len(v) >= 10 and v[4] == "-" and v[7] == "-" else v
    if isinstance(v, float):
        return round(v, 2)
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()[:10]
    if hasattr(v, "item"):
        return norm(v.item())
    return v


def rows_norm(rows):
    return [tuple(norm(v) for v in r) for r in rows]


class Shardhouse:
    def __init__(self, url):
        self.url = url

    def post(self, sql, body=None):
        data = sql.encode() if body is None else body
        q = "" if body is None else "?query=" + urllib.parse.quote(sql)
        req = urllib.request.Request(self.url + "/" + q, data=data, method="POST")
        with urllib.request.urlopen(req, timeout=3600) as r:
            return r.read()

    def rows(self, sql):
        out = json.loads(self.post(sql + " FORMAT JSONCompact"))
        return out["data"]


def geomean(xs):
    xs = [x for x in xs if x and x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def rss_of(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main():
    import urllib.parse  # noqa: F401  (used by Shardhouse.post)
    ap = argparse.ArgumentParser()
    ap.add_argument("parquet")
    ap.add_argument("url")
    ap.add_argument("workdir")
    ap.add_argument("out")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--server-pid", type=int, default=0)
    a = ap.parse_args()
    work = Path(a.workdir)
    import chdb
    import duckdb
    from chdb import session
    import pyarrow.parquet as pq

    rows = pq.read_metadata(a.parquet).num_rows
    report = {"rows": rows, "reps": a.reps, "machine": {"cores": os.cpu_count(), "load": os.getloadavg()},
              "versions": {"chdb": chdb.__version__, "duckdb": duckdb.__version__}}
    sh = Shardhouse(a.url)
    print("loading shardhouse ...", flush=True)
    sh.post("DROP TABLE IF EXISTS hits")
    sh.post(DDL)
    t = time.perf_counter()
    sh.post("INSERT INTO hits FORMAT Parquet", Path(a.parquet).read_bytes())
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    sh.post("OPTIMIZE TABLE hits FINAL")
    report["shardhouse_load"] = {"insert_s": load_s, "optimize_s": time.perf_counter() - t}

    print("loading chDB ...", flush=True)
    ch_path = work / "queries_chdb"
    shutil.rmtree(ch_path, ignore_errors=True)
    ch = session.Session(str(ch_path))
    ch.query(DDL)
    ch.query(f"INSERT INTO hits SELECT * FROM file('{a.parquet}', Parquet)")
    ch.query("OPTIMIZE TABLE hits FINAL")

    print("loading DuckDB ...", flush=True)
    db_path = work / "queries.duckdb"
    if db_path.exists():
        db_path.unlink()
    duck = duckdb.connect(str(db_path))
    # Parquet has no second-unit timestamp: DuckDB sees event_time as epoch seconds.
    duck.execute(f"CREATE TABLE hits AS SELECT * REPLACE (make_timestamp(event_time::BIGINT * 1000000) AS event_time) "
                 f"FROM read_parquet('{a.parquet}')")

    def ch_rows(sql):
        t = ch.query(sql, "ArrowTable")
        cols = [c.to_pylist() for c in t.columns]
        return list(zip(*cols)) if cols else []

    engines = {
        "shardhouse": sh.rows,
        "chdb_mt": ch_rows,
        "duckdb": lambda sql: duck.execute(sql).fetchall(),
    }
    res = {}
    for qname, sql in QUERIES:
        res[qname] = {e: {"runs_ms": []} for e in engines}
        answers = {}
        for e, fn in engines.items():  # warm-up, and the answer
            answers[e] = rows_norm(fn(sql))
        for _ in range(a.reps):
            for e, fn in engines.items():
                t = time.perf_counter()
                fn(sql)
                res[qname][e]["runs_ms"].append((time.perf_counter() - t) * 1e3)
        for e in engines:
            r = res[qname][e]
            r["median_ms"] = statistics.median(r["runs_ms"])
            r["min_ms"] = min(r["runs_ms"])
            r["max_ms"] = max(r["runs_ms"])
            r["matches_chdb"] = answers[e] == answers["chdb_mt"]
            if not r["matches_chdb"]:
                r["answer_head"] = str(answers[e][:3])[:300]
        res[qname]["_answer"] = str(answers["chdb_mt"][:3])[:200]
        print(f"  {qname} " + "  ".join(f"{e}={res[qname][e]['median_ms']:8.1f}ms" for e in engines)
              + ("" if all(res[qname][e]["matches_chdb"] for e in engines) else "  ANSWER DIFFERS"), flush=True)
    report["queries"] = res
    for e in engines:
        report.setdefault("geomean_vs_chdb", {})[e] = geomean(
            [res[q][e]["median_ms"] / res[q]["chdb_mt"]["median_ms"] for q, _ in QUERIES])
    if a.server_pid:
        report["shardhouse_peak_rss"] = rss_of(a.server_pid)
    report["machine"]["load_after"] = os.getloadavg()
    Path(a.out + ".json").write_text(json.dumps(report, indent=1, default=str))

    lines = [f"# 12 queries, {rows:,} hits rows: median of {a.reps} hot runs (ms), engines interleaved",
             "",
             f"Machine: {os.cpu_count()} cores, load {report['machine']['load'][0]:.2f} before, "
             f"{report['machine']['load_after'][0]:.2f} after. chDB {chdb.__version__}, DuckDB {duckdb.__version__}.",
             "",
             "| query | shardhouse | chDB MergeTree | DuckDB | shardhouse / chDB | answers match |",
             "|---|---|---|---|---|---|"]
    for q, _ in QUERIES:
        r = res[q]
        ok = all(r[e]["matches_chdb"] for e in engines)
        lines.append(f"| {q} | {r['shardhouse']['median_ms']:.1f} ({r['shardhouse']['min_ms']:.1f}–{r['shardhouse']['max_ms']:.1f})"
                     f" | {r['chdb_mt']['median_ms']:.1f} | {r['duckdb']['median_ms']:.1f}"
                     f" | {r['shardhouse']['median_ms'] / r['chdb_mt']['median_ms']:.2f}x | {'yes' if ok else 'NO'} |")
    g = report["geomean_vs_chdb"]
    lines += ["", f"**Geomean vs chDB: shardhouse {g['shardhouse']:.2f}x, DuckDB {g['duckdb']:.2f}x** "
              "(below 1 is faster than chDB).",
              f"shardhouse load: INSERT … FORMAT Parquet {report['shardhouse_load']['insert_s']:.1f} s, "
              f"OPTIMIZE FINAL {report['shardhouse_load']['optimize_s']:.1f} s."]
    if a.server_pid:
        lines.append(f"shardhouse server peak RSS: {report['shardhouse_peak_rss'] / 2**20:.0f} MB.")
    Path(a.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
