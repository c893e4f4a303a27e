#!/usr/bin/env bash
# Storage benchmark: shardhouse's storage engine next to chDB (ClickHouse
# MergeTree) on the same generated hits rows. Usage: benches/storage.sh [ROWS]
# Writes benches/results/storage.{md,json}.
set -euo pipefail
cd "$(dirname "$0")"
ROWS="${1:-10000000}"
WORK="${BENCH_WORKDIR:-$PWD/work}"
mkdir -p "$WORK" results
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q chdb pyarrow numpy
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/shardhouse-target}"
cargo build -q --release -p benches --bin storage-bench
BIN="$CARGO_TARGET_DIR/release/storage-bench"
"$BIN" --rows "$ROWS" --workdir "$WORK" --out "$WORK/storage_shardhouse.json" --parquet-out "$WORK/hits_$ROWS.parquet"
rm -rf "$WORK/shardhouse_hits"
.venv/bin/python storage_chdb.py "$WORK/hits_$ROWS.parquet" "$WORK/storage_shardhouse.json" "$WORK" | tee results/storage.md
cp "$WORK/storage_shardhouse.json" results/storage_shardhouse.json
cp "$WORK/storage_chdb.json" results/storage_chdb.json
