#!/usr/bin/env bash
# Checks that scripts/netlab.sh builds the network it promises, with python3 sockets in the lab's
# namespaces: in an `internet` lab (--nat eim --nat symmetric --nat eim) public hosts reach each
# other, a home host reaches a public one through its NAT, nothing from the public side reaches a
# home host or its router's private side, one UDP socket behind `eim` keeps one public port
# whatever the destination while behind `symmetric` it gets a new one per destination, and two
# home hosts behind `eim` routers punch a UDP hole to each other; in a
# `lan` lab multicast (mDNS's group) goes from one host to another; `run` returns its command's
# status and removes the lab also when the command fails or the script is killed; `up` refuses
# to run without root.
#
# usage: scripts/netlab-selftest.sh   (needs root, iproute2, iptables, python3)
set -euo pipefail
cd "$(dirname "$0")/.."

netlab=scripts/netlab.sh
tag=$(($$ % 100000))
inet=nlst$tag
lan=nlsl$tag
work=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for lab in "$inet" "$lan" "nlsr$tag" "nlsk$tag"; do "$netlab" down "$lab" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '== %s\n' "$*"; }
fail() {
  echo "FAIL: $*" >&2
  for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; } >&2; done
  exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (network namespaces)"
for tool in ip iptables python3; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed"
done

in_lab() {
  local lab=$1 host=$2
  shift 2
  "$netlab" exec "$lab" "$host" -- "$@"
}

# listen LAB HOST PROTO PORT NAME: a python3 listener in HOST that accepts one TCP connection
# (or one UDP datagram) and writes the peer's "address port" to $work/NAME; waits until bound.
listen() {
  local lab=$1 host=$2 proto=$3 port=$4 name=$5
  in_lab "$lab" "$host" python3 - "$proto" "$port" "$work/$name" >"$work/$name.log" 2>&1 <<'EOF' &
import socket, sys
proto, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
if proto == "tcp":
    s.listen(8)
open(out + ".ready", "w").close()
s.settimeout(30)
if proto == "tcp":
    conn, peer = s.accept()
else:
    _, peer = s.recvfrom(100)
with open(out + ".tmp", "w") as f:
    f.write("%s %d\n" % peer)
import os
os.rename(out + ".tmp", out)
EOF
  pids+=($!)
  for _ in $(seq 1 100); do
    [ -e "$work/$name.ready" ] && return 0
    sleep 0.05
  done
  fail "the $proto listener $name in $host did not start"
}

# got NAME: the "address port" a listener saw, waiting for it (at most 5 s).
got() {
  for _ in $(seq 1 100); do
    [ -s "$work/$1" ] && { cat "$work/$1"; return 0; }
    sleep 0.05
  done
  fail "listener $1 saw nothing"
}

# connect LAB HOST ADDR PORT: succeeds when a TCP connection from HOST opens within 3 s.
connect() {
  in_lab "$1" "$2" python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
s.close()' "$3" "$4" 2>/dev/null
}

# udp_from_one_socket LAB HOST LOCAL_PORT PORT ADDR...: one UDP socket bound to LOCAL_PORT sends
# a datagram to PORT on each ADDR.
udp_from_one_socket() {
  local lab=$1 host=$2 local_port=$3 port=$4
  shift 4
  in_lab "$lab" "$host" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
for addr in sys.argv[3:]:
    s.sendto(b"hello", (addr, int(sys.argv[2])))' "$local_port" "$port" "$@"
}

step "--help explains"
"$netlab" --help | grep 'up LAB internet' >/dev/null || fail "--help does not describe the internet topology"

step "up $inet internet --nat eim --nat symmetric --nat eim"
"$netlab" up "$inet" internet --nat eim --nat symmetric --nat eim
[ "$("$netlab" hosts "$inet" | sort | tr '\n' ' ')" = "home1 home2 home3 nat1 nat2 nat3 pub1 pub2 pub3 " ] ||
  fail "hosts: $("$netlab" hosts "$inet" | tr '\n' ' ')"
[ "$("$netlab" addr "$inet" pub2)" = 198.51.100.12 ] || fail "pub2's address"
[ "$("$netlab" addr "$inet" nat2)" = 198.51.100.22 ] || fail "nat2's address"
[ "$("$netlab" addr "$inet" home1)" = 10.101.0.2 ] || fail "home1's address"
[ "$("$netlab" ns "$inet" home1)" = "$inet-home1" ] || fail "home1's namespace"
[ -e "/run/netns/$inet-home1" ] || fail "no /run/netns/$inet-home1"

