#!/usr/bin/env bash
# Installs the real third-party clients the interface tests drive into a venv
# (default: <repo>/.venv-clients). Idempotent: a venv with the pinned versions
# is reused. Prints the venv's python on success.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SHARDHOUSE_CLIENTS_VENV:-$here/../../../.venv-clients}"
pins=(clickhouse-connect==1.12.0 pyarrow==22.0.0)
stamp="$venv/.pins"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]]; then
  python3 -m venv "$venv" >&2 || {
    echo "setup.sh: python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
  echo "${pins[*]}" >"$stamp"
fi
echo "$venv/bin/python"
