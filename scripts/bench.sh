#!/usr/bin/env bash
# Single-node performance, side by side with the reference registry (issue 11): our writer and
# Debian's docker-registry (CNCF distribution 2.8) on this machine, in one run, alternating
# A B A B, medians and ours/reference ratios; then replica figures (ours only) and the SHA-256
# floor. Prints one table and writes it as JSON. Loopback only; everything it starts and every
# temporary directory is removed on exit, also on failure or ctrl-c.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/bench.sh [options]

Benchmarks ipns-registry against the reference registry (Debian's docker-registry, CNCF
distribution 2.8) on this machine, in one run: both servers side by side, alternating
ours/reference, reporting medians, MB/s (10^6 bytes/s) and the ours/reference ratio.
Installs docker-registry, skopeo, wrk and curl with apt-get when missing (run as root then).

options:
  --bin PATH        ipns-registry binary to measure (default: target/release/ipns-registry,
                    built with `cargo build --release` when missing)
  --size-mib N      total size of the three random layers of the big image (default 600)
  --rounds N        rounds of push, pull and raw GET, each alternating ours/reference (default 3)
  --tiny N          tiny one-layer images, one repository each, for the manifest PUT
                    median and the disk figure (default 200)
  --wrk-seconds N   duration of each wrk run (-t2 -c32) (default 5)
  --replica-pushes N
                    pushes timed for the push-to-replica latency (default 10)
  --growth N        tiny images per phase of the growth run (scripts/growth.py): N into N
                    repositories, then N tags into one repository; 0 skips it (default 5000,
                    about 10 minutes for both servers)
  --quick           small sizes for a run of about three minutes: --size-mib 48 --rounds 2
                    --tiny 40 --wrk-seconds 2 --replica-pushes 5 --growth 300
  --json PATH       where to write the table as JSON (default target/bench/bench.json)
  --markdown PATH   also write the table as a markdown table (for the README)
  --keep            keep the work directory (images, data directories, logs) for inspection
  -h, --help        this text

Figures (ours | reference | ours/reference):
  push of the big image with skopeo from an OCI layout: wall time, MB/s, server CPU-seconds
  (utime+stime from /proc/PID/stat), each push to a freshly started server; peak RSS (VmHWM)
  over a push and idle RSS 5 s after the last one; a push of one blob the size of the largest
  layer as containerd, BuildKit and oras-go push (POST, then the whole blob in one PUT): wall
  time and server CPU-seconds; pull with skopeo into a fresh directory;
  raw GET of the largest layer with curl; wrk on /v2/, a manifest by tag and by digest;
  manifest PUT median for tiny images and the data directory's size after them (du -sb);
  cost as the registry grows: the median manifest PUT (and whole image push) of the last 100
  images over the first 100, into N repositories and then N tags of one repository, each
  server fresh, and the data directory's size after both phases.
  Ours only: push-to-replica latency (201 on the writer until the replica answers 200 for the
  tag), a fresh replica's cold pull (every block over Bitswap) and warm pull, a fresh replica's
  cold raw GET of the largest layer, and the SHA-256 floor (the sha2 crate the node uses,
  examples/sha256_floor.rs): CPU-seconds of two hash passes over the pushed bytes.
The machine's other load is not controlled: compare ratios from one run, not absolute figures.
EOF
}

repo_root=$(cd "$(dirname "$0")/.." && pwd)
bin=
size_mib=600
rounds=3
tiny=200
wrk_seconds=5
replica_pushes=10
growth=5000
json=
markdown=
keep=
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --size-mib) size_mib=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --tiny) tiny=$2; shift 2 ;;
    --wrk-seconds) wrk_seconds=$2; shift 2 ;;
    --replica-pushes) replica_pushes=$2; shift 2 ;;
    --growth) growth=$2; shift 2 ;;
    --quick) size_mib=48; rounds=2; tiny=40; wrk_seconds=2; replica_pushes=5; growth=300; shift ;;
    --json) json=$2; shift 2 ;;
    --markdown) markdown=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$size_mib" "$rounds" "$tiny" "$wrk_seconds" "$replica_pushes"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "not a positive number: $n" >&2; exit 2; }
done
[ "$size_mib" -ge 3 ] || { echo "--size-mib must be at least 3" >&2; exit 2; }
[[ $growth =~ ^[0-9]+$ ]] && { [ "$growth" = 0 ] || [ "$growth" -ge 200 ]; } ||
  { echo "--growth must be 0 or at least 200 (the first and last 100 are compared)" >&2; exit 2; }
json=${json:-${CARGO_TARGET_DIR:-$repo_root/target}/bench/bench.json}

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

# --- processes and cleanup ----------------------------------------------------------------------

