#!/usr/bin/env bash
# Two release binaries side by side in one sitting, interleaved (A, B, A, B):
# bulk load + the 12 queries (3 repetitions, vs chDB and DuckDB) and
# workload 6's small-insert latency (3 processes, RF=3).
# Usage: benches/compare.sh BIN_A BIN_B [ROUNDS] [WORKDIR]
# Writes WORKDIR/{q,c}_<A|B>_<round>.{md,json}; prints the query geomean
# ratio vs chDB and the 16-client small-insert row of each run.
set -uo pipefail
cd "$(dirname "$0")"
A="$1" B="$2" ROUNDS="${3:-2}" W="${4:-$PWD/work/compare}"
mkdir -p "$W"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import chdb, duckdb, pyarrow" 2>/dev/null; then
  python3 -m venv .venv && .venv/bin/pip install -q chdb duckdb pyarrow numpy
fi
P="$W/hits_10000000.parquet"
T="${CARGO_TARGET_DIR:-/var/tmp/shardhouse-target}"
if [ ! -f "$P" ]; then
  cargo build -q --release -p benches --bin storage-bench
  "$T/release/storage-bench" --rows 10000000 --gen-only --workdir "$W/gen" --parquet-out "$P"
fi
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    BIN="${!side}"
    D="$W/data_$side"; rm -rf "$D"; mkdir -p "$W/w_$side"
    PORT=$((20000 + RANDOM % 20000))
    "$BIN" server --data "$D" --listen "127.0.0.1:$PORT" --max-body 4294967296 2>"$W/server_$side.log" &
    PID=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/ping" >/dev/null && break; sleep 0.1; done
    .venv/bin/python run.py "$P" "http://127.0.0.1:$PORT" "$W/w_$side" "$W/q_${side}_$round" --reps 3 \
      --server-pid $PID --workloads load,queries >"$W/q_${side}_$round.log" 2>&1
    kill $PID; wait $PID 2>/dev/null
    rm -rf "$D"
    .venv/bin/python cluster.py "$BIN" "$P" "$W/w_$side" "$W/c_${side}_$round" --only-small >"$W/c_${side}_$round.log" 2>&1
    echo "$side round $round: $(grep 'Query geomean' "$W/q_${side}_$round.md") 16 clients $(grep '^| 16 |' "$W/c_${side}_$round.md")"
  done
done
