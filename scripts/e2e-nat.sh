#!/usr/bin/env bash
# Across NATs, with nothing but an IPNS name and a bootstrap list: a small internet from
# scripts/netlab.sh (two public nodes of ours as bootstrap peers, DHT servers and one a relay;
# four homes behind NAT routers: three endpoint-independent, one symmetric).
#
#   home1  writer            behind nat1 (eim)   skopeo pushes an image (an 8 MiB layer)
#   home2  replica A         behind nat2 (eim)   --follow NAME --mirror all, bootstrap list only
#   home3  replica B         behind nat3 (eim)   started after the writer is stopped
#   home4  replica C         behind nat4 (symmetric)
#
# Checks: replica A resolves the name through the DHT, finds the writer through its provider
# record, reaches it through the relay, and hole punching (DCUtR) makes the connection direct:
# skopeo pulls the image byte-identical, `status` shows the writer `direct`, and the image could
# not have crossed the relay (its circuits carry 128 KiB at most, and blocks never go over a
# relayed connection by default). With the writer stopped, replica B pulls the same image from
# replica A. Replica C, behind the symmetric NAT, cannot punch a hole: its pull fails, `status`
# shows its peers `relayed` with no blocks, and its log says why.
#
# usage: scripts/e2e-nat.sh [path/to/ipns-registry]     (default: target/release/ipns-registry)
# E2E_NAT_TRANSPORT=quic gives every node the bootstrap peers' QUIC addresses instead of their TCP
# ones, so that the addresses peers observe, the relay circuits and the punched holes are QUIC.
# Needs root, iproute2 and iptables (scripts/netlab.sh), skopeo.
set -euo pipefail
. "$(dirname "$0")/oci-image.sh"
cd "$(dirname "$0")/.."

bin=$(realpath "${1:-target/release/ipns-registry}")
netlab=$(realpath scripts/netlab.sh)
lab="e2enat$((RANDOM % 10000))"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  "$netlab" down "$lab" >/dev/null 2>&1 || true
  if [ -n "${KEEP_LOGS:-}" ]; then echo "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