work=
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$work" ]; then
    if [ -n "$keep" ]; then say "kept $work"; else rm -rf "$work"; fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# stop PID: ends one server this script started and forgets it.
stop() {
  local pid=$1 kept=() p
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${pids[@]}"; do
    [ "$p" = "$pid" ] || kept+=("$p")
  done
  pids=("${kept[@]}")
}

# --- tools ----------------------------------------------------------------------------------------

install_tools() {
  local missing=()
  command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
  command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || fail "missing ${missing[*]}: run as root to install them, or install them"
  say "installing ${missing[*]} with apt-get"
  apt-get update -qq
  # policy-rc.d 101: the package's own service must not start (we run our own instance).
  local policy=/usr/sbin/policy-rc.d
  local own_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  [ -n "$own_policy" ] && rm -f "$policy"
  return 0
}

ensure_binary() {
  if [ -z "$bin" ]; then
    bin=${CARGO_TARGET_DIR:-$repo_root/target}/release/ipns-registry
    if [ ! -x "$bin" ]; then
      say "building the release binary (cargo build --release)"
      (cd "$repo_root" && cargo build --release --locked)
    fi
  fi
  [ -x "$bin" ] || fail "no binary at $bin"
  bin=$(realpath "$bin")
}

# sha256_floor: MB/s of SHA-256 on this CPU with the sha2 version in Cargo.lock. Builds
# examples/sha256_floor.rs as a crate of its own (only sha2), so no test dependency is built.
sha256_floor() {
  local dir=${CARGO_TARGET_DIR:-$repo_root/target}/bench/sha256-floor version
  version=$(awk '/^name = "sha2"$/ { getline; gsub(/"/, "", $3); print $3; exit }' "$repo_root/Cargo.lock")
  [ -n "$version" ] || fail "no sha2 in Cargo.lock"
  mkdir -p "$dir"
  cat >"$dir/Cargo.toml" <<EOF
[package]
name = "sha256-floor"
version = "0.0.0"
edition = "2021"
publish = false

[[bin]]
name = "sha256_floor"
path = "$repo_root/examples/sha256_floor.rs"

[dependencies]
sha2 = "=$version"

[workspace]
EOF
  # The project's lock file pins sha2's own dependencies (cpufeatures, digest) to the node's.
  cp "$repo_root/Cargo.lock" "$dir/Cargo.lock"
  (cd "$dir" && cargo build --release --quiet) >&2 || fail "building examples/sha256_floor.rs"
  "$dir/target/release/sha256_floor" 256 5 2>/dev/null | awk '/^sha256_mb_per_s/ { print $2 }'
}

# --- measurements from /proc ------------------------------------------------------------------------

clk_tck=$(getconf CLK_TCK)
# cpu_seconds PID: user + system CPU time of the process so far.
cpu_seconds() {
  # Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
  sed 's/^.*) //' "/proc/$1/stat" | awk -v t="$clk_tck" '{ printf "%.3f", ($12 + $13) / t }'
}
# status_mib PID FIELD: a VmXXX field of /proc/PID/status in MiB.
status_mib() { awk -v f="$2:" '$1 == f { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", a - b }'; }
# median VALUES...: the median (mean of the middle two for an even count).
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "" } else if (NR % 2) { print v[(NR + 1) / 2] } else { printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 } }'
}
# max VALUES...
max() { printf '%s\n' "$@" | sort -g | tail -1; }

# --- servers ------------------------------------------------------------------------------------

# free_port: a TCP port on 127.0.0.1 that no socket uses now, below the kernel's ephemeral range.
# A port inside that range can be taken by any outgoing connection (the growth phase opens
# thousands) between this check and the server's bind, and a connect probe does not see those.
free_port() {
  local port low
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  ((low > 12000)) || low=32768
  for _ in $(seq 1 50); do
    port=$(shuf -i "10000-$((low - 1))" -n 1)
    if [[ -z $(ss -Htan "( sport = :$port )" 2>/dev/null) ]] &&
      ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  fail "no free port found"
}

wait_v2() {
  local url=$1 pid=$2 log=$3
  for _ in $(seq 1 300); do
    curl -fs -o /dev/null "$url/v2/" && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "server exited"; }
    sleep 0.05
  done
  cat "$log" >&2
  fail "no answer on $url/v2/"
}

# start_reference DIR: a reference registry with its storage in DIR. Sets ref_pid, ref_url.
start_reference() {
  local dir=$1 port
  mkdir -p "$dir/storage"
  port=$(free_port)
  # The Debian package's defaults (in-memory blob descriptor cache, deletes allowed) without its
  # htpasswd auth, listening on loopback, logging only warnings.
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
  /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  ref_pid=$!
  pids+=("$ref_pid")
  ref_url=http://127.0.0.1:$port
  wait_v2 "$ref_url" "$ref_pid" "$dir/log"
}

