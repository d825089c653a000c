#!/usr/bin/env bash
# Demo: a writer and a replica on this machine. Pushes an image to the writer with skopeo,
# waits for the replica to resolve the writer's IPNS name, pulls the image from the replica and
# compares it byte for byte; then stops the writer and pulls again from the replica alone.
#
# usage: scripts/demo.sh [path/to/ipns-registry]     (default: target/release/ipns-registry)
# Ports: writer HTTP 5101 / p2p 4101, replica HTTP 5102 / p2p 4102 (override with DEMO_*_PORT).
set -euo pipefail
. "$(dirname "$0")/oci-image.sh"

bin=$(realpath "${1:-target/release/ipns-registry}")
w_http=${DEMO_WRITER_PORT:-5101}
r_http=${DEMO_REPLICA_PORT:-5102}
w_p2p=${DEMO_WRITER_P2P_PORT:-4101}
r_p2p=${DEMO_REPLICA_P2P_PORT:-4102}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# wait_http PORT: until the node answers /v2/.
wait_http() {
  for _ in $(seq 1 200); do
    curl -fs "http://127.0.0.1:$1/v2/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "no node on port $1"
}

say "initialising a writer and a replica"
"$bin" --data-dir "$work/writer" init --role writer
"$bin" --data-dir "$work/replica" init --role replica
name=$("$bin" --data-dir "$work/writer" id --json | sed -n 's/.*"ipns_name": *"\([^"]*\)".*/\1/p')
peer=$("$bin" --data-dir "$work/writer" id --json | sed -n 's/.*"peer_id": *"\([^"]*\)".*/\1/p')
echo "writer's IPNS name: $name"

say "starting both"
"$bin" --data-dir "$work/writer" serve --listen "127.0.0.1:$w_http" \
  --p2p-listen "/ip4/127.0.0.1/tcp/$w_p2p" --no-mdns >"$work/writer.log" 2>&1 &
pids+=($!)
disown "$!"  # killed at exit without a job notice
"$bin" --data-dir "$work/replica" serve --listen "127.0.0.1:$r_http" \
  --p2p-listen "/ip4/127.0.0.1/tcp/$r_p2p" --no-mdns \
  --peer "/ip4/127.0.0.1/tcp/$w_p2p/p2p/$peer" --follow "$name" --mirror all >"$work/replica.log" 2>&1 &
pids+=($!)
disown "$!"  # killed at exit without a job notice
wait_http "$w_http"
wait_http "$r_http"

say "building a small OCI image and pushing it to the writer"
mkdir -p "$work/files"
echo "hello from the demo" >"$work/files/hello.txt"
tar -C "$work/files" -cf "$work/layer.tar" hello.txt
one_layer_image "$work/img" "$work/layer.tar"
skopeo copy --quiet --preserve-digests --dest-tls-verify=false "oci:$work/img:v1" "docker://127.0.0.1:$w_http/demo/hello:v1"

say "waiting for the replica to serve demo/hello:v1"
start=$(date +%s%N)
for _ in $(seq 1 300); do
  got=$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$r_http/demo/hello:v1" 2>/dev/null | sha256sum | cut -d' ' -f1) || true
  [ "$got" = "$manifest_hex" ] && break
  sleep 0.1
done
[ "$got" = "$manifest_hex" ] || fail "the replica never served demo/hello:v1"
echo "served by the replica $(( ($(date +%s%N) - start) / 1000000 )) ms after the push completed"

pull_from_replica() {
  rm -rf "$work/out"
  skopeo copy --quiet --preserve-digests --src-tls-verify=false "docker://127.0.0.1:$r_http/demo/hello:v1" "oci:$work/out:v1"
  for hex in "$layer_hex" "$config_hex" "$manifest_hex"; do
    cmp -s "$work/img/blobs/sha256/$hex" "$work/out/blobs/sha256/$hex" || fail "blob $hex differs"
  done
  echo "pulled from the replica: identical"
}
say "pulling from the replica"
pull_from_replica

say "stopping the writer; the replica still serves the image"
kill -9 "${pids[0]}"
pull_from_replica
"$bin" --data-dir "$work/replica" status

echo
echo "demo: 1 passed, 0 failed"
