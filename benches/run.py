#!/usr/bin/env python3
"""The benchmark suite (issue 3): shardhouse (a release server, over HTTP)
side by side with chDB (ClickHouse MergeTree, in process) and DuckDB (native
tables) on the same generated hits rows, engines interleaved per repetition:

  load      bulk load of every row (rows/s, MB/s, on-disk size after OPTIMIZE FINAL)
  inserts   100k-row inserts with merges stopped (rows/s, per-insert p50/p99,
            parts), then OPTIMIZE FINAL (rows/s, MB/s)
  mutations ALTER UPDATE, ALTER DELETE, lightweight DELETE on the inserted table
  queries   the 12 queries of ../shared/bench/README.md, answers checked against chDB
  and the shardhouse server's peak RSS during each.

Usage: run.py HITS.parquet SHARDHOUSE_URL WORKDIR OUT_PREFIX [--reps N]
         [--workloads load,inserts,mutations,queries] [--server-pid PID]
Writes OUT_PREFIX.json, OUT_PREFIX.md and OUT_PREFIX.svg (ratios to chDB).
"""
import argparse
import datetime as dt
import decimal
import json
import re
import math
import os
import shutil
import statistics
import time
import http.client
import urllib.error
import urllib.parse
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
# The TPC-H subset of ../shared/bench/README.md (peers.py), dates as literals.
TPCH_QUERIES = [
    ("tpch_q1", """SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, sum(l_extendedprice) AS sum_base_price,
 sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price, sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
 avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price, avg(l_discount) AS avg_disc, count(*) AS count_order
FROM lineitem WHERE l_shipdate <= DATE '1998-09-02' GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus"""),
    ("tpch_q3", """SELECT l_orderkey, sum(l_extendedprice * (1 - l_discount)) AS revenue, o_orderdate, o_shippriority
FROM customer, orders, lineitem
WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey AND l_orderkey = o_orderkey
  AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15'
GROUP BY l_orderkey, o_orderdate, o_shippriority ORDER BY revenue DESC, o_orderdate, l_orderkey LIMIT 10"""),
    ("tpch_q5", """SELECT n_name, sum(l_extendedprice * (1 - l_discount)) AS revenue
FROM customer, orders, lineitem, supplier, nation, region
WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey AND l_suppkey = s_suppkey AND c_nationkey = s_nationkey
  AND s_nationkey = n_nationkey AND n_regionkey = r_regionkey AND r_name = 'ASIA'
  AND o_orderdate >= DATE '1994-01-01' AND o_orderdate < DATE '1995-01-01'
GROUP BY n_name ORDER BY revenue DESC"""),
    ("tpch_q6", """SELECT sum(l_extendedprice * l_discount) AS revenue FROM lineitem
WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01' AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24"""),
    ("tpch_q10", """SELECT c_custkey, c_name, sum(l_extendedprice * (1 - l_discount)) AS revenue, c_acctbal, n_name
FROM customer, orders, lineitem, nation
WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey AND o_orderdate >= DATE '1993-10-01' AND o_orderdate < DATE '1994-01-01'
  AND l_returnflag = 'R' AND c_nationkey = n_nationkey
GROUP BY c_custkey, c_name, c_acctbal, n_name ORDER BY revenue DESC, c_custkey LIMIT 20"""),
]
TPCH_TABLES = ["lineitem", "orders", "customer", "supplier", "nation", "region", "part", "partsupp"]


def ch_type(t):
    """The ClickHouse type of a Parquet/Arrow column of TPC-H."""
    import pyarrow as pa
    if pa.types.is_int32(t):
        return "Int32"
    if pa.types.is_int64(t):
        return "Int64"
    if pa.types.is_decimal(t):
        return f"Decimal({t.precision}, {t.scale})"
    if pa.types.is_date32(t):
        return "Date"
    if pa.types.is_floating(t):
        return "Float64"
    return "String"


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
    """A keep-alive HTTP client, as clickhouse-connect and the clickhouse crate
    keep theirs: a new TCP connection per query would time the connect too."""

    def __init__(self, url, database=None):
        self.url = url
        self.database = database
        self.conn = None

    def post(self, sql, body=None):
        data = sql.encode() if body is None else body
        params = {} if body is None else {"query": sql}
        if self.database:
            params["database"] = self.database
        path = "/?" + urllib.parse.urlencode(params)
        for attempt in (0, 1):
            if self.conn is None:
                u = urllib.parse.urlsplit(self.url)
                self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=3600)
            try:
                self.conn.request("POST", path, body=data)
                r = self.conn.getresponse()
                out = r.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # The server closed an idle keep-alive connection: reconnect once.
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        if r.status != 200:
            raise RuntimeError(out.decode(errors="replace").strip())
        return out

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


