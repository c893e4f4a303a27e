#!/usr/bin/env bash
# The long jepsen run: the fault workload across seeds for at least
# MINUTES (default 10), alternating issue 16's schedule without kills
# (pauses, partitions, OPTIMIZE FINAL, a mutation) and the same with
# kills and whole-cluster restarts. One line per run; exit 1 if any run
# found an anomaly (its data and logs are kept, the path is printed).
#
#   jepsen/soak.sh [MINUTES] [SECONDS_PER_RUN] [FIRST_SEED]
#   RELEASE=1 jepsen/soak.sh 10      # against the release build
#   SOAK_BIN=… SOAK_JEPSEN=… jepsen/soak.sh 10   # against copies of the binaries
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}
PER_RUN=${2:-60}
SEED=${3:-1}
PROFILE=debug
FLAGS=()
if [ "${RELEASE:-0}" = 1 ]; then PROFILE=release; FLAGS=(--release); fi
TARGET="${CARGO_TARGET_DIR:-target}"
if [ -n "${SOAK_BIN:-}" ] && [ -n "${SOAK_JEPSEN:-}" ]; then
  # Binaries copied aside: later builds in the target dir cannot change
  # what a long soak tests.
  BIN="$SOAK_BIN" JEPSEN="$SOAK_JEPSEN"
else
  cargo build "${FLAGS[@]}" -p shardhouse -p jepsen --bins
  BIN="$TARGET/$PROFILE/shardhouse"
  JEPSEN="$TARGET/$PROFILE/jepsen"
fi
end=$(( $(date +%s) + MINUTES * 60 ))
runs=0; failed=0
while [ "$(date +%s)" -lt "$end" ]; do
  for faults in pauses,partitions,optimize,mutation all; do
    runs=$((runs + 1))
    dir=$(mktemp -d /tmp/shardhouse-soak-XXXXXX)
    log="$dir.log"
    if "$JEPSEN" --bin "$BIN" --dir "$dir" --seconds "$PER_RUN" --seed "$SEED" --writers 6 --faults "$faults" >"$log" 2>&1; then
      echo "seed $SEED $faults: ok — $(tail -1 "$log" | cut -c1-200)"
      rm -f "$log"
    else
      failed=$((failed + 1))
      echo "seed $SEED $faults: FAILED (report $log, data $dir)"
      grep -m5 -E 'lost|stale|survived|converge|progress' "$log" | sed 's/^/    /' || true
    fi
    SEED=$((SEED + 1))
  done
done
echo "$runs runs, $failed failed"
[ "$failed" -eq 0 ]
