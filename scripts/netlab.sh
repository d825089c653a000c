#!/usr/bin/env bash
# A small internet in network namespaces, for tests: a LAN of hosts on one bridge, or a public
# network with hosts behind NAT routers. Everything lives in namespaces named LAB-<host>; the
# machine's own (root) namespace gets no interface, route or firewall rule. See --help.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: netlab.sh COMMAND ...

A small internet made of network namespaces (needs root and iproute2's `ip`; the `internet`
topology also needs `iptables`). Every namespace of a lab is named LAB-<host>; nothing is
created in the machine's own network namespace. LAB: 1-16 characters [a-z0-9].

Commands:
  up LAB lan N [--subnet X]
      N hosts h1..hN (1 <= N <= 250) at 10.X.0.1..N/24, all on one bridge (in namespace
      LAB-sw) that floods multicast (IGMP snooping off, so mDNS on 224.0.0.251 works).
      X defaults to a number 10..99 derived from LAB.
  up LAB internet [--nat eim|symmetric]...
      A public network 198.51.100.0/24 on a bridge (namespace LAB-pub) with hosts pub1..pub3
      at 198.51.100.11..13, and one NAT router natI per --nat option (default: two eim):
      public leg 198.51.100.(20+I), private leg 10.(100+I).0.1/24, with one host homeI at
      10.(100+I).0.2 behind it (default route via the router).
        eim        MASQUERADE: the source port is kept when it can be, so one local socket has
                   one public mapping whatever the destination (endpoint-independent mapping;
                   hole punching works)
        symmetric  MASQUERADE --random-fully: a new random port per destination
      No port forwards, and the router drops new connections from its public side (forwarded
      or to itself): nothing reaches a home host unless it spoke first.
  exec LAB HOST -- CMD...   runs CMD in HOST's namespace (ip netns exec)
  ns LAB HOST               prints HOST's namespace name (its file is /run/netns/NAME)
  addr LAB HOST             prints HOST's IPv4 address (a router's: its public one)
  hosts LAB                 prints the lab's hosts, one a line
  down LAB                  removes every namespace of LAB (and so every interface); idempotent
  run LAB TOPOLOGY [OPTS] -- CMD...
      up LAB TOPOLOGY OPTS, runs CMD in the root namespace with NETLAB=LAB in its environment,
      then down LAB whatever happens; exits with CMD's status.

A stale lab of the same name is removed by `up` first; a failed or interrupted `up` removes what
it made.

examples:
  scripts/netlab.sh up demo lan 2
  scripts/netlab.sh exec demo h1 -- ip -br addr
  scripts/netlab.sh down demo
  scripts/netlab.sh run t1 internet --nat eim --nat symmetric -- ./my-test.sh
EOF
}

die() {
  echo "netlab: $*" >&2
  exit 1
}

check_lab() {
  [[ $1 =~ ^[a-z0-9]{1,16}$ ]] || die "bad lab name '$1' (1-16 characters [a-z0-9])"
}

check_host() {
  [[ $1 =~ ^[a-z0-9]{1,16}$ ]] || die "bad host name '$1'"
}

need_root_and_ip() {
  [ "$(id -u)" = 0 ] || die "needs root (it creates network namespaces)"
  command -v ip >/dev/null 2>&1 || die "iproute2's 'ip' is not installed"
}

# The lab's namespaces, from `ip netns list` (host names hold no '-', so LAB 'a' never matches
# lab 'a1' or anything else's namespaces).
lab_namespaces() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$1-[a-z0-9]+\$" || true
}

cmd_down() {
  local lab=$1 ns
  check_lab "$lab"
  # Deleting a namespace deletes its interfaces, and with each veth end its peer.
  for ns in $(lab_namespaces "$lab"); do
    ip netns del "$ns" 2>/dev/null || true
  done
}

# ns_add NAME: a namespace with loopback up and forwarding off (as a host has it).
ns_add() {
  ip netns add "$1"
  ip -n "$1" link set lo up
}

# link HOST_NS HOST_IF PEER_NS PEER_IF: a veth pair made directly inside the two namespaces (it
# never exists in the root namespace, so its names only have to be unique per namespace).
link() {
  ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
  ip -n "$1" link set "$2" up
  ip -n "$3" link set "$4" up
}