def reset_peak(pid):
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def row3(label, per_engine, cell):
    """A Markdown row with one cell per engine (shardhouse, chDB, DuckDB)."""
    return f"| {label} | " + " | ".join(cell(per_engine[e]) for e in ("shardhouse", "chdb_mt", "duckdb")) + " |"


def svg_chart(bars, path, title):
    """A horizontal bar chart of ratios (1.0 = chDB); bars: [(label, ratio)]."""
    w, row, left = 720, 22, 260
    h = 40 + row * len(bars) + 20
    finite = [r for _, r in bars if r == r and r not in (float("inf"),)]
    top = max([2.0] + finite)
    scale = (w - left - 60) / top
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="14">{title}</text>']
    x1 = left + scale
    out.append(f'<line x1="{x1:.1f}" y1="30" x2="{x1:.1f}" y2="{h - 15}" stroke="#888" stroke-dasharray="4"/>')
    out.append(f'<text x="{x1 + 3:.1f}" y="{h - 5}" fill="#555">1.0 = chDB</text>')
    for i, (label, r) in enumerate(bars):
        y = 35 + i * row
        bw = (r if r == r else 0) * scale
        color = "#2a7" if r <= 1.0 else "#d63"
        out.append(f'<text x="10" y="{y + 14}">{label}</text>')
        out.append(f'<rect x="{left}" y="{y + 3}" width="{bw:.1f}" height="{row - 6}" fill="{color}"/>')
        out.append(f'<text x="{left + bw + 4:.1f}" y="{y + 14}">{r:.2f}x</text>')
    out.append("</svg>")
    Path(path).write_text("\n".join(out) + "\n")


