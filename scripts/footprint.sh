#!/usr/bin/env bash
# Idle memory of a writer, as the issue measures it: VmRSS right after start, and after a few
# pushes and pulls plus a minute idle. Runs on loopback only (--no-mdns, p2p on 127.0.0.1).
#
# usage: scripts/footprint.sh [path/to/ipns-registry] [--limit-mib N] [--idle SECONDS]
#   --limit-mib N   fail if the idle RSS after the pushes exceeds N MiB (default: report only)
#   --idle S        seconds to stay idle before the second reading (default 60)
# Extra environment for the node can be passed as usual (e.g. MALLOC_ARENA_MAX=8 to compare).
set -euo pipefail

bin=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/ipns-registry}")
shift || true
limit=
idle=60
while [ $# -gt 0 ]; do
  case $1 in
    --limit-mib) limit=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
report() {
  local label=$1
  printf '%-34s VmRSS %6.1f MiB' "$label" "$(awk -v k="$(rss_kib)" 'BEGIN {print k / 1024}')"
  # Anonymous memory is the node's own (heap, stacks, caches); the rest of the RSS is pages of
  # the binary and libraries mapped from the page cache, which the kernel can drop and share.
  awk '/^Rss:/ {rss = $2} /^Anonymous:/ {anon = $2}
    END {printf "  anonymous %.1f MiB  file-backed %.1f MiB", anon / 1024, (rss - anon) / 1024}' \
    "/proc/$pid/smaps_rollup"
  printf '  threads %s\n' "$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")"
}

"$bin" --data-dir "$work/data" init --role writer >/dev/null
"$bin" --data-dir "$work/data" serve --listen 127.0.0.1:0 --no-mdns \
  --p2p-listen /ip4/127.0.0.1/tcp/0 --p2p-listen /ip4/127.0.0.1/udp/0/quic-v1 \
  >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 1 200); do
  grep -q '^listening on http://' "$work/out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/err" >&2; exit 1; }
  sleep 0.05
done
url=$(sed -n 's/^listening on \(http:\/\/.*\)$/\1/p' "$work/out")
[ -n "$url" ] || { echo "the node did not start" >&2; exit 1; }
sleep 5
report "fresh writer (5 s after start)"

# push REPO TAG MIB: a random layer of MIB MiB in 4 MiB chunks (POST, PATCH..., PUT), a config
# in one request (POST ?digest=), and a manifest; then pulls the layer back and compares it.
push() {
  local repo=$1 tag=$2 mib=$3
  head -c $((mib * 1024 * 1024)) /dev/urandom >"$work/layer"
  local layer size loc
  layer=sha256:$(sha256sum "$work/layer" | cut -d' ' -f1)
  size=$(stat -c %s "$work/layer")
  loc=$(curl -sS -D - -o /dev/null -X POST "$url/v2/$repo/blobs/uploads/" | sed -n 's/^[Ll]ocation: *\(.*\)\r$/\1/p')
  [[ $loc == http* ]] || loc=$url$loc
  split -b 4M -d "$work/layer" "$work/chunk."
  local start=0 part len
  for part in "$work"/chunk.*; do
    len=$(stat -c %s "$part")
    loc=$(curl -sS -D - -o /dev/null -X PATCH -H 'Content-Type: application/octet-stream' \
      -H "Content-Range: $start-$((start + len - 1))" --data-binary "@$part" "$loc" |
      sed -n 's/^[Ll]ocation: *\(.*\)\r$/\1/p')
    [[ $loc == http* ]] || loc=$url$loc
    start=$((start + len))
  done
  rm -f "$work"/chunk.*
  case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
  code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT "$loc${sep}digest=$layer")
  [ "$code" = 201 ] || { echo "layer upload: $code" >&2; exit 1; }
  printf '{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]}}' "$layer" >"$work/config"
  local config csize
  config=sha256:$(sha256sum "$work/config" | cut -d' ' -f1)
  csize=$(stat -c %s "$work/config")
  code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/octet-stream' \
    --data-binary "@$work/config" "$url/v2/$repo/blobs/uploads/?digest=$config")
  [ "$code" = 201 ] || { echo "config upload: $code" >&2; exit 1; }
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
    "$config" "$csize" "$layer" "$size" >"$work/manifest"
  code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$work/manifest" "$url/v2/$repo/manifests/$tag")
  [ "$code" = 201 ] || { echo "manifest: $code" >&2; exit 1; }
  curl -sS -o "$work/pulled" "$url/v2/$repo/blobs/$layer"
  cmp -s "$work/layer" "$work/pulled" || { echo "pulled layer differs" >&2; exit 1; }
}

n=0
for mib in 1 8 32 64 16; do
  n=$((n + 1))
  push "footprint/app$n" v1 "$mib"
done
report "after 5 pushes and pulls (121 MiB)"
sleep "$idle"
after=$(rss_kib)
report "after that and ${idle} s idle"

if [ -n "$limit" ]; then
  if [ "$after" -gt $((limit * 1024)) ]; then
    echo "FAIL: idle RSS $((after / 1024)) MiB exceeds $limit MiB" >&2
    exit 1
  fi
  echo "idle RSS within $limit MiB"
fi
