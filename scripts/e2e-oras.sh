#!/usr/bin/env bash
# End to end with ORAS: installs the oras-py client (pinned) into a virtualenv under the cargo
# target directory, then runs scripts/e2e-oras.py against a writer and a replica.
#
# usage: scripts/e2e-oras.sh [path/to/ipns-registry]     (default: target/release/ipns-registry)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(realpath "${1:-target/release/ipns-registry}")
venv="${CARGO_TARGET_DIR:-target}/e2e-venv"
if ! "$venv/bin/python" -c 'import oras' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'oras==0.2.43'
fi
"$venv/bin/python" scripts/e2e-oras.py "$bin"
