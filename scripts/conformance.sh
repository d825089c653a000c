#!/usr/bin/env bash
# The OCI distribution-spec conformance suite against this registry, in four runs:
#   1. a writer, OCI_VERSION=dev (every optional API the suite tests: upload cancel, required
#      Docker-Content-Digest headers, tag parameters) with all its data sets;
#   2. the same with a user in the htpasswd file (OCI_USERNAME, OCI_PASSWORD);
#   3. the same over HTTPS (a self-signed certificate for 127.0.0.1, trusted via SSL_CERT_FILE);
#   4. a replica following the writer, in the suite's read-only mode (OCI_API_PUSH=false, an
#      image the writer published named in OCI_RO_DATA_*), at OCI_VERSION=1.1: at dev the
#      suite's read-only mode keeps no response headers and reports every manifest's
#      Docker-Content-Digest missing.
# Prints how many checks passed in each run (what failed, if any); exits 1 if any run fails.
#
# The suite is Go (github.com/opencontainers/distribution-spec, conformance/) and fetches its
# modules when built, so neither it nor this script runs in CI. Build it once with Go >= 1.24:
#   git clone https://github.com/opencontainers/distribution-spec
#   (cd distribution-spec/conformance && go test -c -o conformance.test .)
#
# usage: scripts/conformance.sh path/to/conformance.test [path/to/ipns-registry]
#        (default binary: target/release/ipns-registry)
set -euo pipefail

[ $# -ge 1 ] || { sed -n '2,19p' "$0"; exit 2; }
suite=$(realpath "$1")
bin=$(realpath "${2:-target/release/ipns-registry}")
[ -x "$suite" ] || { echo "not an executable: $suite" >&2; exit 2; }
work=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# start NAME ROLE [serve args...]: a node with data in $work/NAME; sets `addr` (host:port).
start() {
  local name=$1 role=$2
  shift 2
  local dir="$work/$name"
  mkdir -p "$dir"
  [ -f "$dir/data/config.toml" ] || "$bin" --data-dir "$dir/data" init --role "$role" >/dev/null 2>&1
  RUST_LOG=warn "$bin" --data-dir "$dir/data" serve --listen 127.0.0.1:0 --no-mdns \
    --p2p-listen /ip4/127.0.0.1/tcp/0 "$@" >"$dir/out" 2>"$dir/err" &
  pids+=($!)
  # Killed at the end without a word from the shell.
  disown
  addr=
  for _ in $(seq 1 100); do
    addr=$(sed -n 's|^listening on https\?://||p' "$dir/out" 2>/dev/null || true)
    [ -n "$addr" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$dir/err" >&2; fail "$name exited at start"; }
    sleep 0.1
  done
  fail "$name did not report its address"
}

failed=0
# count LOG NAME: the figure of the suite's summary line NAME (Pass, FAIL, Error).
count() { sed -n "s/^ *$2\.*: *\([0-9]*\)$/\1/p" "$1" | head -1; }
# run LABEL [VAR=value...]: the suite with those settings added. Judged by its summary: its
# read-only mode panics writing results.yaml after the tests, and exits 2 when all passed.
run() {
  local label=$1
  shift
  local log="$work/results-${label//[^a-z0-9.]/-}.log"
  printf '\n== %s\n' "$label"
  env OCI_RESULTS_DIR="$log.d" "$@" "$suite" >"$log" 2>&1 || true
  local pass fails errors
  pass=$(count "$log" Pass)
  fails=$(count "$log" FAIL)
  errors=$(count "$log" Error)
  if [ "${pass:-0}" -gt 0 ] && [ "$fails" = 0 ] && [ "$errors" = 0 ]; then
    echo "passed: $pass checks"
  else
    failed=1
    sed -n '/^Test results/,/^Configuration:/p' "$log" | grep -v -e 'Pass$' -e 'Disabled$' | head -60
    echo "FAILED: ${pass:-no} passed, ${fails:-no count of} failed, ${errors:-no count of} errors"
    [ -n "$pass" ] || tail -20 "$log"
  fi
}

start writer writer
writer=$addr
run "writer, dev" OCI_REGISTRY="$writer" OCI_TLS=disabled OCI_VERSION=dev

printf 'conformance-pw\n' | "$bin" --data-dir "$work/writer/data" user add conformance \
  --password-stdin >/dev/null
# A running node reads the htpasswd file again within a second.
for _ in $(seq 1 50); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$writer/v2/")" = 401 ] && break
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$writer/v2/")" = 401 ] \
  || fail "authentication did not turn on"