# start_ours DIR ROLE [SERVE ARGS...]: our node with its data directory DIR/data. Sets our_pid,
# our_url and our_p2p (its TCP p2p address with /p2p/PEER).
start_ours() {
  local dir=$1 role=$2
  shift 2
  mkdir -p "$dir"
  "$bin" --data-dir "$dir/data" init --role "$role" >/dev/null 2>>"$dir/log"
  RUST_LOG=warn "$bin" --data-dir "$dir/data" serve --listen 127.0.0.1:0 --no-mdns \
    --p2p-listen /ip4/127.0.0.1/tcp/0 "$@" >"$dir/out" 2>"$dir/log" &
  our_pid=$!
  pids+=("$our_pid")
  for _ in $(seq 1 600); do
    grep -q '^listening on http://' "$dir/out" 2>/dev/null && break
    kill -0 "$our_pid" 2>/dev/null || { cat "$dir/log" >&2; fail "ipns-registry exited"; }
    sleep 0.05
  done
  our_url=$(sed -n 's/^listening on \(http:\/\/.*\)$/\1/p' "$dir/out")
  [ -n "$our_url" ] || fail "ipns-registry did not start (log: $dir/log)"
  local addr peer
  addr=$(sed -n 's/^p2p listening on \(\/ip4\/127.0.0.1\/tcp\/.*\)$/\1/p' "$dir/out" | head -1)
  peer=$("$bin" --data-dir "$dir/data" id --json | sed -n 's/.*"peer_id": *"\([^"]*\)".*/\1/p')
  case $addr in
    */p2p/*) our_p2p=$addr ;;
    *) our_p2p=$addr/p2p/$peer ;;
  esac
  wait_v2 "$our_url" "$our_pid" "$dir/log"
}

# --- the big image ---------------------------------------------------------------------------------

# make_image DIR MIB: an OCI layout with three random layers totalling MIB MiB (1/2, 1/3, 1/6),
# tagged v1. Sets image_bytes, big_digest, big_size, manifest_digest.
make_image() {
  local dir=$1 mib=$2 sizes hex size i layers='' config_hex config_size
  mkdir -p "$dir/blobs/sha256"
  local total=$((mib * 1024 * 1024))
  sizes=("$((total / 2))" "$((total / 3))" "$((total - total / 2 - total / 3))")
  image_bytes=0
  big_size=0
  for i in 0 1 2; do
    size=${sizes[$i]}
    head -c "$size" /dev/urandom >"$dir/layer"
    hex=$(sha256sum "$dir/layer" | cut -d' ' -f1)
    mv "$dir/layer" "$dir/blobs/sha256/$hex"
    [ -n "$layers" ] && layers+=,
    layers+=$(printf '{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}' "$hex" "$size")
    image_bytes=$((image_bytes + size))
    if [ "$size" -gt "$big_size" ]; then big_size=$size; big_digest=sha256:$hex; fi
    diff_ids+=("sha256:$hex")
  done
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s","%s","%s"]}}' \
    "${diff_ids[@]}" >"$dir/config"
  config_hex=$(sha256sum "$dir/config" | cut -d' ' -f1)
  config_size=$(stat -c %s "$dir/config")
  mv "$dir/config" "$dir/blobs/sha256/$config_hex"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$config_hex" "$config_size" "$layers" >"$dir/manifest"
  local manifest_hex manifest_size
  manifest_hex=$(sha256sum "$dir/manifest" | cut -d' ' -f1)
  manifest_size=$(stat -c %s "$dir/manifest")
  mv "$dir/manifest" "$dir/blobs/sha256/$manifest_hex"
  manifest_digest=sha256:$manifest_hex
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
    "$manifest_hex" "$manifest_size" >"$dir/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
}
diff_ids=()

# skopeo_push URL TAG: copies the big image; --preserve-digests keeps skopeo from compressing the
# uncompressed layers (it would otherwise gzip them, and measure gzip).
skopeo_push() {
  skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
    "oci:$work/image:v1" "docker://${1#http://}/bench/app:$2" >/dev/null
}
skopeo_pull() {
  rm -rf "$work/pulled"
  skopeo copy --quiet --preserve-digests --src-tls-verify=false \
    "docker://${1#http://}/bench/app:v1" "oci:$work/pulled:v1" >/dev/null
  [ -f "$work/pulled/blobs/sha256/${big_digest#sha256:}" ] || fail "pull from $1: largest layer missing"
  rm -rf "$work/pulled"
}

# settle: writes all dirty pages to disk before a timed step. The reference never syncs, so
# what it (or an earlier step) left in the page cache would be written during the next step and
# charged to it; to ours in particular, whose commits sync the whole file system (syncfs). A
# replica's cold pull measured 0.35 of a warm one after the push rounds, 0.50 without them.
settle() { sync; }

# timed_push WHO URL PID: pushes the big image to a fresh server; appends wall seconds, server
# CPU-seconds and VmHWM to the WHO_* arrays.
timed_push() {
  local who=$1 url=$2 pid=$3 t0 c0 t1 c1
  settle
  c0=$(cpu_seconds "$pid")
  t0=$(now)
  skopeo_push "$url" v1 || fail "push to $who"
  t1=$(now)
  c1=$(cpu_seconds "$pid")
  local wall cpu hwm
  wall=$(sub "$t1" "$t0")
  cpu=$(sub "$c1" "$c0")
  hwm=$(status_mib "$pid" VmHWM)
  case $who in
    ours) ours_push_wall+=("$wall"); ours_push_cpu+=("$cpu"); ours_push_hwm+=("$hwm") ;;
    ref) ref_push_wall+=("$wall"); ref_push_cpu+=("$cpu"); ref_push_hwm+=("$hwm") ;;
  esac
}

# timed_put_push WHO URL PID: pushes $work/put-blob as containerd, BuildKit and oras-go push a
# blob (POST, then the whole blob in one PUT ?digest=) to a server that does not hold it;
# appends wall seconds and server CPU-seconds to the WHO_put_* arrays.
timed_put_push() {
  local who=$1 url=$2 pid=$3 t0 c0 t1 c1 out loc code
  settle
  c0=$(cpu_seconds "$pid")
  t0=$(now)
  out=$(curl -sS -D - -o /dev/null -X POST "$url/v2/bench/put/blobs/uploads/")
  loc=$(sed -n 's/^[Ll]ocation: *\(.*\)\r$/\1/p' <<<"$out")
  [ -n "$loc" ] || fail "POST to $who opened no session"
  [[ $loc == http* ]] || loc=$url$loc
  case $loc in *\?*) loc="$loc&digest=$put_digest" ;; *) loc="$loc?digest=$put_digest" ;; esac
  code=$(curl -sS -o /dev/null -w '%{http_code}' -T "$work/put-blob" \
    -H 'Content-Type: application/octet-stream' "$loc")
  [ "$code" = 201 ] || fail "PUT of a whole blob to $who: $code"
  t1=$(now)
  c1=$(cpu_seconds "$pid")
  case $who in
    ours) ours_put_wall+=("$(sub "$t1" "$t0")"); ours_put_cpu+=("$(sub "$c1" "$c0")") ;;
    ref) ref_put_wall+=("$(sub "$t1" "$t0")"); ref_put_cpu+=("$(sub "$c1" "$c0")") ;;
  esac
}

# curl_speed URL: bytes/s of a GET of URL to /dev/null (fails on a non-200 answer).
curl_speed() {
  local out
  out=$(curl -sS -o /dev/null -w '%{http_code} %{speed_download}' "$1")
  [ "${out%% *}" = 200 ] || fail "GET $1: ${out%% *}"
  echo "${out#* }"
}

# wrk_rate URL [ACCEPT]: requests/s of wrk -t2 -c32; fails if any answer was not 2xx/3xx.
wrk_rate() {
  local out
  if [ -n "${2:-}" ]; then
    out=$(wrk -t2 -c32 -d"${wrk_seconds}s" -H "Accept: $2" "$1")
  else
    out=$(wrk -t2 -c32 -d"${wrk_seconds}s" "$1")
  fi
  if grep -q 'Non-2xx' <<<"$out"; then
    echo "$out" >&2
    fail "wrk on $1 got error answers"
  fi
  awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}

# upload_blob URL REPO FILE: a monolithic upload (POST ?digest= with the body); a server that
# answers 202 (opens a session instead) gets the body again in the closing PUT.
upload_blob() {
  local url=$1 repo=$2 file=$3 digest out code loc
  digest=sha256:$(sha256sum "$file" | cut -d' ' -f1)
  out=$(curl -sS -D - -o /dev/null -X POST -H 'Content-Type: application/octet-stream' \
    --data-binary "@$file" "$url/v2/$repo/blobs/uploads/?digest=$digest")
  code=$(head -1 <<<"$out" | awk '{ print $2 }')
  case $code in
    201) return 0 ;;
    202)
      loc=$(sed -n 's/^[Ll]ocation: *\(.*\)\r$/\1/p' <<<"$out")
      [[ $loc == http* ]] || loc=$url$loc
      case $loc in *\?*) loc="$loc&digest=$digest" ;; *) loc="$loc?digest=$digest" ;; esac
      code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
        --data-binary "@$file" "$loc")
      [ "$code" = 201 ] || fail "blob upload to $url/$repo: PUT $code"
      ;;
    *) fail "blob upload to $url/$repo: POST $code" ;;
  esac
}

# tiny_image DIR I: writes DIR/layer, DIR/config and DIR/manifest for tiny image I (unique bytes).
tiny_image() {
  local dir=$1 i=$2 layer config
  head -c 1024 /dev/urandom >"$dir/layer"
  layer=sha256:$(sha256sum "$dir/layer" | cut -d' ' -f1)
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]},"config":{"Labels":{"n":"%s"}}}' \
    "$layer" "$i" >"$dir/config"
  config=sha256:$(sha256sum "$dir/config" | cut -d' ' -f1)
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":1024}]}' \
    "$config" "$(stat -c %s "$dir/config")" "$layer" >"$dir/manifest"
}

# put_tiny URL REPO TAG DIR: uploads DIR's blobs, then PUTs the manifest; prints the PUT's seconds.
put_tiny() {
  local url=$1 repo=$2 tag=$3 dir=$4 out
  upload_blob "$url" "$repo" "$dir/layer"
  upload_blob "$url" "$repo" "$dir/config"
  out=$(curl -sS -o /dev/null -w '%{http_code} %{time_total}' -X PUT \
    -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$dir/manifest" "$url/v2/$repo/manifests/$tag")
  [ "${out%% *}" = 201 ] || fail "manifest PUT to $url/$repo:$tag: ${out%% *}"
  echo "${out#* }"
}

# --- the table ----------------------------------------------------------------------------------------

rows=()
# row FIGURE UNIT OURS REF: one line of the table (REF may be empty: ours only).
row() { rows+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"$4"); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print ""; else printf "%.2f", a / b }'; }
fmt() { awk -v v="$1" 'BEGIN { if (v == "") print "-"; else if (v >= 100) printf "%.0f", v; else if (v >= 10) printf "%.1f", v; else printf "%.3g", v }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / s / 1e6 }'; }
ms() { awk -v s="$1" 'BEGIN { printf "%.2f", s * 1000 }'; }

print_table() {
  local r figure unit ours ref
  {
    printf 'figure\tours\treference\tours/reference\n'
    for r in "${rows[@]}"; do
      IFS=$'\t' read -r figure unit ours ref <<<"$r"
      printf '%s (%s)\t%s\t%s\t%s\n' "$figure" "$unit" "$(fmt "$ours")" "$(fmt "$ref")" "$(ratio "$ours" "$ref" | sed 's/^$/-/')"
    done
  } | column -t -s $'\t'
}

# write_markdown: the same table as markdown.
write_markdown() {
  local r figure unit ours ref
  mkdir -p "$(dirname "$markdown")"
  {
    printf '| figure | ours | reference | ours/reference |\n| --- | --- | --- | --- |\n'
    for r in "${rows[@]}"; do
      IFS=$'\t' read -r figure unit ours ref <<<"$r"
      printf '| %s (%s) | %s | %s | %s |\n' "$figure" "$unit" "$(fmt "$ours")" "$(fmt "$ref")" \
        "$(ratio "$ours" "$ref" | sed 's/^$/-/')"
    done
  } >"$markdown"
}

# json_string S: S as a JSON string (the figures' names hold no control characters).
json_string() { printf '"%s"' "$(sed 's/\\/\\\\/g; s/"/\\"/g' <<<"$1")"; }
json_number() { if [ -z "$1" ]; then printf null; else printf '%s' "$1"; fi; }

write_json() {
  local r figure unit ours ref first=1
  mkdir -p "$(dirname "$json")"
  {
    printf '{\n  "date": %s,\n  "host": {"cpus": %s, "kernel": %s},\n' \
      "$(json_string "$(date -u +%Y-%m-%dT%H:%M:%SZ)")" "$(nproc)" "$(json_string "$(uname -r)")"
    printf '  "ours": %s,\n  "reference": %s,\n' "$(json_string "$("$bin" --version 2>/dev/null || echo "$bin")")" \
      "$(json_string "$(/usr/bin/docker-registry --version 2>/dev/null | head -1)")"
    printf '  "params": {"size_mib": %s, "image_bytes": %s, "rounds": %s, "tiny": %s, "wrk_seconds": %s, "replica_pushes": %s, "growth": %s},\n' \
      "$size_mib" "$image_bytes" "$rounds" "$tiny" "$wrk_seconds" "$replica_pushes" "$growth"
    printf '  "figures": [\n'
    for r in "${rows[@]}"; do
      IFS=$'\t' read -r figure unit ours ref <<<"$r"
      [ -n "$first" ] || printf ',\n'
      first=
      printf '    {"figure": %s, "unit": %s, "ours": %s, "reference": %s, "ratio": %s}' \
        "$(json_string "$figure")" "$(json_string "$unit")" "$(json_number "$ours")" \
        "$(json_number "$ref")" "$(json_number "$(ratio "$ours" "$ref")")"
    done
    printf '\n  ]\n}\n'
  } >"$json"
}

# --- the run ------------------------------------------------------------------------------------------

install_tools
ensure_binary
work=$(mktemp -d "${TMPDIR:-/tmp}/ipns-bench.XXXXXX")
say "work directory $work; ours: $bin; reference: $(/usr/bin/docker-registry --version 2>/dev/null | head -1)"

say "SHA-256 floor (examples/sha256_floor.rs, the sha2 crate in Cargo.lock)"
sha_mbps=$(sha256_floor)
[ -n "$sha_mbps" ] || fail "no SHA-256 rate"
say "SHA-256: $sha_mbps MB/s"

say "writing a $size_mib MiB three-layer image of random bytes"
make_image "$work/image" "$size_mib"
# One more blob the size of the largest layer, for the push as containerd makes it.
head -c "$big_size" /dev/urandom >"$work/put-blob"
put_digest=sha256:$(sha256sum "$work/put-blob" | cut -d' ' -f1)

# Pushes: each to a freshly started server, so every layer really travels (a server that has a
# blob answers skopeo's HEAD and the upload is skipped).
ours_push_wall=() ours_push_cpu=() ours_push_hwm=()
ref_push_wall=() ref_push_cpu=() ref_push_hwm=()
ours_put_wall=() ours_put_cpu=() ref_put_wall=() ref_put_cpu=()
ours_pid=''
ref_pid=''
for r in $(seq 1 "$rounds"); do
  [ -n "$ours_pid" ] && stop "$ours_pid"
  [ -n "$ref_pid" ] && stop "$ref_pid"
  rm -rf "$work/ours" "$work/ref"
  start_ours "$work/ours" writer
  ours_pid=$our_pid ours_url=$our_url writer_p2p=$our_p2p
  start_reference "$work/ref"
  say "push $r/$rounds: ours"
  timed_push ours "$ours_url" "$ours_pid"
  say "push $r/$rounds: reference"
  timed_push ref "$ref_url" "$ref_pid"
  say "  ours ${ours_push_wall[-1]} s wall, ${ours_push_cpu[-1]} CPU-s; reference ${ref_push_wall[-1]} s wall, ${ref_push_cpu[-1]} CPU-s"
  say "push $r/$rounds of one blob, POST then one PUT (ours, reference)"
  timed_put_push ours "$ours_url" "$ours_pid"
  timed_put_push ref "$ref_url" "$ref_pid"
  say "  ours ${ours_put_wall[-1]} s wall, ${ours_put_cpu[-1]} CPU-s; reference ${ref_put_wall[-1]} s wall, ${ref_put_cpu[-1]} CPU-s"
done
sleep 5
ours_idle=$(status_mib "$ours_pid" VmRSS)
ref_idle=$(status_mib "$ref_pid" VmRSS)

ours_pull=() ref_pull=() ours_get=() ref_get=()
for r in $(seq 1 "$rounds"); do
  say "pull $r/$rounds (ours, reference)"
  settle; t0=$(now); skopeo_pull "$ours_url"; ours_pull+=("$(sub "$(now)" "$t0")")
  settle; t0=$(now); skopeo_pull "$ref_url"; ref_pull+=("$(sub "$(now)" "$t0")")
  say "raw blob GET $r/$rounds (ours, reference)"
  ours_get+=("$(curl_speed "$ours_url/v2/bench/app/blobs/$big_digest")")
  ref_get+=("$(curl_speed "$ref_url/v2/bench/app/blobs/$big_digest")")
done

accept=application/vnd.oci.image.manifest.v1+json
say "wrk on /v2/ (ours, reference)"
ours_wrk_v2=$(wrk_rate "$ours_url/v2/")
ref_wrk_v2=$(wrk_rate "$ref_url/v2/")
say "wrk on a manifest by tag (ours, reference)"
ours_wrk_tag=$(wrk_rate "$ours_url/v2/bench/app/manifests/v1" "$accept")
ref_wrk_tag=$(wrk_rate "$ref_url/v2/bench/app/manifests/v1" "$accept")
say "wrk on a manifest by digest (ours, reference)"
ours_wrk_digest=$(wrk_rate "$ours_url/v2/bench/app/manifests/$manifest_digest" "$accept")
ref_wrk_digest=$(wrk_rate "$ref_url/v2/bench/app/manifests/$manifest_digest" "$accept")
stop "$ref_pid"

# Replicas (ours only), following the writer that holds the big image, without --mirror: the
# first pull fetches every block over Bitswap.
writer_name=$("$bin" --data-dir "$work/ours/data" id --json | sed -n 's/.*"ipns_name": *"\([^"]*\)".*/\1/p')
# wait_tag URL REPO TAG: until URL answers 200 for the tag's manifest (polled every 10 ms
# plus curl's own start-up, a few ms: that is the latency figure's resolution; 60 s at most).
wait_tag() {
  local deadline=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$deadline" ]; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -I -H "Accept: $accept" "$1/v2/$2/manifests/$3")" = 200 ] && return 0
    sleep 0.01
  done
  fail "$1 never served $2:$3"
}
say "replica: cold pull, then warm pull"
start_ours "$work/replica1" replica --peer "$writer_p2p" --follow "$writer_name"
replica_pid=$our_pid replica_url=$our_url
wait_tag "$replica_url" bench/app v1
settle
t0=$(now); skopeo_pull "$replica_url"; cold_pull=$(sub "$(now)" "$t0")
replica_hwm=$(status_mib "$replica_pid" VmHWM)
settle
t0=$(now); skopeo_pull "$replica_url"; warm_pull=$(sub "$(now)" "$t0")

