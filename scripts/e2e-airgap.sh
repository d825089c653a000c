#!/usr/bin/env bash
# Air-gapped move with a real client: builds a two-layer OCI image on disk (one layer of
# AIRGAP_LAYER_MIB MiB, 64 by default), pushes it with skopeo to a writer, exports it with
# `ipns-registry export` (through the running node's admin socket) into a CAR file, imports the
# CAR into a fresh data directory, then serves that directory from a node whose network is
# off (a network namespace of its own with only loopback, `unshare -n`, when run as root; no
# peers and no mDNS otherwise) and pulls the image with skopeo there: every digest and every
# blob must be the writer's. A CAR with one flipped byte must be refused and import nothing.
#
# usage: scripts/e2e-airgap.sh [path/to/ipns-registry]     (default: target/release/ipns-registry)
set -euo pipefail

script=$(realpath "$0")
layer_mib=${AIRGAP_LAYER_MIB:-64}
node_pid=
if [ "${1:-}" = "--receive" ]; then
  # Called by this script itself for the receiving side: --receive WORK BIN.
  work=$2
  bin=$3
else
  bin=$(realpath "${1:-target/release/ipns-registry}")
  work=$(mktemp -d)
fi

cleanup() {
  [ -n "$node_pid" ] && kill -9 "$node_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# start_node DATA_DIR: a node on loopback with no peers and no mDNS; sets node_pid and addr.
start_node() {
  "$bin" --data-dir "$1" serve --listen 127.0.0.1:0 --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns \
    >"$1.out" 2>"$1.err" &
  node_pid=$!
  for _ in $(seq 1 100); do
    addr=$(sed -n 's|^listening on http://||p' "$1.out" 2>/dev/null || true)
    [ -n "$addr" ] && return 0
    kill -0 "$node_pid" 2>/dev/null || { cat "$1.err"; fail "node exited at start"; }
    sleep 0.1
  done
  fail "node did not start"
}

stop_node() {
  kill -TERM "$node_pid"
  wait "$node_pid" || true
  node_pid=
}

# The receiving side, run in a network namespace of its own (only loopback) when possible:
# serve the imported data directory and pull with skopeo; compare with the expected digests.
if [ "${1:-}" = "--receive" ]; then
  cleanup_receive() { [ -n "$node_pid" ] && kill -9 "$node_pid" 2>/dev/null || true; }
  trap cleanup_receive EXIT
  if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
    ip link set lo up
  fi
  echo "network interfaces here: $(awk -F: 'NR > 2 {gsub(/ /, "", $1); printf "%s ", $1}' /proc/net/dev)"
  start_node "$work/imported"
  echo "receiving node at $addr (pid $node_pid)"
  reg="docker://$addr/e2e/app"
  got=$(skopeo inspect --raw --tls-verify=false "$reg:v1" | sha256sum | cut -d' ' -f1)
  [ "sha256:$got" = "$(cat "$work/manifest.digest")" ] || fail "manifest digest sha256:$got"
  skopeo copy --quiet --preserve-digests --src-tls-verify=false "$reg:v1" "oci:$work/dst:v1"
  for blob in "$work"/src/blobs/sha256/*; do
    cmp -s "$blob" "$work/dst/blobs/sha256/$(basename "$blob")" ||
      fail "blob $(basename "$blob") differs after the air-gapped move"
  done
  echo "skopeo pulled every blob byte-identical from the node with no network"
  stop_node
  exit 0
fi

step "building a 2-layer OCI image (largest layer: ${layer_mib} MiB)"
mkdir -p "$work/src/blobs/sha256" "$work/files"
add_blob() {
  local hex
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$work/src/blobs/sha256/$hex"
  echo "sha256:$hex"
}
echo "hello across the air gap" >"$work/files/hello.txt"
tar -C "$work/files" -cf "$work/l1.tar" hello.txt
head -c $((layer_mib * 1024 * 1024)) /dev/urandom >"$work/files/large.bin"
tar -C "$work/files" -cf "$work/l2.tar" large.bin
rm -f "$work/files/large.bin"
l1_size=$(stat -c %s "$work/l1.tar")
l2_size=$(stat -c %s "$work/l2.tar")
l1=$(add_blob "$work/l1.tar")
l2=$(add_blob "$work/l2.tar")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s","%s"]}}' "$l1" "$l2" >"$work/config.json"
config_size=$(stat -c %s "$work/config.json")
config=$(add_blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s},{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$config" "$config_size" "$l1" "$l1_size" "$l2" "$l2_size" >"$work/manifest.json"
manifest_size=$(stat -c %s "$work/manifest.json")
manifest=$(add_blob "$work/manifest.json")
echo "$manifest" >"$work/manifest.digest"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
  "$manifest" "$manifest_size" >"$work/src/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/src/oci-layout"
echo "manifest $manifest"

step "skopeo copy into a writer"
start_node "$work/writer"
skopeo copy --quiet --preserve-digests --dest-tls-verify=false "oci:$work/src:v1" "docker://$addr/e2e/app:v1"

step "ipns-registry export (running writer, through its admin socket)"
start=$(date +%s%N)
"$bin" --data-dir "$work/writer" export -o "$work/images.car" e2e/app:v1
end=$(date +%s%N)
car_bytes=$(stat -c %s "$work/images.car")
echo "exported ${car_bytes} bytes in $(((end - start) / 1000000)) ms"
stop_node

step "a corrupted CAR is refused and imports nothing"
cp "$work/images.car" "$work/bad.car"
offset=$((car_bytes / 2))
byte=$(od -An -tu1 -j "$offset" -N1 "$work/bad.car" | tr -d ' ')
printf "\\x$(printf %02x $((255 - byte)))" | dd of="$work/bad.car" bs=1 seek="$offset" conv=notrunc status=none
cmp -s "$work/images.car" "$work/bad.car" && fail "the byte was not flipped"
if "$bin" --data-dir "$work/imported" import "$work/bad.car" 2>"$work/bad.err"; then
  fail "a CAR with a flipped byte was imported"
fi
cat "$work/bad.err"
grep -q "refused" "$work/bad.err" || fail "the refusal does not say the CAR is refused"
blocks=$(find "$work/imported/blocks" -mindepth 2 -maxdepth 2 -path '*/blocks/??/*' 2>/dev/null | wc -l)
echo "blocks in the receiving store after the refusal: $blocks"
[ "$blocks" -le 1 ] || fail "the refused CAR left $blocks blocks (only the empty root may be there)"

step "ipns-registry import into a fresh, stopped data directory"
start=$(date +%s%N)
"$bin" --data-dir "$work/imported" import "$work/images.car"
end=$(date +%s%N)
echo "imported in $(((end - start) / 1000000)) ms"

step "serving the imported data directory with the network off, pulling with skopeo"
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  echo "in a network namespace with only loopback (unshare -n)"
  unshare -n bash "$script" --receive "$work" "$bin"
else
  echo "not root: a node with no peers and no mDNS on the host's loopback"
  bash "$script" --receive "$work" "$bin"
fi
echo
echo "air-gapped move OK"