# bridge_add NS: a bridge br0 that floods multicast (no IGMP snooping: there is no querier, and
# a snooping bridge would drop mDNS between hosts that have not reported membership).
bridge_add() {
  ip -n "$1" link add br0 type bridge mcast_snooping 0 stp_state 0
  ip -n "$1" link set br0 up
}

up_lan() {
  local lab=$1
  shift
  [ $# -ge 1 ] || die "usage: up LAB lan N [--subnet X]"
  local n=$1
  shift
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 250 ] || die "lan N: N must be 1..250"
  local x=$(($(printf '%s' "$lab" | cksum | cut -d' ' -f1) % 90 + 10))
  while [ $# -gt 0 ]; do
    case $1 in
      --subnet)
        [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -le 255 ] || die "--subnet takes 0..255"
        x=$2
        shift 2
        ;;
      *) die "unknown option for lan: $1" ;;
    esac
  done
  local sw=$lab-sw i
  ns_add "$sw"
  bridge_add "$sw"
  for i in $(seq 1 "$n"); do
    local ns=$lab-h$i
    ns_add "$ns"
    link "$ns" eth0 "$sw" "h$i"
    ip -n "$sw" link set "h$i" master br0
    ip -n "$ns" addr add "10.$x.0.$i/24" dev eth0
    # One subnet and no gateway; multicast needs a route to leave by eth0.
    ip -n "$ns" route add 224.0.0.0/4 dev eth0
  done
}