say "replica: push-to-replica latency over $replica_pushes tiny pushes"
mkdir -p "$work/tiny"
latencies=()
for i in $(seq 1 "$replica_pushes"); do
  tiny_image "$work/tiny" "latency-$i"
  put_tiny "$ours_url" bench/latency "t$i" "$work/tiny" >/dev/null
  t0=$(now)
  wait_tag "$replica_url" bench/latency "t$i"
  latencies+=("$(sub "$(now)" "$t0")")
done
stop "$replica_pid"

say "second fresh replica: cold raw GET of the largest layer"
start_ours "$work/replica2" replica --peer "$writer_p2p" --follow "$writer_name"
replica2_pid=$our_pid
wait_tag "$our_url" bench/app v1
settle
cold_get=$(curl_speed "$our_url/v2/bench/app/blobs/$big_digest")
stop "$replica2_pid"
stop "$ours_pid"

# Tiny images, each into its own repository, on fresh servers (so the disk figure is theirs).
say "$tiny tiny images, one repository each (ours, reference alternating)"
start_ours "$work/ours-tiny" writer
ours_pid=$our_pid ours_url=$our_url
start_reference "$work/ref-tiny"
settle
ours_put=() ref_put=()
for i in $(seq 1 "$tiny"); do
  tiny_image "$work/tiny" "$i"
  ours_put+=("$(put_tiny "$ours_url" "tiny/r$i" v1 "$work/tiny")")
  ref_put+=("$(put_tiny "$ref_url" "tiny/r$i" v1 "$work/tiny")")
  [ $((i % 50)) = 0 ] && say "  $i/$tiny"
