#!/usr/bin/env bash
# Interop with Helia (independent IPFS implementations in JavaScript): starts a writer on
# loopback, pushes an image and a 2.5 MB blob with curl, waits for the writer's record to cover
# them, then runs the JS checks in tests/interop/checks/ against the writer's trustless gateway
# (Helia's trustless-gateway block broker, @helia/verified-fetch, @ipld/car, ipns). Finally a
# replica with --gateway and no libp2p peer serves the blob byte for byte.
#
# Every Helia node is locked down (tests/interop/lib/helia.mjs): no libp2p, no delegated
# routers, no public gateways; it talks only to 127.0.0.1.
#
# usage: scripts/interop-helia.sh [path/to/ipns-registry] [check-name-prefix...]
#        (default binary: target/release/ipns-registry)
set -euo pipefail

root_dir=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-target/release/ipns-registry}")
shift || true
work=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# start_node NAME ROLE [serve flags...]: starts a node, sets $addr to its host:port.
start_node() {
  local name=$1 role=$2
  shift 2
  "$bin" --data-dir "$work/$name" init --role "$role" >/dev/null
  "$bin" --data-dir "$work/$name" serve --listen 127.0.0.1:0 --p2p-listen /ip4/127.0.0.1/tcp/0 \
    --no-mdns "$@" >"$work/$name.out" 2>"$work/$name.err" &
  local pid=$!
  pids+=("$pid")
  addr=
  for _ in $(seq 1 100); do
    addr=$(sed -n 's|^listening on http://||p' "$work/$name.out" 2>/dev/null || true)
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/$name.err"; fail "$name exited at start"; }
    sleep 0.1
  done
  [ -n "$addr" ] || fail "$name did not report its address"
}

step "the JS checks' dependencies (npm ci, versions locked)"
"$root_dir/scripts/interop-npm.sh" || fail "installing the JS dependencies"

step "a writer with an image and a 2.5 MB blob"
start_node writer writer
writer="http://$addr"
name=$("$bin" --data-dir "$work/writer" id --json | sed -n 's/.*"ipns_name": *"\([^"]*\)".*/\1/p')
[ -n "$name" ] || fail "no IPNS name from id --json"
head -c 2500000 /dev/urandom >"$work/blob.bin"
echo '{"architecture":"amd64","os":"linux"}' >"$work/config.json"
push_blob() {
  local digest
  digest="sha256:$(sha256sum "$1" | cut -d' ' -f1)"
  curl -fsS -X POST --data-binary "@$1" -H 'Content-Type: application/octet-stream' \
    "$writer/v2/interop/app/blobs/uploads/?digest=$digest" >/dev/null || fail "pushing $1"
  echo "$digest"
}
blob=$(push_blob "$work/blob.bin")
config=$(push_blob "$work/config.json")
manifest=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$config" "$(stat -c %s "$work/config.json")" "$blob" "$(stat -c %s "$work/blob.bin")")
curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data "$manifest" \
  "$writer/v2/interop/app/manifests/v1" >/dev/null || fail "pushing the manifest"
hex=${blob#sha256:}
blob_path="docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data"
tag_path="docker/registry/v2/repositories/interop/app/_manifests/tags/v1/current/link"

step "waiting for the writer's record to cover the push"
root=
for _ in $(seq 1 300); do
  headers=$(curl -sS -o /dev/null -D - "$writer/ipns/$name/$tag_path?format=car&dag-scope=block" || true)
  if printf '%s' "$headers" | grep '^HTTP/1.1 200' >/dev/null; then
    root=$(printf '%s' "$headers" | tr -d '\r' | sed -n 's/^[Xx]-[Ii]pfs-[Rr]oots: \([^,]*\).*/\1/p')
    break
  fi
  sleep 0.1
done
[ -n "$root" ] || fail "the writer's record never covered the push"
echo "name $name -> /ipfs/$root"

step "Helia checks against the writer's gateway"
GATEWAY_URL="$writer" IPNS_NAME="$name" ROOT_CID="$root" BLOB_PATH="$blob_path" \
  BLOB_FILE="$work/blob.bin" node "$root_dir/tests/interop/run-checks.mjs" "$@"

step "a replica with --gateway and no libp2p peer serves the blob"
start_node replica replica --follow "$name" --gateway "$writer"
replica="http://$addr"
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "$replica/v2/interop/app/manifests/v1" \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' 2>/dev/null && break
  sleep 0.1
done
curl -fsS "$replica/v2/interop/app/blobs/$blob" -o "$work/pulled.bin" || fail "pull from the replica"
cmp -s "$work/blob.bin" "$work/pulled.bin" || fail "the replica's blob differs"
peers=$("$bin" --data-dir "$work/replica" status --json | tr -d ' \n' | grep -o '"peers":\[[^]]*\]' || true)
[ "$peers" = '"peers":[]' ] || fail "the replica had libp2p peers: $peers"
echo "replica served the blob byte for byte with $peers"
echo
echo "interop-helia: all checks passed"
