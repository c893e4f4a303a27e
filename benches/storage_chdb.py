#!/usr/bin/env python3
"""chDB (ClickHouse MergeTree) side of the storage benchmark, on the exact rows
shardhouse's storage-bench generated (read from its Parquet file), then the
side-by-side table of ratios.

Usage: storage_chdb.py HITS.parquet SHARDHOUSE.json OUT_DIR
"""
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

DDL = """CREATE TABLE {name} (event_date Date, event_time DateTime, user_id UInt64, counter_id UInt32,
 url String, region UInt16, duration UInt32, revenue Float64, is_mobile UInt8) ENGINE = MergeTree
 PARTITION BY toYYYYMM(event_date) ORDER BY (counter_id, event_date, user_id)"""
BATCH = 100_000


def reset_peak():
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def status_kb(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def pct(xs, q):
    v = sorted(xs)
    return v[min(len(v) - 1, round(q / 100 * (len(v) - 1)))]


def parts(ch, table):
    r = ch.query(f"""SELECT count(), sum(rows), sum(bytes_on_disk), sum(data_compressed_bytes),
        sum(data_uncompressed_bytes) FROM system.parts
        WHERE database = currentDatabase() AND table = '{table}' AND active""", "CSV").bytes().decode().strip().split(",")
    return dict(parts=int(r[0]), rows=int(r[1] or 0), bytes_on_disk=int(r[2] or 0),
                compressed=int(r[3] or 0), uncompressed=int(r[4] or 0))


def run_chdb(parquet_path, work):
    from chdb import session
    path = work / "chdb_storage"
    shutil.rmtree(path, ignore_errors=True)
    ch = session.Session(str(path))
    tbl = pq.read_table(parquet_path)
    rows = tbl.num_rows
    out = dict(engine="chdb", rows=rows)
    ch.query(DDL.format(name="hits"))
    ch.query("SYSTEM STOP MERGES hits")
    lat = []
    reset_peak()
    t0 = time.perf_counter()
    for off in range(0, rows, BATCH):
        batch = tbl.slice(off, BATCH)  # noqa: F841 — chdb resolves Python(batch) from this frame
        t = time.perf_counter()
        ch.query("INSERT INTO hits SELECT * FROM Python(batch)")
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    before = parts(ch, "hits")
    out["insert_batches_100k"] = dict(batches=len(lat), total_s=total, rows_per_s=rows / total,
                                      batch_ms_median=statistics.median(lat) * 1e3, batch_ms_p99=pct(lat, 99) * 1e3,
                                      parts_after=before, peak_rss=status_kb("VmHWM:") * 1024)
    del tbl, batch
    ch.query("SYSTEM START MERGES hits")
    baseline = status_kb("VmRSS:") * 1024
    reset_peak()
    t = time.perf_counter()
    ch.query("OPTIMIZE TABLE hits FINAL")
    s = time.perf_counter() - t
    after = parts(ch, "hits")
    out["optimize_final"] = dict(seconds=s, rows_per_s=rows / s, uncompressed_MB_per_s=before["uncompressed"] / s / 1e6,
                                 compressed_MB_per_s=before["bytes_on_disk"] / s / 1e6, after=after,
                                 peak_rss=status_kb("VmHWM:") * 1024, rss_before=baseline)
    for key, sql in [
        ("alter_update", "ALTER TABLE hits UPDATE revenue = revenue * 2 WHERE region = 7 SETTINGS mutations_sync = 1"),
        ("alter_delete", "ALTER TABLE hits DELETE WHERE is_mobile = 1 AND duration < 5 SETTINGS mutations_sync = 1"),
        ("lightweight_delete", "DELETE FROM hits WHERE region = 11 SETTINGS mutations_sync = 1"),
    ]:
        t = time.perf_counter()
        ch.query(sql)
        out[key] = dict(seconds=time.perf_counter() - t)
        if key == "alter_delete":
            out[key]["rows_left"] = parts(ch, "hits")["rows"]
    ch.close()
    shutil.rmtree(path, ignore_errors=True)
    return out


def fmt(x, unit=""):
    if x >= 1e6:
        return f"{x / 1e6:.2f} M{unit}"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k{unit}"
    return f"{x:.3g} {unit}".strip()


def compare(sh, ch):
    raw = ch["insert_batches_100k"]["parts_after"]["uncompressed"]
    rows = [
        ("100k-row inserts (rows/s, higher is better)", sh["insert_batches_100k"]["rows_per_s"], ch["insert_batches_100k"]["rows_per_s"], True, "rows/s"),
        ("insert p50 (ms)", sh["insert_batches_100k"]["batch_ms_median"], ch["insert_batches_100k"]["batch_ms_median"], False, "ms"),
        ("insert p99 (ms)", sh["insert_batches_100k"]["batch_ms_p99"], ch["insert_batches_100k"]["batch_ms_p99"], False, "ms"),
        ("OPTIMIZE FINAL (rows/s)", sh["optimize_final"]["rows_per_s"], ch["optimize_final"]["rows_per_s"], True, "rows/s"),
        # MB/s on one basis for both: ClickHouse's uncompressed bytes of the same rows.
        ("OPTIMIZE FINAL (MB/s of uncompressed data)", raw / sh["optimize_final"]["seconds"] / 1e6, raw / ch["optimize_final"]["seconds"] / 1e6, True, "MB/s"),
        ("on-disk size after OPTIMIZE FINAL (bytes)", sh["optimize_final"]["after"]["bytes_on_disk"], ch["optimize_final"]["after"]["bytes_on_disk"], False, "B"),
        ("ALTER UPDATE (s)", sh["alter_update"]["seconds"], ch["alter_update"]["seconds"], False, "s"),
        ("ALTER DELETE (s)", sh["alter_delete"]["seconds"], ch["alter_delete"]["seconds"], False, "s"),
        ("lightweight DELETE (s)", sh["lightweight_delete"]["seconds"], ch["lightweight_delete"]["seconds"], False, "s"),
        ("peak RSS during inserts (bytes)", sh["insert_batches_100k"]["peak_rss"], ch["insert_batches_100k"]["peak_rss"], False, "B"),
        ("peak RSS during OPTIMIZE (bytes)", sh["optimize_final"]["peak_rss"], ch["optimize_final"]["peak_rss"], False, "B"),
    ]
    lines = [f"Storage benchmark, {sh['rows']:,} hits rows, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}",
             "", "| measure | shardhouse | chDB | ratio (shardhouse/chDB) | better is |", "|---|---|---|---|---|"]
    for name, a, b, higher, unit in rows:
        ratio = a / b if b else float("nan")
        lines.append(f"| {name} | {fmt(a, unit)} | {fmt(b, unit)} | {ratio:.2f}x | {'higher' if higher else 'lower'} |")
    lines.append("")
    lines.append(f"rows left after ALTER DELETE: shardhouse {sh['alter_delete']['rows_left']}, chDB {ch['alter_delete']['rows_left']}")
    lines.append("peak RSS is the whole process (chDB: the Python process with the source table in memory during inserts).")
    return "\n".join(lines)


def main():
    parquet_path, sh_json, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    sh = json.loads(Path(sh_json).read_text())
    ch = run_chdb(parquet_path, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "storage_chdb.json").write_text(json.dumps(ch, indent=1))
    table = compare(sh, ch)
    print(table)
    return table


if __name__ == "__main__":
    main()
