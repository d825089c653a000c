#!/usr/bin/env bash
# End to end with podman: builds an image locally (no network), pushes it to a writer with
# `podman push`, pulls it with `podman pull` from a replica that fetches the blocks from the
# writer over Bitswap on demand, and compares the files inside byte for byte.
#
# usage: scripts/e2e-podman.sh [path/to/ipns-registry]     (default: target/release/ipns-registry)
set -euo pipefail

bin=$(realpath "${1:-target/release/ipns-registry}")
work=$(mktemp -d)
pids=()
image_ids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for i in "${image_ids[@]}"; do podman rmi -f "$i" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# start NAME ARGS...: runs a node, waits for its addresses; sets NAME_http and NAME_p2p.
start() {
  local name=$1; shift
  "$bin" --data-dir "$work/$name" serve --listen 127.0.0.1:0 \
    --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
disown "$!"  # killed at exit without a job notice
  for _ in $(seq 1 300); do
    grep -q '^listening on http://' "$work/$name.out" 2>/dev/null && break
    sleep 0.1
  done
  local http p2p
  http=$(sed -n 's|^listening on http://||p' "$work/$name.out" | head -1)
  p2p=$(sed -n 's|^p2p listening on \(/ip4/127.0.0.1/tcp/.*\)|\1|p' "$work/$name.out" | head -1)
  [ -n "$http" ] || { cat "$work/$name.err" >&2; fail "$name did not start"; }
  printf -v "${name}_http" '%s' "$http"
  printf -v "${name}_p2p" '%s' "$p2p"
}

say "a writer and a replica that follows it"
"$bin" --data-dir "$work/writer" init --role writer >/dev/null 2>&1
"$bin" --data-dir "$work/replica" init --role replica >/dev/null 2>&1
name=$("$bin" --data-dir "$work/writer" id --json | sed -n 's/.*"ipns_name": *"\([^"]*\)".*/\1/p')
start writer
start replica --follow "$name" --peer "$writer_p2p"
echo "writer http://$writer_http, replica http://$replica_http"

say "building an image from local files"
mkdir -p "$work/files"
head -c $((5 * 1024 * 1024 + 7)) /dev/urandom >"$work/files/blob.bin"
echo "hello from podman" >"$work/files/hello.txt"
tar -C "$work/files" -cf "$work/layer.tar" .
local_tag="localhost/ipns-registry-e2e:$$"
image_ids+=("$local_tag")
podman import --quiet "$work/layer.tar" "$local_tag" >/dev/null

say "podman push to the writer"
podman push --quiet --tls-verify=false "$local_tag" "$writer_http/e2e/podman:v1"
digest=$(curl -fsI -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
  "http://$writer_http/v2/e2e/podman/manifests/v1" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
[ -n "$digest" ] || fail "the writer does not serve e2e/podman:v1"
echo "pushed, manifest $digest"

say "podman pull from the replica"
for _ in $(seq 1 100); do
  got=$(curl -fsI -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
    "http://$replica_http/v2/e2e/podman/manifests/v1" 2>/dev/null | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p') || true
  [ "$got" = "$digest" ] && break
  sleep 0.1
done
[ "$got" = "$digest" ] || fail "the replica never served e2e/podman:v1"
podman rmi -f "$local_tag" >/dev/null
pulled="$replica_http/e2e/podman:v1"
image_ids+=("$pulled")
podman pull --quiet --tls-verify=false "$pulled" >/dev/null
container=$(podman create "$pulled" /hello.txt)
mkdir -p "$work/out"
podman export "$container" | tar -C "$work/out" -xf -
podman rm "$container" >/dev/null
for f in blob.bin hello.txt; do
  cmp -s "$work/files/$f" "$work/out/$f" || fail "$f differs after the round trip"
done
echo "files identical after podman push to the writer and pull from the replica"

echo
echo "e2e-podman: 1 passed, 0 failed"