up_internet() {
  local lab=$1
  shift
  local nats=()
  while [ $# -gt 0 ]; do
    case $1 in
      --nat)
        [ $# -ge 2 ] || die "--nat takes eim or symmetric"
        case $2 in
          eim | symmetric) nats+=("$2") ;;
          *) die "--nat takes eim or symmetric, not '$2'" ;;
        esac
        shift 2
        ;;
      *) die "unknown option for internet: $1" ;;
    esac
  done
  [ ${#nats[@]} -gt 0 ] || nats=(eim eim)
  [ ${#nats[@]} -le 50 ] || die "at most 50 NAT routers"
  command -v iptables >/dev/null 2>&1 || die "'iptables' is not installed (apt-get install iptables)"
  local pub=$lab-pub i
  ns_add "$pub"
  bridge_add "$pub"
  for i in 1 2 3; do
    local ns=$lab-pub$i
    ns_add "$ns"
    link "$ns" eth0 "$pub" "pub$i"
    ip -n "$pub" link set "pub$i" master br0
    ip -n "$ns" addr add "198.51.100.$((10 + i))/24" dev eth0
  done
  for i in $(seq 1 ${#nats[@]}); do
    local kind=${nats[$((i - 1))]} nat=$lab-nat$i home=$lab-home$i
    ns_add "$nat"
    ns_add "$home"
    link "$nat" wan "$pub" "nat$i"
    ip -n "$pub" link set "nat$i" master br0
    ip -n "$nat" addr add "198.51.100.$((20 + i))/24" dev wan
    link "$nat" lan "$home" eth0
    ip -n "$nat" addr add "10.$((100 + i)).0.1/24" dev lan
    ip -n "$home" addr add "10.$((100 + i)).0.2/24" dev eth0
    ip -n "$home" route add default via "10.$((100 + i)).0.1"
    # /proc/sys/net is the reading process's namespace's (and procps' sysctl may be missing).
    ip netns exec "$nat" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
    local masquerade=(-j MASQUERADE)
    [ "$kind" = symmetric ] && masquerade+=(--random-fully)
    ip netns exec "$nat" iptables -t nat -A POSTROUTING -o wan "${masquerade[@]}"
    # A home router's firewall: from the public side only replies to what was sent out.
    ip netns exec "$nat" iptables -P FORWARD DROP
    ip netns exec "$nat" iptables -A FORWARD -i lan -o wan -j ACCEPT
    ip netns exec "$nat" iptables -A FORWARD -i wan -o lan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    ip netns exec "$nat" iptables -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    ip netns exec "$nat" iptables -A INPUT -i wan -j DROP
  done
}

# lab_up LAB TOPOLOGY [OPTS]: build the lab; the caller's traps remove it if this fails.
lab_up() {
  [ $# -ge 2 ] || die "usage: up LAB lan N | up LAB internet [--nat eim|symmetric]... (see --help)"
  local lab=$1 topology=$2
  shift 2
  check_lab "$lab"
  need_root_and_ip
  case $topology in
    lan | internet) ;;
    *) die "unknown topology '$topology' (lan or internet)" ;;
  esac
  cmd_down "$lab"
  "up_$topology" "$lab" "$@"
}

cmd_up() {
  [ $# -ge 1 ] || die "usage: up LAB lan N | up LAB internet [--nat eim|symmetric]... (see --help)"
  check_lab "$1"
  # A failed or interrupted `up` leaves nothing behind. (LAB is expanded now: a `set -e` exit
  # runs the trap after this function's locals are gone; LAB is [a-z0-9], safe unquoted.)
  trap "cmd_down $1" EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  lab_up "$@"
  trap - EXIT INT TERM
}

# ns_of LAB HOST: the namespace of an existing host, or a clear error.
ns_of() {
  check_lab "$1"
  check_host "$2"
  local ns=$1-$2
  [ -e "/run/netns/$ns" ] || die "no host '$2' in lab '$1' (is it up? try: netlab.sh hosts $1)"
  printf '%s\n' "$ns"
}

cmd_addr() {
  [ $# -eq 2 ] || die "usage: addr LAB HOST"
  local ns dev=eth0
  ns=$(ns_of "$1" "$2")
  [[ $2 =~ ^nat[0-9]+$ ]] && dev=wan
  ip -n "$ns" -4 -o addr show dev "$dev" | awk '{split($4, a, "/"); print a[1]; exit}'
}

cmd_exec() {
  [ $# -ge 4 ] && [ "$3" = -- ] || die "usage: exec LAB HOST -- CMD..."
  local ns
  ns=$(ns_of "$1" "$2")
  shift 3
  exec ip netns exec "$ns" "$@"
}

# on_run_signal STATUS: a signal to `run`: exit now if CMD has not started, else pass it on.
on_run_signal() {
  [ -n "$child" ] || exit "$1"
  kill -TERM "$child" 2>/dev/null || true
  signalled=$1
}

cmd_run() {
  [ $# -ge 2 ] || die "usage: run LAB TOPOLOGY [OPTS] -- CMD..."
  local lab=$1 args=()
  check_lab "$lab"
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    args+=("$1")
    shift
  done
  [ $# -ge 2 ] || die "usage: run LAB TOPOLOGY [OPTS] -- CMD..."
  shift
  # The traps stand from before the lab is built until the script ends, so that no signal finds
  # a moment without them: one before CMD runs ends the script (the EXIT trap removes the lab),
  # one after goes to CMD first.
  child=
  signalled=
  trap "cmd_down $lab" EXIT
  trap 'on_run_signal 130' INT
  trap 'on_run_signal 143' TERM
  lab_up "$lab" "${args[@]}"
  # CMD runs in the background (its standard input kept) so that a SIGTERM to this script is
  # handled at once: bash would run the trap only after a foreground CMD ended by itself.
  NETLAB=$lab "$@" <&0 &
  child=$!
  local status=0
  wait "$child" || status=$?
  if [ -n "$signalled" ]; then
    # A trapped signal ends `wait` early: let CMD finish dying before the lab goes.
    wait "$child" 2>/dev/null || true
    exit "$signalled"
  fi
  exit "$status"
}

[ $# -ge 1 ] || {
  usage >&2
  exit 2
}
command=$1
shift
case $command in
  -h | --help | help) usage ;;
  up) cmd_up "$@" ;;
  down)
    [ $# -eq 1 ] || die "usage: down LAB"
    command -v ip >/dev/null 2>&1 || die "iproute2's 'ip' is not installed"
    cmd_down "$1"
    ;;
  exec) cmd_exec "$@" ;;
  ns)
    [ $# -eq 2 ] || die "usage: ns LAB HOST"
    ns_of "$1" "$2"
    ;;
  addr) cmd_addr "$@" ;;
  hosts)
    [ $# -eq 1 ] || die "usage: hosts LAB"
    check_lab "$1"
    lab_namespaces "$1" | sed "s/^$1-//" | grep -vxE "sw|pub" || true
    ;;
  run) cmd_run "$@" ;;
  *) die "unknown command '$command' (see --help)" ;;
esac