run "writer with a user, dev" OCI_REGISTRY="$writer" OCI_TLS=disabled OCI_VERSION=dev \
  OCI_USERNAME=conformance OCI_PASSWORD=conformance-pw \
  OCI_REPO1=auth/repo1 OCI_REPO2=auth/repo2
"$bin" --data-dir "$work/writer/data" user remove conformance >/dev/null 2>&1
for _ in $(seq 1 50); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$writer/v2/")" = 200 ] && break
  sleep 0.1
done

mkdir -p "$work/tls/data"
"$bin" --data-dir "$work/tls/data" init --role writer >/dev/null 2>&1
mkdir -p "$work/tls/data/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$work/tls/data/tls/key.pem" -out "$work/tls/data/tls/cert.pem" 2>/dev/null
printf '\n[http.tls]\ncert = "tls/cert.pem"\nkey = "tls/key.pem"\n' >>"$work/tls/data/config.toml"
start tls writer
run "writer over HTTPS, dev" OCI_REGISTRY="$addr" OCI_TLS=enabled OCI_VERSION=dev \
  SSL_CERT_FILE="$work/tls/data/tls/cert.pem"

# An image on the writer, for the replica's read-only run.
repo=conformance/readonly
printf 'a layer for the read-only run\n' >"$work/layer"
printf '{"architecture":"amd64","os":"linux"}' >"$work/config"
blob_digest() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
layer=$(blob_digest "$work/layer")
config=$(blob_digest "$work/config")
for f in layer config; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "@$work/$f" \
    "http://$writer/v2/$repo/blobs/uploads/?digest=$(blob_digest "$work/$f")")
  [ "$code" = 201 ] || fail "pushing the $f answered $code"
done
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$config" "$(stat -c %s "$work/config")" "$layer" "$(stat -c %s "$work/layer")" >"$work/manifest"
manifest=$(blob_digest "$work/manifest")
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary "@$work/manifest" \
  -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' "http://$writer/v2/$repo/manifests/ro")
[ "$code" = 201 ] || fail "pushing the manifest answered $code"

name=$("$bin" --data-dir "$work/writer/data" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ipns_name"])')
peer=$("$bin" --data-dir "$work/writer/data" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')
p2p=$(sed -n 's|^p2p listening on \(/ip4/127.0.0.1/tcp/[0-9]*\).*|\1|p' "$work/writer/out" | head -1)
[ -n "$p2p" ] || fail "the writer reported no p2p address"
start replica replica --follow "$name" --peer "$p2p/p2p/$peer"
replica=$addr
for _ in $(seq 1 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$replica/v2/$repo/manifests/ro")" = 200 ] && break
  sleep 0.1
done
run "replica, read-only, 1.1" OCI_REGISTRY="$replica" OCI_TLS=disabled OCI_VERSION=1.1 \
  OCI_REPO1="$repo" OCI_API_PUSH=false OCI_API_BLOBS_DELETE=false \
  OCI_API_MANIFESTS_DELETE=false OCI_API_TAGS_DELETE=false \
  OCI_RO_DATA_TAGS=ro OCI_RO_DATA_MANIFESTS="$manifest" OCI_RO_DATA_BLOBS="$layer $config" \
  OCI_RO_DATA_REFERRERS="$manifest"

[ "$failed" = 0 ] || { echo; echo "conformance: a run failed"; exit 1; }
echo
echo "conformance: 4 runs passed"