done
sleep 1
ours_du=$(du -sb "$work/ours-tiny/data" | cut -f1)
ref_du=$(du -sb "$work/ref-tiny/storage" | cut -f1)

# Growth: each server fresh, on its own (scripts/growth.py compares each server with itself).
if [ "$growth" -gt 0 ]; then
  say "growth: $growth tiny images into $growth repositories, then $growth tags in one (ours)"
  start_ours "$work/ours-growth" writer
  settle
  python3 "$repo_root/scripts/growth.py" "$our_url" --images "$growth" --label ours \
    --json "$work/growth-ours.json" >&2 || fail "growth run against ours"
  ours_growth_du=$(du -sb "$work/ours-growth/data" | cut -f1)
  stop "$our_pid"
  say "growth: the same against the reference"
  start_reference "$work/ref-growth"
  settle
  python3 "$repo_root/scripts/growth.py" "$ref_url" --images "$growth" --label reference \
    --json "$work/growth-ref.json" >&2 || fail "growth run against the reference"
  ref_growth_du=$(du -sb "$work/ref-growth/storage" | cut -f1)
  stop "$ref_pid"
fi
# growth_figure SIDE PHASE KEY: one figure of a growth run's JSON.
growth_figure() {
  python3 -c 'import json, sys
r = next(p for p in json.load(open(sys.argv[1])) if p["phase"] == sys.argv[2])
print("%.3f" % r[sys.argv[3]])' "$work/growth-$1.json" "$2" "$3"
}

