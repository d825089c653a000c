#!/usr/bin/env bash
# The node under the systemd unit's restrictions, without systemd: firejail allows only the
# socket families of the unit's RestrictAddressFamilies (unix, inet, inet6, netlink) and adds a
# seccomp filter. A writer and a replica run with the default config (mDNS on, p2p on 0.0.0.0)
# in two network namespaces made here and joined by a veth pair, so mDNS multicast never
# touches the machine's own interfaces. The replica is given no peer: it must find the writer
# by mDNS, then serve an image pushed to the writer.
# Then a replica runs without netlink (what the unit's former RestrictAddressFamilies=AF_INET
# AF_INET6 AF_UNIX did, and what other sandboxes and containers do) with mDNS and a wildcard
# listener in its config: it must start, say once that mDNS is off, and serve.
#
# usage: scripts/sandbox-test.sh [path/to/ipns-registry]   (needs root, firejail, iproute2, skopeo, curl)
set -euo pipefail

bin=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/ipns-registry}")
work=$(mktemp -d)
tag=$$
ns_w=ipnsreg-w-$tag
ns_r=ipnsreg-r-$tag
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # Deleting a namespace deletes its end of the veth pair, and with it the other end.
  ip netns del "$ns_w" 2>/dev/null || true
  ip netns del "$ns_r" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() {
  echo "FAIL: $*" >&2
  for f in "$work"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; } >&2; done
  exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (network namespaces)"
for tool in firejail ip skopeo curl; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed"
done

# The unit's sandbox: its address families, and a seccomp filter.
jail=(firejail --noprofile --quiet --seccomp --protocol=unix,inet,inet6,netlink)

step "two network namespaces joined by a veth pair (10.213.41.0/24, nothing else reachable)"
ip netns add "$ns_w"
ip netns add "$ns_r"
ip link add "vw$tag" netns "$ns_w" type veth peer name "vr$tag" netns "$ns_r"
ip -n "$ns_w" addr add 10.213.41.1/24 dev "vw$tag"
ip -n "$ns_r" addr add 10.213.41.2/24 dev "vr$tag"
for ns in "$ns_w" "$ns_r"; do
  ip -n "$ns" link set lo up
done
ip -n "$ns_w" link set "vw$tag" up
ip -n "$ns_r" link set "vr$tag" up

# start_node NS NAME ARGS...: runs `serve` in NS (in the jail), waits for its HTTP address.
start_node() {
  local ns=$1 name=$2
  shift 2
  ip netns exec "$ns" "${jail[@]}" "$bin" --data-dir "$work/$name" serve --listen 127.0.0.1:5000 "$@" \
    >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  local pid=$!
  for _ in $(seq 1 300); do
    grep -q '^listening on http://' "$work/$name.out" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || fail "$name exited at start: $(tail -1 "$work/$name.err")"
    sleep 0.1
  done
  fail "$name did not start"
}
in_w() { ip netns exec "$ns_w" "$@"; }
in_r() { ip netns exec "$ns_r" "$@"; }

step "writer with the default config (mDNS on, p2p on 0.0.0.0:4011) in the sandbox"
"$bin" --data-dir "$work/writer" init --role writer >/dev/null
name=$("$bin" --data-dir "$work/writer" id --json | sed -n 's/.*"ipns_name": *"\([^"]*\)".*/\1/p')
peer=$("$bin" --data-dir "$work/writer" id --json | sed -n 's/.*"peer_id": *"\([^"]*\)".*/\1/p')
start_node "$ns_w" writer
grep -q "^p2p listening on /ip4/10.213.41.1/tcp/4011/p2p/$peer" "$work/writer.out" ||
  fail "writer does not listen on its veth address: $(cat "$work/writer.out")"
in_w "$bin" --data-dir "$work/writer" status >/dev/null || fail "writer does not answer"
echo "writer $peer serves in $ns_w"