step "public hosts reach each other (TCP pub1 -> pub3)"
listen "$inet" pub3 tcp 7000 pub3-tcp
connect "$inet" pub1 198.51.100.13 7000 || fail "pub1 cannot reach pub3"
[ "$(got pub3-tcp | cut -d' ' -f1)" = 198.51.100.11 ] || fail "pub3 saw $(got pub3-tcp), not pub1"

step "home1 reaches pub1 (TCP), seen from nat1's public address"
listen "$inet" pub1 tcp 7001 pub1-tcp
connect "$inet" home1 198.51.100.11 7001 || fail "home1 cannot reach pub1"
[ "$(got pub1-tcp | cut -d' ' -f1)" = 198.51.100.21 ] || fail "pub1 saw $(got pub1-tcp), not nat1"

step "nothing from the public side reaches home1 or nat1's private side"
listen "$inet" home1 tcp 7002 home1-tcp
connect "$inet" pub1 10.101.0.2 7002 && fail "pub1 reached home1 with no route at all"
connect "$inet" pub1 198.51.100.21 7002 && fail "pub1 reached home1 through nat1's public address (a port forward?)"
# A public host that routes private addresses to the router (an upstream that misbehaves) is
# still stopped by the router's firewall.
in_lab "$inet" pub1 ip route add 10.101.0.0/24 via 198.51.100.21
connect "$inet" pub1 10.101.0.2 7002 && fail "pub1 reached home1 through nat1 unsolicited"
listen "$inet" nat1 tcp 7003 nat1-tcp
connect "$inet" pub1 10.101.0.1 7003 && fail "pub1 reached nat1's private side"
in_lab "$inet" pub1 ip route del 10.101.0.0/24 via 198.51.100.21
# The listeners were there all along: they answer from the private side.
connect "$inet" home1 10.101.0.1 7003 || fail "nat1's listener is not reachable from home1"
connect "$inet" nat1 10.101.0.2 7002 || fail "home1's listener is not reachable from nat1"
[ "$(got home1-tcp | cut -d' ' -f1)" = 10.101.0.1 ] || fail "home1's first connection was $(got home1-tcp)"

step "behind eim one UDP socket keeps one public port towards every destination"
for i in 1 2 3; do listen "$inet" "pub$i" udp 7100 "eim-pub$i"; done
udp_from_one_socket "$inet" home1 40001 7100 198.51.100.11 198.51.100.12 198.51.100.13
for i in 1 2 3; do
  [ "$(got "eim-pub$i")" = "198.51.100.21 40001" ] || fail "pub$i saw $(got "eim-pub$i"), not 198.51.100.21 40001"
done

step "behind symmetric one UDP socket gets a new public port per destination"
for i in 1 2 3; do listen "$inet" "pub$i" udp 7200 "sym-pub$i"; done
udp_from_one_socket "$inet" home2 40002 7200 198.51.100.11 198.51.100.12 198.51.100.13
seen=()
for i in 1 2 3; do
  [ "$(got "sym-pub$i" | cut -d' ' -f1)" = 198.51.100.22 ] || fail "pub$i saw $(got "sym-pub$i"), not nat2"
  seen+=("$(got "sym-pub$i" | cut -d' ' -f2)")
done
echo "   ports seen: ${seen[*]}"
# Three random ports could collide by chance; all three being equal is a 1 in ~10^9 event.
[ "${seen[0]}" = "${seen[1]}" ] && [ "${seen[1]}" = "${seen[2]}" ] &&
  fail "pub1..3 all saw port ${seen[0]}: the mapping does not depend on the destination"