# --- results ----------------------------------------------------------------------------------------

mb=$(awk -v b="$image_bytes" 'BEGIN { printf "%.0f", b / 1e6 }')
ours_push_med=$(median "${ours_push_wall[@]}")
ref_push_med=$(median "${ref_push_wall[@]}")
ours_cpu_med=$(median "${ours_push_cpu[@]}")
ref_cpu_med=$(median "${ref_push_cpu[@]}")
floor_cpu=$(awk -v b="$image_bytes" -v r="$sha_mbps" 'BEGIN { printf "%.3f", 2 * b / (r * 1e6) }')
ours_pull_med=$(median "${ours_pull[@]}")
ref_pull_med=$(median "${ref_pull[@]}")
big_mb=$(awk -v b="$big_size" 'BEGIN { printf "%.0f", b / 1e6 }')

row "push $mb MB, 3 layers, skopeo: wall median" s "$ours_push_med" "$ref_push_med"
row "push: throughput" MB/s "$(mbps "$image_bytes" "$ours_push_med")" "$(mbps "$image_bytes" "$ref_push_med")"
row "push: server CPU median" CPU-s "$ours_cpu_med" "$ref_cpu_med"
row "push: server CPU over the two-hash floor of $floor_cpu CPU-s" x "$(ratio "$ours_cpu_med" "$floor_cpu")" "$(ratio "$ref_cpu_med" "$floor_cpu")"
row "push $big_mb MB, one blob, POST then one PUT (containerd): wall median" s \
  "$(median "${ours_put_wall[@]}")" "$(median "${ref_put_wall[@]}")"
