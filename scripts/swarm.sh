#!/usr/bin/env bash
# Many replicas pulling one blob at once (issue 12): 1 writer and N replicas, each in its own
# network namespace on one bridge (scripts/netlab.sh, lab "swarm"), every host's link shaped with
# tc to RATE Mbit/s in each direction. See usage below.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/swarm.sh [--bin PATH] [--json PATH] [--keep-logs] [N] [RATE_MBIT] [BLOB_MIB]

Needs root, iproute2 (ip, tc), iptables, curl, python3. Defaults: N=8 replicas, RATE_MBIT=200,
BLOB_MIB=64.

  1. Builds lab "swarm" (scripts/netlab.sh): hosts h1 (the writer) .. h(N+1) on one bridge. Each
     host's link is shaped to RATE Mbit/s both ways: a tbf on eth0 inside the host (egress) and
     one on the bridge's port to it (the host's ingress). The shaping is measured once (TCP
     from h1 to h2, and for N >= 2 from h1 to h2+h3 and from h2+h3 to h1: each must reach
     roughly RATE in total, not 2x).
  2. The writer gets one blob of BLOB_MIB random MiB and a manifest pushed by curl (swarm/bench:v1).
  3. Lone run: one replica (h2, --follow NAME --peer WRITER --no-mdns) waits for the root, then
     GETs the blob cold. Its data directory is removed afterwards.
  4. Swarm run: N fresh replicas h2..h(N+1), each with --peer for the writer and every other
     replica, wait until each holds the root and is connected to all N others, then all N GET
     the blob at the same moment (released by one file appearing), cold. Each body goes to a
     file; its SHA-256 is checked after all GETs have ended, so the check takes no CPU from the
     nodes while they run.
  Per replica: curl's time, and the bytes its eth0 received from the writer and from peers
  (iptables counters in its namespace: IP bytes, headers included), plus the Bitswap block bytes
  it served to peers (its /metrics). The writer's egress is the tx bytes of its eth0.

Prints a table (per replica: seconds, MiB received from the writer and from peers, all bytes in
as a multiple of the blob, Bitswap block MiB it served to peers) and summary lines (the writer's
egress as a multiple of the blob, slowest replica / lone replica, the lone replica's link use:
blob bits / time / RATE), and writes JSON (default target/bench/swarm-N.json). A replica whose
GET fails (status, size or digest) is listed as FAILED with the node's error in the JSON, and
the script then exits 1.
Everything (namespaces, processes, temp dirs) is removed on exit, also on failure or ctrl-c;
--keep-logs keeps the temp dir (node logs) and prints its path.

  --bin PATH     the ipns-registry binary (default target/release/ipns-registry, built with
                 `cargo build --release --locked` if missing)
  --json PATH    where to write the JSON report
  --keep-logs    keep the node logs
EOF
}

die() {
  echo "swarm: $*" >&2
  exit 1
}

cd "$(dirname "$0")/.."
root_dir=$(pwd)
netlab=$root_dir/scripts/netlab.sh
lab=swarm