def gen_smoke(path, rows):
    """Small hits-shaped rows for the smoke run (not the benchmark's distribution)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(20240601)
    day = rng.integers(0, 122, rows)
    start = np.datetime64("2013-06-01")
    t = pa.table({
        "event_date": pa.array((start + day.astype("timedelta64[D]")).astype("datetime64[D]"), pa.date32()),
        "event_time": pa.array(np.sort(day * 86400 + rng.integers(0, 86400, rows) + 1370044800), pa.int64()),
        "user_id": pa.array(rng.integers(0, 10_000, rows).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15 % 2**63)),
        "counter_id": pa.array(rng.zipf(1.5, rows).clip(1, 1000).astype(np.uint32)),
        "url": pa.array([f"http://example.com/{'google/' if i % 100 == 0 else ''}{i % 1000}" for i in range(rows)]),
        "region": pa.array(rng.integers(0, 300, rows).astype(np.uint16)),
        "duration": pa.array(rng.exponential(60, rows).astype(np.uint32)),
        "revenue": pa.array(np.where(rng.random(rows) < 0.9, 0.0, np.round(rng.lognormal(2, 1, rows), 2))),
        "is_mobile": pa.array((rng.random(rows) < 0.3).astype(np.uint8)),
    })
    pq.write_table(t, path)


def main():
    import sys
    if len(sys.argv) == 4 and sys.argv[1] == "--gen-smoke":
        gen_smoke(sys.argv[2], int(sys.argv[3]))
        return
    import urllib.parse  # noqa: F401  (used by Shardhouse.post)
    ap = argparse.ArgumentParser()
    ap.add_argument("parquet")
    ap.add_argument("url")
    ap.add_argument("workdir")
    ap.add_argument("out")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--server-pid", type=int, default=0)
    ap.add_argument("--workloads", default="load,inserts,mutations,queries")
    ap.add_argument("--tpch", default=None, help="directory of TPC-H Parquet files (tpchgen-cli)")
    a = ap.parse_args()
    wl = set(a.workloads.split(","))
    work = Path(a.workdir)
    import chdb
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq
    from chdb import session

    tbl = pq.read_table(a.parquet)
    rows = tbl.num_rows
    parquet_bytes = Path(a.parquet).read_bytes()
    report = {"rows": rows, "reps": a.reps, "machine": {"cores": os.cpu_count(), "load": os.getloadavg()},
              "versions": {"chdb": chdb.__version__, "duckdb": duckdb.__version__}}
    sh = Shardhouse(a.url)
    ch_path = work / "bench_chdb"
    shutil.rmtree(ch_path, ignore_errors=True)
    ch = session.Session(str(ch_path))
    db_path = work / "bench.duckdb"
    if db_path.exists():
        db_path.unlink()
    duck = duckdb.connect(str(db_path))
    duck_select = ("SELECT * REPLACE (make_timestamp(event_time::BIGINT * 1000000) AS event_time) "
                   f"FROM read_parquet('{a.parquet}')")  # Parquet has no second-unit timestamp
    rss = {}

    def peak(name):
        if a.server_pid:
            rss[name] = rss_of(a.server_pid)
            reset_peak(a.server_pid)

    def sh_parts(table):
        r = sh.rows(f"SELECT count(), sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts "
                    f"WHERE table = '{table}' AND active = 1")[0]
        return {"parts": int(r[0]), "rows": int(r[1] or 0), "bytes": int(r[2] or 0), "uncompressed": int(r[3] or 0)}

    def ch_parts(table):
        r = ch.query(f"SELECT count(), sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts "
                     f"WHERE table = '{table}' AND active", "JSONCompact")
        r = json.loads(str(r))["data"][0]
        return {"parts": int(r[0]), "rows": int(r[1] or 0), "bytes": int(r[2] or 0), "uncompressed": int(r[3] or 0)}

    # 1. bulk load (also the table the queries read).
    print("load ...", flush=True)
    sh.post("DROP TABLE IF EXISTS hits")
    sh.post(DDL)
    ch.query(DDL)
    peak("before")
    load = {"shardhouse": {"seconds": timed(lambda: sh.post("INSERT INTO hits FORMAT Parquet", parquet_bytes))},
            "chdb_mt": {"seconds": timed(lambda: ch.query(f"INSERT INTO hits SELECT * FROM file('{a.parquet}', Parquet)"))},
            "duckdb": {"seconds": timed(lambda: duck.execute(f"CREATE TABLE hits AS {duck_select}"))}}
    sh.post("OPTIMIZE TABLE hits FINAL")
    ch.query("OPTIMIZE TABLE hits FINAL")
    duck.execute("CHECKPOINT")
    load["shardhouse"]["bytes_on_disk"] = sh_parts("hits")["bytes"]
    load["chdb_mt"]["bytes_on_disk"] = ch_parts("hits")["bytes"]
    load["duckdb"]["bytes_on_disk"] = db_path.stat().st_size
    for v in load.values():
        v["rows_per_s"] = rows / v["seconds"]
        v["MB_per_s"] = len(parquet_bytes) / v["seconds"] / 1e6
    report["load"] = load
    peak("load")

    # 2. 100k-row inserts, merges stopped, then OPTIMIZE FINAL.
    if "inserts" in wl or "mutations" in wl:
        print("inserts ...", flush=True)
        batch = 100_000
        chunks = []
        for off in range(0, rows, batch):
            buf = pa.BufferOutputStream()
            pq.write_table(tbl.slice(off, batch), buf, compression="none")
            chunks.append(buf.getvalue().to_pybytes())
        ddl_ins = DDL.replace("TABLE hits", "TABLE ins")
        sh.post("DROP TABLE IF EXISTS ins")
        sh.post(ddl_ins)
        sh.post("SYSTEM STOP MERGES ins")
        ch.query(ddl_ins)
        ch.query("SYSTEM STOP MERGES ins")
        duck.execute(f"CREATE TABLE ins AS {duck_select} LIMIT 0")
        lat = {"shardhouse": [], "chdb_mt": [], "duckdb": []}
        for i, chunk in enumerate(chunks):  # engines interleaved per insert
            lat["shardhouse"].append(timed(lambda: sh.post("INSERT INTO ins FORMAT Parquet", chunk)))
            part = tbl.slice(i * batch, batch)  # noqa: F841 (chDB's Python() and DuckDB read it from this frame)
            lat["chdb_mt"].append(timed(lambda: ch.query("INSERT INTO ins SELECT * FROM Python(part)")))
            duck.register("part_view", part)
            lat["duckdb"].append(timed(lambda: duck.execute(
                "INSERT INTO ins SELECT * REPLACE (make_timestamp(event_time::BIGINT * 1000000) AS event_time) "
                "FROM part_view")))
            duck.unregister("part_view")
        ins = {}
        for e, xs in lat.items():
            ins[e] = {"rows_per_s": rows / sum(xs), "p50_ms": pct(xs, 50) * 1e3, "p99_ms": pct(xs, 99) * 1e3}
        ins["shardhouse"]["parts"] = sh_parts("ins")["parts"]
        ins["chdb_mt"]["parts"] = ch_parts("ins")["parts"]
        peak("inserts")
        before_sh, before_ch = sh_parts("ins"), ch_parts("ins")
        sh.post("SYSTEM START MERGES ins")
        ch.query("SYSTEM START MERGES ins")
        for e, fn, before in [("shardhouse", lambda: sh.post("OPTIMIZE TABLE ins FINAL"), before_sh),
                              ("chdb_mt", lambda: ch.query("OPTIMIZE TABLE ins FINAL"), before_ch)]:
            secs = timed(fn)
            ins[e]["optimize_s"] = secs
            ins[e]["optimize_rows_per_s"] = rows / secs
            ins[e]["optimize_MB_per_s"] = before["uncompressed"] / secs / 1e6
        report["inserts"] = ins
        peak("optimize")

    # 3. Mutations on the inserted table.
    if "mutations" in wl:
        print("mutations ...", flush=True)
        muts = [("alter_update", "ALTER TABLE ins UPDATE revenue = revenue * 2 WHERE region = 7"),
                ("alter_delete", "ALTER TABLE ins DELETE WHERE is_mobile = 1 AND duration < 5"),
                ("lightweight_delete", "DELETE FROM ins WHERE region = 11")]
        m = {}
        for name, sql in muts:
            m[name] = {"shardhouse": timed(lambda: sh.post(sql + " SETTINGS mutations_sync = 2")),
                       "chdb_mt": timed(lambda: ch.query(sql + " SETTINGS mutations_sync = 2"))}
        left = (sh.rows("SELECT count() FROM ins")[0][0], json.loads(str(ch.query("SELECT count() FROM ins", "JSONCompact")))["data"][0][0])
        m["rows_left_match"] = int(left[0]) == int(left[1])
        report["mutations"] = m
        peak("mutations")

    # 4. The 12 queries.
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
    if "queries" in wl:
        print("queries ...", flush=True)
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
        peak("queries")
    tpch = {}
    if a.tpch:
        print("TPC-H ...", flush=True)
        tdir = Path(a.tpch)
        sh_t = Shardhouse(a.url, database="tpch")
        sh.post("CREATE DATABASE IF NOT EXISTS tpch")
        ch.query("CREATE DATABASE IF NOT EXISTS tpch")
        tduck = duckdb.connect(str(work / "bench_tpch.duckdb"))
        for t in TPCH_TABLES:
            f = tdir / f"{t}.parquet"
            schema = pq.read_schema(f)
            cols = ", ".join(f"{n} {ch_type(schema.field(n).type)}" for n in schema.names)
            sh.post(f"DROP TABLE IF EXISTS tpch.{t}")
            sh.post(f"CREATE TABLE tpch.{t} ({cols}) ENGINE = MergeTree ORDER BY tuple()")
            sh.post(f"INSERT INTO tpch.{t} FORMAT Parquet", f.read_bytes())
            sh.post(f"OPTIMIZE TABLE tpch.{t} FINAL")
            ch.query(f"DROP TABLE IF EXISTS tpch.{t}")
            ch.query(f"CREATE TABLE tpch.{t} ({cols}) ENGINE = MergeTree ORDER BY tuple()")
            ch.query(f"INSERT INTO tpch.{t} SELECT * FROM file('{f}', Parquet)")
            ch.query(f"OPTIMIZE TABLE tpch.{t} FINAL")
            tduck.execute(f"CREATE OR REPLACE TABLE {t} AS SELECT * FROM read_parquet('{f}')")
        names = re.compile(r"\b(" + "|".join(TPCH_TABLES) + r")\b")

        def tch_rows(sql):
            t = ch.query(names.sub(r"tpch.\1", sql), "ArrowTable")
            cols = [c.to_pylist() for c in t.columns]
            return list(zip(*cols)) if cols else []

        tengines = {"shardhouse": sh_t.rows, "chdb_mt": tch_rows, "duckdb": lambda q: tduck.execute(q).fetchall()}
        for qname, sql in TPCH_QUERIES:
            tpch[qname] = {e: {"runs_ms": []} for e in tengines}
            answers = {}
            for e, fn in tengines.items():
                try:
                    answers[e] = rows_norm(fn(sql))
                except Exception as ex:  # a query shardhouse cannot run yet is reported, not fatal
                    tpch[qname][e]["error"] = str(ex).splitlines()[0][:300]
            for _ in range(a.reps):
                for e, fn in tengines.items():
                    if "error" not in tpch[qname][e]:
                        tpch[qname][e]["runs_ms"].append(timed(lambda: fn(sql)) * 1e3)
            for e in tengines:
                r = tpch[qname][e]
                if r["runs_ms"]:
                    r["median_ms"] = statistics.median(r["runs_ms"])
                    r["matches_duckdb"] = answers.get(e) == answers.get("duckdb")
            print(f"  {qname} " + "  ".join(f"{e}={tpch[qname][e].get('median_ms', float('nan')):8.1f}ms" for e in tengines), flush=True)
        report["tpch"] = tpch
        peak("tpch")
    report["shardhouse_peak_rss"] = rss
    report["machine"]["load_after"] = os.getloadavg()
    Path(a.out + ".json").write_text(json.dumps(report, indent=1, default=str))

    # The report: Markdown and an SVG of shardhouse / chDB ratios.
    L = [f"# shardhouse benchmark: {rows:,} hits rows, {a.reps} hot runs per query (engines interleaved)", "",
         f"Machine: {os.cpu_count()} cores, load {report['machine']['load'][0]:.2f} before, "
         f"{report['machine']['load_after'][0]:.2f} after. chDB {chdb.__version__} (in process), "
         f"DuckDB {duckdb.__version__} (in process); shardhouse is a release server over HTTP on loopback.",
         "Ratios are shardhouse / chDB for times (below 1 is faster) and chDB / shardhouse for throughputs "
         "(below 1 is faster too), so every ratio reads the same way.", ""]
    bars = []
    ld = report["load"]
    L += ["## Bulk load (one INSERT of the whole Parquet file, then OPTIMIZE FINAL)", "",
          "| | shardhouse | chDB | DuckDB |", "|---|---|---|---|",
          row3("rows/s", ld, lambda v: f"{v['rows_per_s']:,.0f}"),
          row3("MB/s (Parquet in)", ld, lambda v: f"{v['MB_per_s']:.0f}"),
          row3("on disk (MB)", ld, lambda v: f"{v['bytes_on_disk'] / 1e6:.0f}"), ""]
    bars.append(("bulk load", ld["chdb_mt"]["rows_per_s"] / ld["shardhouse"]["rows_per_s"]))
    bars.append(("size on disk", ld["shardhouse"]["bytes_on_disk"] / ld["chdb_mt"]["bytes_on_disk"]))
    if "inserts" in report:
        i = report["inserts"]
        L += ["## 100k-row inserts, merges stopped (shardhouse: Parquet over HTTP; chDB and DuckDB: Arrow in process)", "",
              "| | shardhouse | chDB | DuckDB |", "|---|---|---|---|",
              row3("rows/s", i, lambda v: f"{v['rows_per_s']:,.0f}"),
              row3("p50 / p99 ms", i, lambda v: f"{v['p50_ms']:.1f} / {v['p99_ms']:.1f}"),
              f"| parts | {i['shardhouse']['parts']} | {i['chdb_mt']['parts']} | — |",
              f"| OPTIMIZE FINAL rows/s | {i['shardhouse']['optimize_rows_per_s']:,.0f} | {i['chdb_mt']['optimize_rows_per_s']:,.0f} | — |",
              f"| OPTIMIZE FINAL MB/s (uncompressed) | {i['shardhouse']['optimize_MB_per_s']:.0f} | {i['chdb_mt']['optimize_MB_per_s']:.0f} | — |", ""]
        bars.append(("100k-row inserts", i["chdb_mt"]["rows_per_s"] / i["shardhouse"]["rows_per_s"]))
        bars.append(("OPTIMIZE FINAL", i["chdb_mt"]["optimize_rows_per_s"] / i["shardhouse"]["optimize_rows_per_s"]))
    if "mutations" in report:
        m = report["mutations"]
        L += ["## Mutations (seconds)", "", "| | shardhouse | chDB | ratio |", "|---|---|---|---|"]
        for k in ("alter_update", "alter_delete", "lightweight_delete"):
            L.append(f"| {k} | {m[k]['shardhouse']:.2f} | {m[k]['chdb_mt']:.2f} | {m[k]['shardhouse'] / m[k]['chdb_mt']:.2f}x |")
            bars.append((k.replace("_", " "), m[k]["shardhouse"] / m[k]["chdb_mt"]))
        L += ["", f"Rows left match chDB: {'yes' if m['rows_left_match'] else 'NO'}.", ""]
    if res:
        L += ["## The 12 queries: median ms (min–max)", "",
              "| query | shardhouse | chDB MergeTree | DuckDB | shardhouse / chDB | answers match |",
              "|---|---|---|---|---|---|"]
        for q, _ in QUERIES:
            r = res[q]
            ok = all(r[e]["matches_chdb"] for e in engines)
            mm = {e: f"{r[e]['median_ms']:.1f} ({r[e]['min_ms']:.1f}–{r[e]['max_ms']:.1f})" for e in engines}
            L.append(f"| {q} | {mm['shardhouse']} | {mm['chdb_mt']} | {mm['duckdb']}"
                     f" | {r['shardhouse']['median_ms'] / r['chdb_mt']['median_ms']:.2f}x | {'yes' if ok else 'NO'} |")
            bars.append((q, r["shardhouse"]["median_ms"] / r["chdb_mt"]["median_ms"]))
        g = report["geomean_vs_chdb"]
        L += ["", f"**Query geomean vs chDB: shardhouse {g['shardhouse']:.2f}x, DuckDB {g['duckdb']:.2f}x.**", ""]
        bars.append(("query geomean", g["shardhouse"]))
    if tpch:
        L += ["## TPC-H SF1 subset: median ms; ratios to DuckDB native (the reference for TPC-H) and chDB", "",
              "| query | shardhouse | chDB MergeTree | DuckDB | shardhouse / DuckDB | shardhouse / chDB | answer matches DuckDB |",
              "|---|---|---|---|---|---|---|"]
        tr = []
        for q, _ in TPCH_QUERIES:
            r = tpch[q]
            ms = {e: r[e].get("median_ms") for e in r}
            if ms["shardhouse"] is None:
                L.append(f"| {q} | error: {r['shardhouse'].get('error', '?')[:120]} | {ms['chdb_mt'] or 0:.1f} | {ms['duckdb'] or 0:.1f} | — | — | — |")
                continue
            tr.append(ms["shardhouse"] / ms["duckdb"])
            L.append(f"| {q} | {ms['shardhouse']:.1f} | {ms['chdb_mt'] or float('nan'):.1f} | {ms['duckdb']:.1f} | "
                     f"{ms['shardhouse'] / ms['duckdb']:.2f}x | {ms['shardhouse'] / (ms['chdb_mt'] or float('nan')):.2f}x | "
                     f"{'yes' if r['shardhouse'].get('matches_duckdb') else 'NO'} |")
        report["tpch_geomean_vs_duckdb"] = geomean(tr)
        L += ["", f"**TPC-H geomean vs DuckDB: shardhouse {geomean(tr):.2f}x** over {len(tr)} queries.", ""]
    if rss:
        L += ["## shardhouse server peak RSS (MB) per workload", "",
              " · ".join(f"{k} {v / 2**20:.0f}" for k, v in rss.items() if k != "before"), ""]
    L.append(f"![ratios](./{Path(a.out).name}.svg)")
    Path(a.out + ".md").write_text("\n".join(L) + "\n")
    svg_chart(bars, a.out + ".svg", f"shardhouse / chDB, {rows:,} rows (below 1.0 = faster than chDB)")
    print("\n".join(L))


if __name__ == "__main__":
    main()