row "push, POST then one PUT: server CPU median" CPU-s "$(median "${ours_put_cpu[@]}")" "$(median "${ref_put_cpu[@]}")"
row "peak RSS during the push (VmHWM, median)" MiB "$(median "${ours_push_hwm[@]}")" "$(median "${ref_push_hwm[@]}")"
row "idle RSS 5 s after the pushes" MiB "$ours_idle" "$ref_idle"
row "pull, skopeo, fresh dir: wall median" s "$ours_pull_med" "$ref_pull_med"
row "pull: throughput" MB/s "$(mbps "$image_bytes" "$ours_pull_med")" "$(mbps "$image_bytes" "$ref_pull_med")"
row "raw blob GET $big_mb MB, curl, median" MB/s "$(awk -v v="$(median "${ours_get[@]}")" 'BEGIN { printf "%.1f", v / 1e6 }')" \
  "$(awk -v v="$(median "${ref_get[@]}")" 'BEGIN { printf "%.1f", v / 1e6 }')"
row "wrk -t2 -c32 GET /v2/" req/s "$ours_wrk_v2" "$ref_wrk_v2"
row "wrk manifest GET by tag" req/s "$ours_wrk_tag" "$ref_wrk_tag"
row "wrk manifest GET by digest" req/s "$ours_wrk_digest" "$ref_wrk_digest"
row "manifest PUT, $tiny tiny images, own repository each: median" ms \
  "$(ms "$(median "${ours_put[@]}")")" "$(ms "$(median "${ref_put[@]}")")"
