#!/usr/bin/env bash
# dlt against our loader on the same 100k-event archive, in one run: writes bench/out/peers.json.
#   bash bench/peers.sh [--events N] [--repeat R]
# Creates its own virtualenv bench/.venv-peers (dlt pins its own duckdb, so it must not share
# the project's .venv) with "dlt[duckdb,parquet]" from PyPI, on first use only
# (parquet: the second, faster dlt variant).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
PEERS=bench/.venv-peers
export DO_NOT_TRACK=1 DLT_TELEMETRY=false RUNTIME__DLTHUB_TELEMETRY=false
SPEC='dlt[duckdb,parquet]'
if [ "$(cat "$PEERS/.installed" 2>/dev/null)" != "$SPEC" ]; then
    [ -x "$PEERS/bin/python" ] || "$PYTHON" -m venv "$PEERS"
    "$PEERS/bin/python" -m pip install --quiet --upgrade pip
    "$PEERS/bin/python" -m pip install --quiet "$SPEC"
    echo "$SPEC" > "$PEERS/.installed"
fi
if [ ! -x .venv/bin/python ]; then
    echo "the project's .venv is missing: run 'make install' first" >&2
    exit 2
fi
"$PEERS/bin/python" -c 'import dlt, duckdb; print("dlt", dlt.__version__, "duckdb", duckdb.__version__)'
exec "$PEERS/bin/python" bench/peer_dlt.py --loader-python .venv/bin/python "$@"
