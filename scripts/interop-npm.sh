#!/usr/bin/env bash
# Installs the pinned JS dependencies of the interop checks (tests/interop/package-lock.json) with
# `npm ci`, once per lockfile: scripts/interop-helia.sh and scripts/interop-helia-p2p.sh both call
# it, and the second call finds node_modules installed from the same lockfile and skips npm.
set -euo pipefail

js="$(cd "$(dirname "$0")/.." && pwd)/tests/interop"
command -v node >/dev/null || { echo "interop-npm: node is not installed" >&2; exit 1; }
command -v npm >/dev/null || { echo "interop-npm: npm is not installed" >&2; exit 1; }

lock_hash=$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)
stamp="$js/node_modules/.installed-from-lock"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_hash" ]; then
  exit 0
fi
(cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
echo "$lock_hash" >"$stamp"