step "home1 and home3 (both behind eim) punch a UDP hole to each other"
# Each side sends from one bound socket to the other's public address until it hears from the
# other: the first datagrams open each router's mapping, later ones pass as replies.
punch() {
  in_lab "$inet" "$1" python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
peer = (sys.argv[2], int(sys.argv[3]))
s.settimeout(0.1)
heard, heard_at = None, None
deadline = time.monotonic() + 10
# Keep sending for a second after hearing, so that the other side hears too.
while time.monotonic() < deadline and (heard_at is None or time.monotonic() < heard_at + 1):
    s.sendto(b"punch", peer)
    try:
        _, frm = s.recvfrom(100)
        if heard is None:
            heard, heard_at = frm, time.monotonic()
    except socket.timeout:
        pass
with open(sys.argv[4], "w") as f:
    f.write("%s %d\n" % heard if heard else "nothing\n")' "$2" "$3" "$4" "$work/$5"
}
punch home1 40010 198.51.100.23 40030 punch1 &
p1=$!
punch home3 40030 198.51.100.21 40010 punch3 &
p3=$!
pids+=("$p1" "$p3")
wait "$p1" || fail "home1's puncher failed"
wait "$p3" || fail "home3's puncher failed"
[ "$(cat "$work/punch1")" = "198.51.100.23 40030" ] || fail "home1 heard $(cat "$work/punch1"), not nat3:40030"
[ "$(cat "$work/punch3")" = "198.51.100.21 40010" ] || fail "home3 heard $(cat "$work/punch3"), not nat1:40010"

step "up again replaces the stale lab"
"$netlab" up "$inet" internet --nat eim
[ "$("$netlab" hosts "$inet" | sort | tr '\n' ' ')" = "home1 nat1 pub1 pub2 pub3 " ] ||
  fail "after a second up: $("$netlab" hosts "$inet" | tr '\n' ' ')"
"$netlab" down "$inet"
"$netlab" down "$inet"
[ -z "$(ip netns list | grep "^$inet-" || true)" ] || fail "down left namespaces"

step "up $lan lan 2: multicast from h1 reaches h2 (224.0.0.251:5353)"
"$netlab" up "$lan" lan 2
ip -n "$lan-sw" -d link show br0 | grep 'mcast_snooping 0' >/dev/null || fail "the bridge snoops multicast"
h1=$("$netlab" addr "$lan" h1)
h2=$("$netlab" addr "$lan" h2)
in_lab "$lan" h2 python3 - "$h2" "$work/mcast" >"$work/mcast.log" 2>&1 <<'EOF' &
import os, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("224.0.0.251", 5353))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4s", socket.inet_aton("224.0.0.251"), socket.inet_aton(sys.argv[1])))
open(sys.argv[2] + ".ready", "w").close()
s.settimeout(30)
data, peer = s.recvfrom(100)
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write("%s %s\n" % (peer[0], data.decode()))
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
EOF
pids+=($!)
for _ in $(seq 1 100); do [ -e "$work/mcast.ready" ] && break; sleep 0.05; done
[ -e "$work/mcast.ready" ] || fail "the multicast receiver did not start"
# The group membership report goes out asynchronously; send a few times until one arrives.
for _ in $(seq 1 20); do
  in_lab "$lan" h1 python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
s.sendto(b"hello-mdns", ("224.0.0.251", 5353))'
  [ -s "$work/mcast" ] && break
  sleep 0.1
done
[ "$(got mcast)" = "$h1 hello-mdns" ] || fail "h2 got $(got mcast)"
"$netlab" down "$lan"

step "run: the command's status, NETLAB set, the lab removed after a failing command"
status=0
"$netlab" run "nlsr$tag" lan 1 -- sh -c '[ -e "/run/netns/$NETLAB-h1" ] && exit 7' || status=$?
[ "$status" = 7 ] || fail "run returned $status, not the command's 7"
[ -z "$(ip netns list | grep "^nlsr$tag-" || true)" ] || fail "run left namespaces"

step "run: SIGTERM removes the lab"
"$netlab" run "nlsk$tag" lan 1 -- sleep 60 &
runner=$!
pids+=("$runner")
for _ in $(seq 1 100); do [ -e "/run/netns/nlsk$tag-h1" ] && break; sleep 0.05; done
[ -e "/run/netns/nlsk$tag-h1" ] || fail "run did not bring the lab up"
kill -TERM "$runner"
status=0
wait "$runner" || status=$?
[ "$status" = 143 ] || fail "run killed returned $status"
[ -z "$(ip netns list | grep "^nlsk$tag-" || true)" ] || fail "a killed run left namespaces"

step "up refuses without root"
# The unprivileged user may not enter the checkout (a fresh clone in a 0700 mktemp directory):
# it runs a copy from a directory it can read.
unprivileged=$(mktemp -d)
chmod 755 "$unprivileged"
install -m 755 "$netlab" "$unprivileged/netlab.sh"
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$unprivileged/netlab.sh" up "nlsr$tag" lan 1 2>&1) &&
  fail "up ran without root"
rm -rf "$unprivileged"
grep -q 'needs root' <<<"$out" || fail "without root: $out"

echo "netlab self-test: OK"
