#!/usr/bin/env bash
# The benchmark suite: shardhouse (a release server over HTTP) next to chDB
# MergeTree and DuckDB on the same generated hits rows: bulk load, 100k-row
# inserts + OPTIMIZE FINAL, mutations, the 12 queries, peak RSS.
# Usage: benches/run.sh [ROWS] [REPS]   (defaults 10000000 and 5)
#        benches/run.sh --smoke         (100k rows, 1 repetition, debug build: CI keeps it working)
#        benches/run.sh --cluster       (only workload 6, replication: 3 server processes, RF=3, vs one node;
#                                        writes results/CLUSTER.{md,json})
#        benches/run.sh --distributed  (only workload 7: a Distributed table over 3 shards vs one node;
#                                       writes results/DISTRIBUTED.{md,json})
#        (a full run also runs mutation.py: inserts during a 10M-row ALTER DELETE, results/MUTATION.{md,json})
# Writes benches/results/LATEST.{md,json,svg} (smoke: benches/work/smoke.*); a full run
# (release) ends with workload 6 and appends its tables to LATEST.md
# (NO_CLUSTER=1 skips it, NO_TPCH=1 skips TPC-H).
set -euo pipefail
cd "$(dirname "$0")"
PROFILE=release
OUT=results/LATEST
CLUSTER=""
DISTRIBUTED=""
if [ "${1:-}" = "--cluster" ]; then
  CLUSTER=1
  shift
  ROWS=10000000 REPS=1
elif [ "${1:-}" = "--distributed" ]; then
  DISTRIBUTED=1
  shift
  ROWS=10000000 REPS=1
elif [ "${1:-}" = "--smoke" ]; then
  ROWS=100000 REPS=1 PROFILE=debug OUT=work/smoke
else
  ROWS="${1:-10000000}"
  REPS="${2:-5}"
fi
WORK="${BENCH_WORKDIR:-$PWD/work}"
mkdir -p "$WORK" results
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import chdb, duckdb, pyarrow" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install -q chdb duckdb pyarrow numpy
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/shardhouse-target}"
SUFFIX=""
[ "$PROFILE" = debug ] && SUFFIX=_smoke
PARQUET="$WORK/hits_$ROWS$SUFFIX.parquet"
# Each `cargo build -p X` unifies features over X alone, and benches and
# shardhouse select different DataFusion features: building them in turn
# would rebuild DataFusion every time. So the generator is built only when
# its Parquet output is missing.
if [ "$PROFILE" = debug ]; then
  # Smoke mode reuses the server binary `cargo test --workspace` just built
  # (building with other feature unification would rebuild DataFusion) and
  # small synthetic rows made in Python: it checks the suite works, not speed.
  [ -f "$PARQUET" ] || .venv/bin/python run.py --gen-smoke "$PARQUET" "$ROWS"
  [ -x "$CARGO_TARGET_DIR/debug/shardhouse" ] || cargo build -q -p shardhouse
else
  if [ ! -f "$PARQUET" ]; then
    cargo build -q --release -p benches --bin storage-bench
    "$CARGO_TARGET_DIR/release/storage-bench" --rows "$ROWS" --gen-only --workdir "$WORK" --parquet-out "$PARQUET"
  fi
  cargo build -q --release -p shardhouse
fi
if [ -n "$CLUSTER" ]; then
  exec .venv/bin/python cluster.py "$CARGO_TARGET_DIR/release/shardhouse" "$PARQUET" "$WORK" results/CLUSTER "$@"
fi
if [ -n "$DISTRIBUTED" ]; then
  exec .venv/bin/python distributed.py "$CARGO_TARGET_DIR/release/shardhouse" "$PARQUET" "$WORK" results/DISTRIBUTED "$@"
fi
DATA="$WORK/queries_shardhouse"
rm -rf "$DATA"
PORT=$((20000 + RANDOM % 20000))
"$CARGO_TARGET_DIR/$PROFILE/shardhouse" server --data "$DATA" --listen "127.0.0.1:$PORT" --max-body 4294967296 2>"$WORK/server.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/ping" >/dev/null && break; sleep 0.1; done
TPCH=()
if [ "$PROFILE" = release ] && [ -z "${NO_TPCH:-}" ]; then
  # TPC-H SF1 from tpchgen-cli (PyPI), generated once.
  .venv/bin/python -c "import tpchgen_cli" 2>/dev/null || .venv/bin/pip install -q tpchgen-cli
  if [ ! -f "$WORK/tpch_sf1/lineitem.parquet" ]; then
    .venv/bin/tpchgen-cli parquet -s 1 --output-dir="$WORK/tpch_sf1"
  fi
  TPCH=(--tpch "$WORK/tpch_sf1")
fi
.venv/bin/python run.py "$PARQUET" "http://127.0.0.1:$PORT" "$WORK" "$OUT" --reps "$REPS" --server-pid "$PID" "${TPCH[@]}"
if [ "$PROFILE" = release ] && [ -z "${NO_CLUSTER:-}" ]; then
  # Workload 6 on the same rows: a 3-process RF=3 cluster next to one node.
  # Its tables go into LATEST.md too (and in full into CLUSTER.{md,json}).
  kill $PID 2>/dev/null || true
  .venv/bin/python cluster.py "$CARGO_TARGET_DIR/release/shardhouse" "$PARQUET" "$WORK" results/CLUSTER
  {
    echo
    echo "## Workload 6: replication, 3 server processes on loopback, RF = 3 (also results/CLUSTER.md)"
    tail -n +3 results/CLUSTER.md | sed 's/^## /### /'
  } >>"$OUT.md"
  # Issue 19, workload 7: a Distributed table over 3 shards vs one node.
  .venv/bin/python distributed.py "$CARGO_TARGET_DIR/release/shardhouse" "$PARQUET" "$WORK" results/DISTRIBUTED
  { echo; sed 's/^## /### /' results/DISTRIBUTED.md; } >>"$OUT.md"
  # Issue 17: small inserts during a 10M-row ALTER DELETE, and the mutation vs chDB.
  .venv/bin/python mutation.py "$CARGO_TARGET_DIR/release/shardhouse" "$WORK" results/MUTATION --rows "$ROWS"
  { echo; sed 's/^## /### /' results/MUTATION.md; } >>"$OUT.md"
fi