row "data dir after the $tiny tiny images (du -sb)" MiB \
  "$(awk -v b="$ours_du" 'BEGIN { printf "%.2f", b / 1048576 }')" "$(awk -v b="$ref_du" 'BEGIN { printf "%.2f", b / 1048576 }')"
if [ "$growth" -gt 0 ]; then
  for phase in repositories tags; do
    case $phase in
      repositories) what="$growth repositories" ;;
      tags) what="$growth tags in one repository" ;;
    esac
    row "growth, $what: manifest PUT median, first 100" ms \
      "$(growth_figure ours $phase manifest_put_first_ms)" "$(growth_figure ref $phase manifest_put_first_ms)"
    row "growth, $what: manifest PUT, last 100 / first 100" x \
      "$(growth_figure ours $phase manifest_put_last_over_first)" "$(growth_figure ref $phase manifest_put_last_over_first)"
    row "growth, $what: whole image push, last 100 / first 100" x \
      "$(growth_figure ours $phase image_last_over_first)" "$(growth_figure ref $phase image_last_over_first)"
  done
  row "data dir after the $((2 * growth)) growth images (du -sb)" MiB \
    "$(awk -v b="$ours_growth_du" 'BEGIN { printf "%.1f", b / 1048576 }')" "$(awk -v b="$ref_growth_du" 'BEGIN { printf "%.1f", b / 1048576 }')"
fi
row "push-to-replica latency, median of $replica_pushes" ms "$(ms "$(median "${latencies[@]}")")" ""
row "replica cold pull (blocks over Bitswap)" MB/s "$(mbps "$image_bytes" "$cold_pull")" ""
row "replica warm pull" MB/s "$(mbps "$image_bytes" "$warm_pull")" ""
row "replica cold pull / warm pull (throughput)" x "$(ratio "$warm_pull" "$cold_pull")" ""
row "replica peak RSS during the cold pull" MiB "$replica_hwm" ""
row "fresh replica cold raw GET $big_mb MB" MB/s "$(awk -v v="$cold_get" 'BEGIN { printf "%.1f", v / 1e6 }')" ""
row "SHA-256 on this CPU (sha2, best of 5)" MB/s "$sha_mbps" ""

write_json
[ -z "$markdown" ] || write_markdown
print_table
say "JSON: $json${markdown:+, markdown: $markdown}"
