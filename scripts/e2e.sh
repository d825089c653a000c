#!/usr/bin/env bash
# End-to-end check with a real client: builds a multi-layer OCI image on disk (one layer of
# E2E_LAYER_MIB MiB, 512 by default), pushes it with skopeo to a fresh node, pulls it back and
# compares every blob byte for byte, checks the node's peak memory stayed far below the layer
# size (blobs are streamed, never buffered whole), restarts the node and pulls again, deletes a
# tag, and finally runs `ipns-registry check` on the data directory.
#
# usage: scripts/e2e.sh [path/to/ipns-registry]     (default: target/release/ipns-registry)
set -euo pipefail

bin=$(realpath "${1:-target/release/ipns-registry}")
layer_mib=${E2E_LAYER_MIB:-512}
max_rss_mib=${E2E_MAX_RSS_MIB:-256}
work=$(mktemp -d)
node_pid=

cleanup() {
  [ -n "$node_pid" ] && kill -9 "$node_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

start_node() {
  rm -f "$work/node.out"
  "$bin" --data-dir "$work/data" serve --listen 127.0.0.1:0 --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns >"$work/node.out" 2>"$work/node.err" &
  node_pid=$!
  for _ in $(seq 1 100); do
    addr=$(sed -n 's|^listening on http://||p' "$work/node.out" 2>/dev/null || true)
    if [ -n "$addr" ]; then
      reg="docker://$addr/e2e/app"
      return 0
    fi
    kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.err"; fail "node exited at start"; }
    sleep 0.1
  done
  fail "node did not start"
}

stop_node() {
  kill -TERM "$node_pid"
  wait "$node_pid" || true
  node_pid=
}

# add_blob FILE: moves FILE into the layout's blob store, prints its digest.
add_blob() {
  local hex
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$work/src/blobs/sha256/$hex"
  echo "sha256:$hex"
}

step "building a 3-layer OCI image (largest layer: ${layer_mib} MiB)"
mkdir -p "$work/src/blobs/sha256" "$work/files"
echo "hello from ipns-registry" >"$work/files/hello.txt"
tar -C "$work/files" -cf "$work/l1.tar" hello.txt
head -c $((3 * 1024 * 1024)) /dev/urandom >"$work/files/medium.bin"
tar -C "$work/files" -cf "$work/l2.tar" medium.bin
head -c $((layer_mib * 1024 * 1024)) /dev/urandom >"$work/files/large.bin"
tar -C "$work/files" -cf "$work/l3.tar" large.bin
rm -f "$work/files/"*.bin
layers=()
sizes=()
for l in l1 l2 l3; do
  sizes+=("$(stat -c %s "$work/$l.tar")")
  layers+=("$(add_blob "$work/$l.tar")")
done
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s","%s","%s"]},"config":{"Cmd":["/bin/sh"]}}' \
  "${layers[0]}" "${layers[1]}" "${layers[2]}" >"$work/config.json"
config_size=$(stat -c %s "$work/config.json")
config=$(add_blob "$work/config.json")
layer_json=""
for i in 0 1 2; do
  layer_json+=$(printf '%s{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}' \
    "$([ "$i" = 0 ] || echo ,)" "${layers[$i]}" "${sizes[$i]}")
done
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
  "$config" "$config_size" "$layer_json" >"$work/manifest.json"
manifest_size=$(stat -c %s "$work/manifest.json")
manifest=$(add_blob "$work/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
  "$manifest" "$manifest_size" >"$work/src/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/src/oci-layout"
echo "manifest $manifest"

step "starting a node"
start_node
echo "node at $addr (pid $node_pid)"

step "skopeo copy: OCI layout -> registry"
skopeo copy --quiet --preserve-digests --dest-tls-verify=false "oci:$work/src:v1" "$reg:v1"
skopeo copy --quiet --preserve-digests --dest-tls-verify=false "oci:$work/src:v1" "docker://$addr/e2e/other:latest"

peak=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$node_pid/status")
echo "node peak RSS after push: ${peak} MiB"

step "skopeo inspect / list-tags"
got=$(skopeo inspect --raw --tls-verify=false "$reg:v1" | sha256sum | cut -d' ' -f1)
[ "sha256:$got" = "$manifest" ] || fail "manifest digest $got != $manifest"
skopeo list-tags --tls-verify=false "$reg" | grep '"v1"' >/dev/null || fail "tag v1 not listed"

pull_and_compare() {
  rm -rf "$work/dst"
  skopeo copy --quiet --preserve-digests --src-tls-verify=false "$reg:v1" "oci:$work/dst:v1"
  for d in "$config" "${layers[@]}" "$manifest"; do
    cmp -s "$work/src/blobs/sha256/${d#sha256:}" "$work/dst/blobs/sha256/${d#sha256:}" ||
      fail "blob $d differs after the round trip"
  done
  echo "all blobs byte-identical ($((${#layers[@]} + 2)) blobs)"
}

step "skopeo copy: registry -> OCI layout, byte-for-byte comparison"
pull_and_compare
peak=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$node_pid/status")
echo "node peak RSS after push and pull of a ${layer_mib} MiB layer: ${peak} MiB (limit ${max_rss_mib} MiB)"
[ "$peak" -le "$max_rss_mib" ] || fail "peak RSS ${peak} MiB: blobs are being buffered"

step "restart keeps every tag"
stop_node
start_node
skopeo list-tags --tls-verify=false "$reg" | grep '"v1"' >/dev/null || fail "tag v1 lost on restart"
pull_and_compare

step "skopeo delete removes the manifest"
skopeo delete --tls-verify=false "docker://$addr/e2e/other:latest"
if skopeo inspect --raw --tls-verify=false "docker://$addr/e2e/other:latest" >/dev/null 2>&1; then
  fail "deleted manifest still served"
fi
skopeo inspect --raw --tls-verify=false "$reg:v1" >/dev/null || fail "e2e/app:v1 lost by a delete in e2e/other"

step "consistency check of the stopped node"
stop_node
"$bin" --data-dir "$work/data" check

echo
echo "e2e: 1 passed, 0 failed"
