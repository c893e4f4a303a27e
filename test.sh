#!/usr/bin/env bash
# The test command: the layering check (.ci/layering.py), every crate's
# unit and integration tests, then the
# benchmark suite in smoke mode (100k rows, one repetition, the debug build
# the tests just made) so it keeps working; the real run is benches/run.sh.
set -euo pipefail
cd "$(dirname "$0")"
status=0
python3 .ci/layering.py || status=$?
cargo test --workspace --no-fail-fast "$@" || status=$?
benches/run.sh --smoke >/dev/null || { echo "benches/run.sh --smoke failed" >&2; status=1; }
exit $status