bin=
json_out=
keep_logs=
positional=()
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --bin) [ $# -ge 2 ] || die "--bin takes a path"; bin=$2; shift 2 ;;
    --json) [ $# -ge 2 ] || die "--json takes a path"; json_out=$2; shift 2 ;;
    --keep-logs) keep_logs=1; shift ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ ${#positional[@]} -le 3 ] || die "too many arguments (see --help)"
n=${positional[0]:-8}
rate=${positional[1]:-200}
blob_mib=${positional[2]:-64}
[[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 64 ] || die "N must be 1..64"
[[ $rate =~ ^[0-9]+$ ]] && [ "$rate" -ge 1 ] && [ "$rate" -le 10000 ] || die "RATE_MBIT must be 1..10000"
[[ $blob_mib =~ ^[0-9]+$ ]] && [ "$blob_mib" -ge 1 ] && [ "$blob_mib" -le 4096 ] || die "BLOB_MIB must be 1..4096"
[ -n "$json_out" ] || json_out=target/bench/swarm-$n.json

[ "$(id -u)" = 0 ] || die "needs root (it creates network namespaces)"
for tool in ip tc iptables curl python3 sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not installed"
done

if [ -z "$bin" ]; then
  bin=target/release/ipns-registry
  if [ ! -x "$bin" ]; then
    echo "== building $bin (cargo build --release --locked)"
    cargo build --release --locked --bin ipns-registry
  fi
fi
[ -x "$bin" ] || die "no binary at $bin"
bin=$(realpath "$bin")

work=$(mktemp -d /tmp/swarm.XXXXXX)
pids=()
cleanup() {
  local status=$?
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  "$netlab" down "$lab" >/dev/null 2>&1 || true
  if [ -n "$keep_logs" ]; then echo "logs kept in $work"; else rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=$(date +%s)
say() { printf '== [%3ss] %s\n' "$(($(date +%s) - started))" "$*"; }
fail() {
  echo "swarm: FAIL: $*" >&2
  local log
  for log in "$work"/*.log; do
    [ -f "$log" ] || continue
    echo "--- last lines of $log" >&2
    tail -n 15 "$log" >&2
  done
  exit 1
}

ns() { printf '%s-%s' "$lab" "$1"; }
in_host() { ip netns exec "$(ns "$1")" "${@:2}"; }

# wait_for SECS DESCRIPTION CMD...: until CMD succeeds.
wait_for() {
  local secs=$1 what=$2
  shift 2
  local end=$(($(date +%s) + secs))
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || fail "$what (waited $secs s)"
    sleep 0.2
  done
}

# status_eval HOST EXPR, status_is HOST EXPR VALUE: questions to a node's status report.
. "$(dirname "$0")/node-status.sh"

# metric HOST NAME: a counter from the node's /metrics (0 when absent).
metric() {
  in_host "$1" curl -fsS http://127.0.0.1:5000/metrics 2>/dev/null |
    awk -v m="$2" '$1 == m { v = $2 } END { printf "%d\n", v + 0 }'
}

# link_bytes HOST rx|tx: the byte counter of the host's eth0.
link_bytes() {
  ip -n "$(ns "$1")" -s -j link show eth0 | python3 -c "import json,sys
print(json.load(sys.stdin)[0]['stats64']['$2']['bytes'])"
}

# ---------------------------------------------------------------------------------------------
say "lab '$lab': writer h1 + $n replicas, links shaped to $rate Mbit/s each way"
"$netlab" up "$lab" lan $((n + 1)) >/dev/null
hosts=()
for i in $(seq 1 $((n + 1))); do hosts+=("h$i"); done
addr() { "$netlab" addr "$lab" "$1"; }
writer_ip=$(addr h1)

# Bursts of 128 KiB let tbf pass the veth's 64 KiB GSO packets whole; the queue holds 25 ms.
shape() {
  tc -n "$1" qdisc add dev "$2" root tbf rate "${rate}mbit" burst 128kb latency 25ms
}
for h in "${hosts[@]}"; do
  shape "$(ns "$h")" eth0
  shape "$(ns sw)" "$h"
done

# The shaping, measured: TCP flows between hosts, each counted by its receiver (first and last
# byte on CLOCK_MONOTONIC, which all namespaces share), summed over flows running at once.
cat >"$work/tcp_recv.py" <<'EOF'
import socket, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(1)
print("ready", flush=True)
conn = srv.accept()[0]
total, first, last = 0, None, None
while True:
    data = conn.recv(1 << 20)
    if not data:
        break
    last = time.monotonic()
    first = first or last
    total += len(data)
print(total, first, last)
EOF
cat >"$work/tcp_send.py" <<'EOF'
import socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port))
buf = b"\0" * (1 << 16)
while count > 0:
    s.sendall(buf[: min(count, len(buf))])
    count -= len(buf)
s.close()
EOF
# measure_mbit FROM:TO...: Mbit/s of all these flows together (1.5 s worth of RATE in all).
measure_mbit() {
  local bytes=$((rate * 1000000 / 8 * 3 / 2 / $#)) port=5990 flow flows=() outs=()
  for flow in "$@"; do
    port=$((port + 1))
    in_host "${flow#*:}" python3 "$work/tcp_recv.py" $port >"$work/recv.$port" &
    flows+=($!)
    pids+=($!)
    outs+=("$work/recv.$port")
    wait_for 10 "the shaping check's receiver did not start" grep -qs ready "$work/recv.$port"
  done
  port=5990
  for flow in "$@"; do
    port=$((port + 1))
    in_host "${flow%%:*}" python3 "$work/tcp_send.py" "$(addr "${flow#*:}")" $port $bytes &
    flows+=($!)
    pids+=($!)
  done
  for flow in "${flows[@]}"; do wait "$flow" || fail "shaping check: a flow failed"; done
  tail -q -n 1 "${outs[@]}" | awk '{ b += $1; if (f == "" || $2 < f) f = $2; if ($3 > l) l = $3 }
    END { printf "%d\n", b * 8 / (l - f) / 1e6 }'
}
shaping_json=()
# check_shaping WHAT FROM:TO...: the flows together must reach about RATE, not more (or twice).
check_shaping() {
  local what=$1 mbit
  shift
  mbit=$(measure_mbit "$@")
  echo "   $what: $mbit Mbit/s"
  [ "$mbit" -ge $((rate * 70 / 100)) ] && [ "$mbit" -le $((rate * 110 / 100)) ] ||
    fail "shaping check '$what' gave $mbit Mbit/s, expected about $rate"
  shaping_json+=("{\"flows\": \"$what\", \"mbit\": $mbit}")
}
say "measuring the shaping once (TCP)"
check_shaping "h1 -> h2" h1:h2
if [ "$n" -ge 2 ]; then
  check_shaping "h1 -> h2 and h1 -> h3 at once (h1's egress)" h1:h2 h1:h3
  check_shaping "h2 -> h1 and h3 -> h1 at once (h1's ingress)" h2:h1 h3:h1
fi

# ---------------------------------------------------------------------------------------------
# start HOST LOGNAME ARGS...: `serve` in HOST, HTTP on the host's 127.0.0.1:5000, p2p on 4011.
start() {
  local host=$1 log=$2
  shift 2
  # `ip netns exec` becomes the node's process, so $! is the node.
  ip netns exec "$(ns "$host")" "$bin" --data-dir "$work/$host" serve --listen 127.0.0.1:5000 \
    --p2p-listen /ip4/0.0.0.0/tcp/4011 --no-mdns "$@" >"$work/$log.log" 2>&1 &
  pids+=($!)
  eval "pid_$host=$!"
  wait_for 30 "$host did not answer on its HTTP port" in_host "$host" curl -fs -o /dev/null http://127.0.0.1:5000/v2/
}
# stop HOST: SIGTERM, and wait for the node to end.
stop() {
  local pid
  eval "pid=\$pid_$1"
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
id_field() { "$bin" --data-dir "$work/$1" id --json | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
peer_addr() { printf '/ip4/%s/tcp/4011/p2p/%s' "$(addr "$1")" "$(id_field "$1" peer_id)"; }

say "writer h1: pushing one blob of $blob_mib MiB and a manifest (curl)"
"$bin" --data-dir "$work/h1" init --role writer >/dev/null 2>"$work/init.log"
name=$(id_field h1 ipns_name)
writer_addr=$(peer_addr h1)
start h1 writer
head -c $((blob_mib * 1024 * 1024)) /dev/urandom >"$work/blob"
blob_bytes=$(stat -c %s "$work/blob")
blob_hex=$(sha256sum "$work/blob" | cut -c1-64)
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$blob_hex" >"$work/config.json"
config_hex=$(sha256sum "$work/config.json" | cut -c1-64)
api=http://127.0.0.1:5000
repo=swarm/bench
# push_blob FILE HEX: POST an upload session, PUT the whole blob to it (monolithic).
push_blob() {
  local location
  location=$(in_host h1 curl -fsS -X POST -o /dev/null -w '%header{location}' "$api/v2/$repo/blobs/uploads/") ||
    fail "the writer opened no upload session"
  case $location in /*) location=$api$location ;; esac
  case $location in *\?*) location="$location&" ;; *) location="$location?" ;; esac
  in_host h1 curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$1" \
    -o /dev/null "${location}digest=sha256:$2" || fail "the blob upload failed"
}
push_blob "$work/blob" "$blob_hex"
push_blob "$work/config.json" "$config_hex"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
  "$config_hex" "$(stat -c %s "$work/config.json")" "$blob_hex" "$blob_bytes" >"$work/manifest.json"
in_host h1 curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary "@$work/manifest.json" -o /dev/null "$api/v2/$repo/manifests/v1" || fail "the manifest push failed"
root=$(status_eval h1 's["own"]["root"]')
wait_for 30 "the writer did not publish its root" status_is h1 's["own"]["published_root"]' "$root"
echo "   name $name, root $root, blob sha256:$blob_hex"

# replica_rules HOST: counters in HOST's namespace: IP bytes in from the writer, and in all.
replica_rules() {
  in_host "$1" iptables -w -A INPUT -i eth0 -s "$writer_ip"
  in_host "$1" iptables -w -A INPUT -i eth0
}
# input_bytes HOST: "FROM_WRITER ALL" from those counters.
input_bytes() {
  in_host "$1" iptables -w -nvxL INPUT | awk 'NR > 2 { b[++i] = $2 } END { print b[1], b[2] }'
}

# cpu_ticks HOST...: CPU time (user + system, clock ticks) the nodes of these hosts used so far.
cpu_ticks() {
  local h pid total=0
  for h in "$@"; do
    eval "pid=\$pid_$h"
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo "$total"
}

# round LABEL K: K fresh replicas h2..h(K+1) follow the name, hold the root, then GET the blob
# at once. Writes LABEL.tsv (one line a replica) and LABEL.writer (writer's egress counters).
round() {
  local label=$1 k=$2 i h p
  local replicas=()
  for i in $(seq 2 $((k + 1))); do replicas+=("h$i"); done
  for h in "${replicas[@]}"; do
    rm -rf "${work:?}/$h"
    "$bin" --data-dir "$work/$h" init --role replica >/dev/null 2>>"$work/init.log"
    in_host "$h" iptables -w -F INPUT
    replica_rules "$h"
  done
  local addrs=()
  for h in "${replicas[@]}"; do addrs+=("$(peer_addr "$h")"); done
  for h in "${replicas[@]}"; do
    local peer_args=(--peer "$writer_addr")
    for p in "${addrs[@]}"; do
      [[ $p == */$(addr "$h")/* ]] || peer_args+=(--peer "$p")
    done
    start "$h" "$label-$h" --follow "$name" "${peer_args[@]}"
  done
  for h in "${replicas[@]}"; do
    wait_for 120 "$h did not get the root" status_is "$h" '[f["root"] for f in s["followed"]]' "['$root']"
    wait_for 60 "$h is not connected to the writer and all $((k - 1)) other replicas" \
      status_is "$h" 'len([c for c in s["connections"] if c["blocks"]]) >= '"$k" yes
  done
  say "$label: $k replica(s) hold the root and are connected; all GET the blob at once"
  local writer_tx writer_sent
  writer_tx=$(link_bytes h1 tx)
  writer_sent=$(metric h1 ipns_registry_bitswap_sent_bytes_total)
  declare -A served_before received_before
  for h in "${replicas[@]}"; do
    in_host "$h" iptables -w -Z INPUT
    served_before[$h]=$(metric "$h" ipns_registry_bitswap_sent_bytes_total)
    received_before[$h]=$(metric "$h" ipns_registry_bitswap_received_bytes_total)
  done
  rm -f "$work/go"
  local getters=()
  for h in "${replicas[@]}"; do
    # Each waits for the same file, so that all start within a few ms of each other. The body
    # goes to a file, hashed once all GETs are done: hashing it on the way (curl | sha256sum)
    # took about a tenth of this machine's CPU from the nodes at 16 replicas.
    in_host "$h" bash -c 'while [ ! -e "$1" ]; do sleep 0.002; done
      curl -sS --max-time 900 -o "$4" -w "%{stderr}%{http_code} %{size_download} %{time_total}\n" "$2" 2>"$3"' \
      _ "$work/go" "$api/v2/$repo/blobs/sha256:$blob_hex" "$work/$label-$h.get" "$work/$label-$h.body" &
    getters+=($!)
    pids+=($!)
  done
  sleep 0.5
  local ticks_before go_ns
  ticks_before=$(cpu_ticks h1 "${replicas[@]}")
  go_ns=$(date +%s%N)
  touch "$work/go"
  for p in "${getters[@]}"; do wait "$p" || true; done
  # The CPU the nodes used while the GETs ran, against the wall time and the machine's cores:
  # on a small machine the swarm may be bound by CPU rather than by the links.
  printf '%s %s %s\n' $(($(cpu_ticks h1 "${replicas[@]}") - ticks_before)) "$(getconf CLK_TCK)" \
    $(($(date +%s%N) - go_ns)) >"$work/$label.cpu"
  : >"$work/$label.tsv"
  for h in "${replicas[@]}"; do
    local code size secs bytes got_hex=none ok=ok body=$work/$label-$h.body
    read -r code size secs < <(tail -n 1 "$work/$label-$h.get")
    touch "$body"
    [ "$code" != 200 ] || got_hex=$(sha256sum <"$body" | cut -c1-64)
    if [ "$code" != 200 ] || [ "$size" != "$blob_bytes" ] || [ "$got_hex" != "$blob_hex" ]; then
      # A failed GET is a result (the run goes on and exits 1 at the end), said here and in JSON;
      # an error's JSON says why.
      ok=failed
      echo "   $h's GET failed: $(tail -n 1 "$work/$label-$h.get"): $(head -c 300 "$body")"
      head -c 300 "$body" | tr '\n' ' ' >"$work/$label-$h.error"
    fi
    rm -f "$body"
    [ "$label" = swarm ] || [ "$ok" = ok ] || fail "the lone replica's GET failed: no baseline"
    bytes=$(input_bytes "$h")
    printf '%s %s %s %s %s %s\n' "$h" "$ok" "$secs" "$bytes" \
      $(($(metric "$h" ipns_registry_bitswap_sent_bytes_total) - ${served_before[$h]})) \
      $(($(metric "$h" ipns_registry_bitswap_received_bytes_total) - ${received_before[$h]})) >>"$work/$label.tsv"
  done
  printf '%s %s\n' $(($(link_bytes h1 tx) - writer_tx)) \
    $(($(metric h1 ipns_registry_bitswap_sent_bytes_total) - writer_sent)) >"$work/$label.writer"
  for h in "${replicas[@]}"; do stop "$h"; done
}

round lone 1
if [ "$n" -ge 2 ]; then round swarm "$n"; else for f in tsv writer cpu; do cp "$work/lone.$f" "$work/swarm.$f"; done; fi

# ---------------------------------------------------------------------------------------------
mkdir -p "$(dirname "$json_out")"
shaping=$(IFS=,; printf '[%s]' "${shaping_json[*]}")
python3 - "$work" "$json_out" "$n" "$rate" "$blob_mib" "$blob_bytes" "$shaping" "$("$bin" --version)" <<'EOF'
import json, os, sys, time
work, out, n, rate, blob_mib, blob, shaping, version = sys.argv[1:]
n, rate, blob_mib, blob = int(n), int(rate), int(blob_mib), int(blob)

def load(label):
    rows = []
    for line in open(f"{work}/{label}.tsv"):
        host, ok, secs, from_writer, total, served, received = line.split()
        error = None
        if ok != "ok":
            try:
                error = open(f"{work}/{label}-{host}.error").read()
            except OSError:
                error = "failed"
        rows.append({"host": host, "ok": ok == "ok", "error": error, "time_s": float(secs),
                     "bytes_from_writer": int(from_writer),
                     "bytes_from_peers": int(total) - int(from_writer),
                     "bytes_in_over_blob": int(total) / blob,
                     "bitswap_bytes_received": int(received),
                     "bitswap_bytes_served_to_peers": int(served)})
    tx, sent = open(f"{work}/{label}.writer").read().split()
    return rows, int(tx), int(sent)

def cpu(label):
    ticks, hz, wall_ns = map(int, open(f"{work}/{label}.cpu").read().split())
    wall = wall_ns / 1e9
    return {"node_cpu_s": ticks / hz, "wall_s": wall, "cores": os.cpu_count(),
            "machine_cpu_use": ticks / hz / wall / os.cpu_count()}

lone, lone_tx, lone_sent = load("lone")
swarm, tx, sent = load("swarm")
lone_s = lone[0]["time_s"]
done = [r["time_s"] for r in swarm if r["ok"]]
failed = [r["host"] for r in swarm if not r["ok"]]
slowest = max(done) if done else None
report = {
    "n": n, "rate_mbit": rate, "blob_mib": blob_mib, "blob_bytes": blob,
    "binary": version, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "shaping_checks": json.loads(shaping),
    "lone": {"time_s": lone_s, "link_use": blob * 8 / lone_s / (rate * 1e6),
             "writer_egress_bytes": lone_tx, "writer_bitswap_sent_bytes": lone_sent,
             "replica": lone[0], "cpu": cpu("lone")},
    "cpu": cpu("swarm"),
    "replicas": swarm,
    "writer_egress_bytes": tx,
    "writer_egress_x_blob": tx / blob,
    "writer_bitswap_sent_bytes": sent,
    "failed": failed,
    "slowest_s": slowest,
    "slowest_over_lone": slowest / lone_s if slowest else None,
}
json.dump(report, open(out, "w"), indent=2)

mib = lambda b: f"{b / 1048576:.1f}"
print()
print(f"{n} replicas, links {rate} Mbit/s each way, one blob of {blob_mib} MiB, all GET at once (IP bytes in, headers included):")
print(f"{'replica':>8} {'time s':>8} {'MiB from writer':>16} {'MiB from peers':>15} {'in / blob':>10} {'MiB served':>11}")
for r in swarm:
    t = f"{r['time_s']:.2f}" if r["ok"] else "FAILED"
    print(f"{r['host']:>8} {t:>8} {mib(r['bytes_from_writer']):>16} "
          f"{mib(r['bytes_from_peers']):>15} {r['bytes_in_over_blob']:>10.2f} "
          f"{mib(r['bitswap_bytes_served_to_peers']):>11}")
print()
print(f"writer egress:         {tx / blob:.2f}x the blob ({mib(tx)} MiB; Bitswap block bytes sent {sent / blob:.2f}x)")
if failed:
    print(f"failed GETs:           {len(failed)} of {n} ({', '.join(failed)}): see 'error' in the JSON")
if slowest:
    print(f"slowest / lone:        {slowest / lone_s:.2f} ({slowest:.2f} s / {lone_s:.2f} s)"
          + (" among the GETs that succeeded" if failed else ""))
print(f"lone replica link use: {report['lone']['link_use'] * 100:.0f}% ({blob_mib} MiB in {lone_s:.2f} s at {rate} Mbit/s)")
c = report["cpu"]
print(f"node CPU during GETs:  {c['node_cpu_s']:.1f} s in {c['wall_s']:.1f} s = "
      f"{c['machine_cpu_use'] * 100:.0f}% of the machine's {c['cores']} cores (lone run: "
      f"{report['lone']['cpu']['machine_cpu_use'] * 100:.0f}%)")
print(f"json: {out}")
sys.exit(1 if failed else 0)
EOF