step "push a small image to the writer (skopeo, inside its namespace)"
mkdir -p "$work/src/blobs/sha256" "$work/files"
echo "hello from the sandbox" >"$work/files/hello.txt"
tar -C "$work/files" -cf "$work/layer.tar" hello.txt
add_blob() {
  local hex
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$work/src/blobs/sha256/$hex"
  echo "sha256:$hex"
}
layer_size=$(stat -c %s "$work/layer.tar")
layer=$(add_blob "$work/layer.tar")
printf '{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]}}' "$layer" >"$work/config.json"
config_size=$(stat -c %s "$work/config.json")
config=$(add_blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$config" "$config_size" "$layer" "$layer_size" >"$work/manifest.json"
manifest_size=$(stat -c %s "$work/manifest.json")
manifest=$(add_blob "$work/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
  "$manifest" "$manifest_size" >"$work/src/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/src/oci-layout"
in_w skopeo copy --quiet --preserve-digests --dest-tls-verify=false "oci:$work/src:v1" docker://127.0.0.1:5000/sandbox/hello:v1
echo "pushed $manifest"

step "replica in the other namespace, no --peer: finds the writer by mDNS"
"$bin" --data-dir "$work/replica" init --role replica >/dev/null
start_node "$ns_r" replica --follow "$name" --mirror all
found=
for _ in $(seq 1 120); do
  if in_r "$bin" --data-dir "$work/replica" status --json 2>/dev/null | grep "\"$peer\"" >/dev/null; then
    found=1
    break
  fi
  sleep 0.5
done
[ -n "$found" ] || fail "the replica did not find the writer by mDNS within 60 s"
echo "replica connected to $peer without being told its address"

step "pull from the replica"
got=
for _ in $(seq 1 120); do
  got=$(in_r skopeo inspect --raw --tls-verify=false docker://127.0.0.1:5000/sandbox/hello:v1 2>/dev/null | sha256sum | cut -d' ' -f1) || true
  [ "sha256:$got" = "$manifest" ] && break
  sleep 0.5
done
[ "sha256:$got" = "$manifest" ] || fail "the replica does not serve sandbox/hello:v1 (got $got)"
rm -rf "$work/dst"
in_r skopeo copy --quiet --preserve-digests --src-tls-verify=false docker://127.0.0.1:5000/sandbox/hello:v1 "oci:$work/dst:v1"
cmp -s "$work/src/blobs/sha256/${layer#sha256:}" "$work/dst/blobs/sha256/${layer#sha256:}" ||
  fail "the layer pulled from the replica differs"
echo "the replica serves the image byte for byte"

step "without netlink (--protocol=unix,inet,inet6, as the unit's former RestrictAddressFamilies): default config"
# mDNS is on and p2p listens on 0.0.0.0 in the config: the node must start anyway, say once
# that mDNS is off, listen on the interfaces' addresses instead of the wildcard, serve GET
# /v2/, and still replicate from a peer named with --peer.
nonl=(firejail --noprofile --quiet --seccomp --protocol=unix,inet,inet6)
"$bin" --data-dir "$work/nonl" init --role replica >/dev/null
ip netns exec "$ns_r" "${nonl[@]}" "$bin" --data-dir "$work/nonl" serve --listen 127.0.0.1:5001 \
  --p2p-listen /ip4/0.0.0.0/tcp/4012 --peer "/ip4/10.213.41.1/tcp/4011/p2p/$peer" --follow "$name" \
  >"$work/nonl.out" 2>"$work/nonl.err" &
pids+=($!)
nonl_pid=$!
for _ in $(seq 1 300); do
  grep -q '^listening on http://' "$work/nonl.out" 2>/dev/null && break
  kill -0 "$nonl_pid" 2>/dev/null || fail "without netlink the node exited at start: $(grep -m1 '^error' "$work/nonl.err" || tail -1 "$work/nonl.err")"
  sleep 0.1
done
grep -q '^listening on http://' "$work/nonl.out" || fail "without netlink the node did not start"
code=$(in_r curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5001/v2/)
[ "$code" = 200 ] || fail "without netlink GET /v2/ answered $code"
mdns_off=$(grep -c 'mDNS is off: netlink sockets are not allowed here' "$work/nonl.err" || true)
[ "$mdns_off" = 1 ] || fail "expected the mDNS-off line once, found it $mdns_off times: $(cat "$work/nonl.err")"
grep -q "^p2p listening on /ip4/10.213.41.2/tcp/4012/p2p/" "$work/nonl.out" ||
  fail "without netlink the wildcard listener was not replaced by the veth address: $(cat "$work/nonl.out")"
if grep -q 'Operation not supported (os error 95).*Operation not supported (os error 95)' "$work/nonl.err"; then
  fail "an error is printed twice in one line: $(grep -m1 'os error 95' "$work/nonl.err")"
fi
got=
for _ in $(seq 1 120); do
  got=$(in_r skopeo inspect --raw --tls-verify=false docker://127.0.0.1:5001/sandbox/hello:v1 2>/dev/null | sha256sum | cut -d' ' -f1) || true
  [ "sha256:$got" = "$manifest" ] && break
  sleep 0.5
done
[ "sha256:$got" = "$manifest" ] || fail "the replica without netlink does not serve sandbox/hello:v1"
grep -m1 'mDNS is off' "$work/nonl.err" | sed 's/^/  logged: /'
echo "without netlink: starts, serves GET /v2/, mDNS off said once, listens on 10.213.41.2, replicates from --peer"

echo
echo "sandbox: 2 passed, 0 failed"
