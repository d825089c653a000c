#!/usr/bin/env bash
# Interop with Helia over libp2p: a writer on loopback with an image pushed by curl; Helia (JS)
# dials it and resolves its IPNS name over each router in turn (kad-dht on /ipfs/kad/1.0.0,
# kad-dht on /ipfs/lan/kad/1.0.0 as kubo runs on a LAN, libp2p fetch alone, @helia/ipns's pubsub
# router), validates the record with the `ipns` package and checks every blob of the tree
# against its digest over Bitswap. Then the writer is killed and started again, and every
# router must resolve it again before it publishes anything new (republishing is an hour
# away). Finally the reverse direction: Helia publishes the tree under its own name (V1+V2, then
# V2-only) and a replica of ours follows it and serves the image.
#
# Every Helia node is locked down (tests/interop/p2p/lib.mjs): TCP on 127.0.0.1, no bootstrap,
# no mDNS, no delegated routers, no gateways; it dials only our nodes.
#
# usage: scripts/interop-helia-p2p.sh [path/to/ipns-registry]   (default: target/release/...)
set -euo pipefail

root_dir=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-target/release/ipns-registry}")
js="$root_dir/tests/interop/p2p"
work=$(mktemp -d)
writer_pid=

cleanup() {
  [ -n "$writer_pid" ] && kill -9 "$writer_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# start_writer: (re)starts the writer on its data directory; sets $http and $p2p.
start_writer() {
  [ -n "$writer_pid" ] && { kill -9 "$writer_pid" 2>/dev/null || true; wait "$writer_pid" 2>/dev/null || true; }
  "$bin" --data-dir "$work/writer" serve --listen 127.0.0.1:0 --p2p-listen /ip4/127.0.0.1/tcp/0 \
    --no-mdns >"$work/writer.out" 2>>"$work/writer.err" &
  writer_pid=$!
  http= p2p=
  for _ in $(seq 1 100); do
    http=$(sed -n 's|^listening on ||p' "$work/writer.out" 2>/dev/null || true)
    [ -n "$http" ] && break
    kill -0 "$writer_pid" 2>/dev/null || { cat "$work/writer.err"; fail "the writer exited at start"; }
    sleep 0.1
  done
  [ -n "$http" ] || fail "the writer did not report its address"
  p2p=$(sed -n 's|^p2p listening on \(/ip4/127.0.0.1/tcp/.*\)|\1|p' "$work/writer.out" | head -n1)
  [ -n "$p2p" ] || fail "the writer reported no TCP p2p address"
}

own() { "$bin" --data-dir "$work/writer" status --json | node -e "
  const s = JSON.parse(require('fs').readFileSync(0)); console.log(s.own['$1'] ?? '')"; }

resolve_all() {
  for router in dht dht-lan fetch pubsub; do
    (cd "$js" && ROUTER=$router WRITER_ADDR=$p2p IPNS_NAME=$name EXPECT_ROOT=$root \
      EXPECT_BLOBS="$blobs" node resolve.mjs) || fail "Helia could not resolve over $router ($1)"
  done
}

step "the JS checks' dependencies (npm ci, versions locked)"
"$root_dir/scripts/interop-npm.sh" || fail "installing the JS dependencies"

step "a writer with an image"
"$bin" --data-dir "$work/writer" init --role writer >/dev/null
# Republishing an hour away: after the restart below, the record served is the one on disk.
sed -i 's/^republish_interval_secs = .*/republish_interval_secs = 3600/' "$work/writer/config.toml"
start_writer
name=$("$bin" --data-dir "$work/writer" id --json | sed -n 's/.*"ipns_name": *"\([^"]*\)".*/\1/p')
[ -n "$name" ] || fail "no IPNS name from id --json"
head -c 1500000 /dev/urandom >"$work/layer.bin"
echo '{"architecture":"amd64","os":"linux"}' >"$work/config.json"
push_blob() {
  local digest
  digest="sha256:$(sha256sum "$1" | cut -d' ' -f1)"
  curl -fsS -X POST --data-binary "@$1" -H 'Content-Type: application/octet-stream' \
    "$http/v2/interop/app/blobs/uploads/?digest=$digest" >/dev/null || fail "pushing $1"
  echo "$digest"
}
layer=$(push_blob "$work/layer.bin")
config=$(push_blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$config" "$(stat -c %s "$work/config.json")" "$layer" "$(stat -c %s "$work/layer.bin")" >"$work/manifest.json"
curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary "@$work/manifest.json" "$http/v2/interop/app/manifests/v1" >/dev/null || fail "pushing the manifest"
manifest="sha256:$(sha256sum "$work/manifest.json" | cut -d' ' -f1)"
blobs="$layer $config $manifest"
root=
for _ in $(seq 1 100); do
  root=$(own root)
  [ -n "$root" ] && [ "$(own published_root)" = "$root" ] && break
  sleep 0.1
done
[ "$(own published_root)" = "$root" ] || fail "the writer did not publish its root"
sequence=$(own sequence)
echo "writer $name at $p2p publishes $root (sequence $sequence)"

step "Helia resolves a fresh writer over each router"
resolve_all "fresh writer"

step "Helia resolves the writer again after a restart, before it publishes"
start_writer
resolve_all "restarted writer"
[ "$(own sequence)" = "$sequence" ] || fail "the restarted writer published again (sequence $(own sequence))"

step "the reverse direction: our replica follows a name Helia publishes"
(cd "$js" && WRITER_ADDR=$p2p WRITER_PID=$writer_pid EXPECT_ROOT=$root BIN="$bin" WORK="$work" REPO=interop/app TAG=v1 \
  EXPECT_MANIFEST="$manifest" node publish.mjs) || fail "the reverse direction"

echo
echo "Helia interop over libp2p: all checks passed"