started=$(date +%s)
say() { printf '\n== [%ss] %s\n' "$(($(date +%s) - started))" "$*"; }
fail() {
  echo "FAIL: $*" >&2
  for log in "$work"/*.log; do
    [ -f "$log" ] || continue
    echo "--- last lines of $log" >&2
    tail -n 25 "$log" >&2
  done
  exit 1
}

if [ "$(id -u)" != 0 ]; then
  echo "skipping: building the test network needs root"
  exit 0
fi

in_host() { "$netlab" exec "$lab" "$1" -- "${@:2}"; }

# status_eval NODE EXPR, status_is NODE EXPR VALUE: questions to a node's status report.
. "$(dirname "$0")/node-status.sh"
# json EXPR NODE, json_is EXPR NODE VALUE: status_eval and status_is, the expression first (it is
# the long part of each line below).
json() { status_eval "$2" "$1"; }
json_is() { status_is "$2" "$1" "$3"; }

# wait_for SECS DESCRIPTION CMD...: until CMD succeeds.
wait_for() {
  local secs=$1 what=$2
  shift 2
  for _ in $(seq 1 $((secs * 5))); do
    if "$@"; then return 0; fi
    sleep 0.2
  done
  fail "$what (waited ${secs} s)"
}

# start NODE HOST ARGS...: runs `serve` in HOST with HTTP on the host's 127.0.0.1:5000.
start() {
  local node=$1 host=$2
  shift 2
  # `ip netns exec` becomes the node's process, so $! is the node (to kill it later).
  ip netns exec "$("$netlab" ns "$lab" "$host")" "$bin" --data-dir "$work/$node" serve --listen 127.0.0.1:5000 \
    --p2p-listen /ip4/0.0.0.0/tcp/4011 --p2p-listen /ip4/0.0.0.0/udp/4011/quic-v1 --no-mdns \
    "$@" >"$work/$node.log" 2>&1 &
  pids+=($!)
  eval "pid_$node=$!"
  wait_for 30 "$node did not answer on its HTTP port" in_host "$host" curl -fs -o /dev/null http://127.0.0.1:5000/v2/
}

peer_id() { "$bin" --data-dir "$work/$1" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])'; }

say "building the test network: 3 public hosts, 4 homes behind NAT routers (eim, eim, eim, symmetric)"
"$netlab" up "$lab" internet --nat eim --nat eim --nat eim --nat symmetric

for node in pub1 pub2; do "$bin" --data-dir "$work/$node" init --role replica >/dev/null; done
"$bin" --data-dir "$work/writer" init --role writer >/dev/null
for node in replica_a replica_b replica_c; do "$bin" --data-dir "$work/$node" init --role replica >/dev/null; done
# pub1 relays for the homes, within the default limits (128 KiB, 2 min per circuit).
sed -i 's/^relay_service = false$/relay_service = true/' "$work/pub1/config.toml"
grep -q '^relay_service = true$' "$work/pub1/config.toml" || fail "could not turn the relay service on"
name=$("$bin" --data-dir "$work/writer" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ipns_name"])')
case "${E2E_NAT_TRANSPORT:-tcp}" in
  tcp) transport=/tcp/4011 ;;
  quic) transport=/udp/4011/quic-v1 ;;
  *) fail "E2E_NAT_TRANSPORT must be tcp or quic" ;;
esac
pub1=/ip4/198.51.100.11$transport/p2p/$(peer_id pub1)
pub2=/ip4/198.51.100.12$transport/p2p/$(peer_id pub2)
bootstrap=(--bootstrap "$pub1" --bootstrap "$pub2")
echo "writer's IPNS name: $name"
echo "bootstrap list: $pub1 $pub2"

say "starting the public nodes; AutoNAT confirms their addresses and they serve the public DHT"
start pub1 pub1 --bootstrap "$pub2"
start pub2 pub2 --bootstrap "$pub1"
for node in pub1 pub2; do
  wait_for 60 "$node's public address was not confirmed by AutoNAT" \
    json_is 's["reachability"]["dht"] == "server" and len(s["reachability"]["public"]) > 0' "$node" yes
done
json 's["reachability"]["public"]' pub1

say "starting the writer behind nat1: not reachable, it reserves a slot at the relay"
start writer home1 "${bootstrap[@]}"
wait_for 60 "the writer got no relay reservation" \
  json_is 'len(s["reachability"]["relayed"]) > 0' writer yes
json 's["reachability"]' writer
[ "$(json 's["reachability"]["dht"]' writer)" = client ] || fail "a node behind a NAT serves the public DHT"

say "pushing an image to the writer (skopeo, in home1)"
img=$work/img
mkdir -p "$work/files"
head -c $((8 * 1024 * 1024)) /dev/urandom >"$work/files/big.bin"
tar -C "$work/files" -cf "$work/layer.tar" big.bin
one_layer_image "$img" "$work/layer.tar"
in_host home1 skopeo copy --quiet --preserve-digests --dest-tls-verify=false "oci:$img:v1" docker://127.0.0.1:5000/nat/app:v1
root=$(json 's["own"]["root"]' writer)
wait_for 30 "the writer did not publish its root" json_is 's["own"]["published_root"]' writer "$root"
echo "pushed; the writer published root $root"

# pull NODE HOST: skopeo pull from the node, compared byte for byte with what was pushed.
pull() {
  rm -rf "$work/out"
  in_host "$2" timeout 300 skopeo copy --quiet --preserve-digests --src-tls-verify=false \
    docker://127.0.0.1:5000/nat/app:v1 "oci:$work/out:v1" || fail "skopeo pull from $1 failed"
  for hex in "$layer_hex" "$config_hex" "$manifest_hex"; do
    cmp -s "$img/blobs/sha256/$hex" "$work/out/blobs/sha256/$hex" || fail "blob $hex from $1 differs"
  done
  echo "pulled from $1: byte-identical"
}

writer_id=$(peer_id writer)
replica_a_id=$(peer_id replica_a)

# relay_bytes: bytes pub1 (the relay) has received and sent on its interfaces so far.
relay_bytes() {
  in_host pub1 ip -j -s link show | python3 -c 'import json,sys
print(sum(l["stats64"]["rx"]["bytes"] + l["stats64"]["tx"]["bytes"] for l in json.load(sys.stdin) if l["ifname"] != "lo"))'
}

say "replica A behind nat2, given only --follow NAME and the bootstrap list, mirrors the image"
relay_before=$(relay_bytes)
start replica_a home2 --follow "$name" --mirror all "${bootstrap[@]}"
wait_for 180 "replica A did not mirror the writer's root" \
  json_is '[f["mirror_progress"]["state"] for f in s["followed"] if f["mirror_progress"] and f["mirror_progress"]["root"] == "'"$root"'"] == ["complete"]' replica_a yes
pull "replica A" home2
connection=$(json '[c["connection"] + (" blocks" if c["blocks"] else "") for c in s["connections"] if c["peer"] == "'"$writer_id"'"]' replica_a)
echo "replica A's connection to the writer: $connection"
[ "$connection" = "['direct blocks']" ] || fail "replica A is not directly connected to the writer: $connection"
addresses=$(json '[a for c in s["connections"] if c["peer"] == "'"$writer_id"'" for a in c["addresses"] if "p2p-circuit" not in a]' replica_a)
echo "its direct addresses: $addresses"
[[ "$addresses" == *"198.51.100.21$transport"* ]] ||
  fail "replica A's direct connection to the writer is not over ${E2E_NAT_TRANSPORT:-tcp} to nat1's port 4011: $addresses"
grep -q "hole punching succeeded" "$work/replica_a.log" "$work/writer.log" ||
  fail "no hole punching: the connection should have started relayed (nothing reaches a home unsolicited)"
relayed=$(($(relay_bytes) - relay_before))
echo "the connection began relayed and was upgraded by hole punching; the relay's interfaces moved $relayed bytes while replica A mirrored and pulled a ${layer_size}-byte layer"
[ "$relayed" -lt "$layer_size" ] || fail "the relay moved $relayed bytes: the layer crossed it"

say "the writer stops; replica B behind nat3 pulls from replica A"
kill -9 "$pid_writer"
start replica_b home3 --follow "$name" "${bootstrap[@]}"
wait_for 60 "replica B did not resolve the name (the writer is stopped: from the DHT or replica A)" \
  json_is '[f["root"] for f in s["followed"]] == ["'"$root"'"]' replica_b yes
pull "replica B" home3
connection=$(json '[c["connection"] for c in s["connections"] if c["peer"] == "'"$replica_a_id"'"]' replica_b)
[ "$connection" = "['direct']" ] || fail "replica B is not directly connected to replica A: $connection"
echo "replica B's connection to replica A: direct"

say "replica C behind a symmetric NAT: no hole can be punched, and it says so"
start replica_c home4 --follow "$name" "${bootstrap[@]}"
wait_for 60 "replica C did not resolve the name" \
  json_is '[f["root"] for f in s["followed"]] == ["'"$root"'"]' replica_c yes
# The pull runs in the background: `status` is read while replica C tries, since a relayed
# connection lasts only until the relay's limits close it.
in_host home4 timeout 300 skopeo copy --quiet --src-tls-verify=false \
  docker://127.0.0.1:5000/nat/app:v1 "oci:$work/out_c:v1" 2>"$work/skopeo_c.err" &
pull_c=$!
relayed_now() {
  json '[c["peer"] for c in s["connections"] if c["connection"] == "relayed" and not c["blocks"]]' replica_c |
    grep -q "$replica_a_id"
}
wait_for 60 "replica C never showed replica A as connected only through a relay" relayed_now
echo "replica C's status while it tries:"
"$bin" --data-dir "$work/replica_c" status | sed -n '/^peers/,/^public DHT/p'
if wait "$pull_c"; then
  fail "replica C pulled through a symmetric NAT: over a relay?"
fi
echo "skopeo's error: $(tail -n 1 "$work/skopeo_c.err")"
grep -q "connected only through a relay" "$work/replica_c.log" || fail "replica C's log does not say why"
grep -q "block not fetched: these peers are (or were, until the relay closed the circuit) connected only through a relay" "$work/replica_c.log" ||
  fail "replica C's log does not say why the block was not fetched"
grep -m 1 "block not fetched" "$work/replica_c.log" | sed 's/.*WARN/WARN/' | cut -c1-400

echo
echo "e2e-nat: passed"
