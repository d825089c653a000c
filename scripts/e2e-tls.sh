#!/usr/bin/env bash
# End-to-end check of HTTPS: makes a private CA and a server certificate for 127.0.0.1 and
# localhost with openssl, starts a node with [http.tls], pushes an image with skopeo trusting
# the CA (--dest-cert-dir), pulls it back (--src-cert-dir) and compares every blob byte for
# byte; checks that a client without the CA is refused and that curl --cacert works; with
# podman installed, pushes and pulls with podman --cert-dir too; asks `status` of the node serving HTTPS.
#
# usage: scripts/e2e-tls.sh [path/to/ipns-registry]     (default: target/release/ipns-registry)
set -euo pipefail

bin=$(realpath "${1:-target/release/ipns-registry}")
work=$(mktemp -d)
node_pid=
podman_images=()

cleanup() {
  [ -n "$node_pid" ] && kill -9 "$node_pid" 2>/dev/null || true
  for i in "${podman_images[@]}"; do podman rmi -f "$i" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "a private CA and a server certificate (openssl)"
certs="$work/certs"     # what clients trust: ca.crt (skopeo/podman --cert-dir, docker certs.d)
tls="$work/data/tls"    # what the node serves
mkdir -p "$certs" "$tls"
openssl req -x509 -newkey rsa:3072 -nodes -days 2 -subj "/CN=ipns-registry e2e CA" \
  -keyout "$work/ca.key" -out "$certs/ca.crt" 2>/dev/null
openssl req -newkey rsa:3072 -nodes -subj "/CN=localhost" \
  -keyout "$tls/key.pem" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  >"$work/server.ext"
openssl x509 -req -in "$work/server.csr" -CA "$certs/ca.crt" -CAkey "$work/ca.key" \
  -CAcreateserial -days 2 -extfile "$work/server.ext" -out "$work/server.crt" 2>/dev/null
# The full chain: the server certificate, then the CA.
cat "$work/server.crt" "$certs/ca.crt" >"$tls/cert.pem"

step "starting a node with [http.tls]"
"$bin" --data-dir "$work/data" init --role writer >/dev/null
# Relative paths are taken from the data directory.
sed -i 's/^\[registry\]$/[http.tls]\ncert = "tls\/cert.pem"\nkey = "tls\/key.pem"\n\n[registry]/' "$work/data/config.toml"
grep -q '^\[http.tls\]' "$work/data/config.toml" || fail "could not add [http.tls] to the config"
"$bin" --data-dir "$work/data" serve --listen 127.0.0.1:0 --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns \
  >"$work/node.out" 2>"$work/node.err" &
node_pid=$!
addr=
for _ in $(seq 1 100); do
  addr=$(sed -n 's|^listening on https://||p' "$work/node.out" 2>/dev/null || true)
  [ -n "$addr" ] && break
  kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.err"; fail "node exited at start"; }
  sleep 0.1
done
[ -n "$addr" ] || fail "the node did not report an https:// address"
port=${addr##*:}
echo "node at https://$addr"

step "curl trusting the CA"
curl -fsS --cacert "$certs/ca.crt" "https://localhost:$port/v2/" >/dev/null || fail "curl --cacert"
if curl -fsS "https://localhost:$port/v2/" >/dev/null 2>&1; then
  fail "a client without the CA was not refused"
fi
if curl -fsS "http://localhost:$port/v2/" >/dev/null 2>&1; then
  fail "plain HTTP answered on the TLS port"
fi

step "building a 2-layer OCI image"
mkdir -p "$work/src/blobs/sha256" "$work/files"
add_blob() {
  local hex
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$work/src/blobs/sha256/$hex"
  echo "sha256:$hex"
}
echo "hello over TLS" >"$work/files/hello.txt"
tar -C "$work/files" -cf "$work/l1.tar" hello.txt
head -c $((20 * 1024 * 1024)) /dev/urandom >"$work/files/big.bin"
tar -C "$work/files" -cf "$work/l2.tar" big.bin
sizes=("$(stat -c %s "$work/l1.tar")" "$(stat -c %s "$work/l2.tar")")
layers=("$(add_blob "$work/l1.tar")" "$(add_blob "$work/l2.tar")")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s","%s"]}}' \
  "${layers[0]}" "${layers[1]}" >"$work/config.json"
config_size=$(stat -c %s "$work/config.json")
config=$(add_blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s},{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$config" "$config_size" "${layers[0]}" "${sizes[0]}" "${layers[1]}" "${sizes[1]}" >"$work/manifest.json"
manifest_size=$(stat -c %s "$work/manifest.json")
manifest=$(add_blob "$work/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
  "$manifest" "$manifest_size" >"$work/src/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/src/oci-layout"

step "skopeo push over HTTPS (--dest-cert-dir)"
if skopeo copy --quiet "oci:$work/src:v1" "docker://localhost:$port/tls/app:v1" 2>"$work/refused.err"; then
  fail "skopeo pushed without trusting the CA"
fi
grep -qi "certificate" "$work/refused.err" || { cat "$work/refused.err"; fail "unexpected refusal"; }
skopeo copy --quiet --preserve-digests --dest-cert-dir "$certs" \
  "oci:$work/src:v1" "docker://localhost:$port/tls/app:v1"
skopeo copy --quiet --preserve-digests --dest-cert-dir "$certs" \
  "oci:$work/src:v1" "docker://127.0.0.1:$port/tls/ip:v1"

step "skopeo inspect and pull over HTTPS (--cert-dir, --src-cert-dir)"
got=$(skopeo inspect --raw --cert-dir "$certs" "docker://localhost:$port/tls/app:v1" | sha256sum | cut -d' ' -f1)
[ "sha256:$got" = "$manifest" ] || fail "manifest digest $got != $manifest"
skopeo list-tags --cert-dir "$certs" "docker://localhost:$port/tls/ip" | grep '"v1"' >/dev/null || fail "tag v1 not listed"
skopeo copy --quiet --preserve-digests --src-cert-dir "$certs" \
  "docker://localhost:$port/tls/app:v1" "oci:$work/dst:v1"
for d in "$config" "${layers[@]}" "$manifest"; do
  cmp -s "$work/src/blobs/sha256/${d#sha256:}" "$work/dst/blobs/sha256/${d#sha256:}" ||
    fail "blob $d differs after the round trip"
done
echo "all blobs byte-identical"

if command -v podman >/dev/null 2>&1; then
  step "podman push and pull over HTTPS (--cert-dir)"
  local_tag="localhost/ipns-registry-e2e-tls:$$"
  podman_images+=("$local_tag" "localhost:$port/tls/podman:v1")
  podman import --quiet "$work/src/blobs/sha256/${layers[0]#sha256:}" "$local_tag" >/dev/null
  podman push --quiet --cert-dir "$certs" "$local_tag" "localhost:$port/tls/podman:v1"
  podman rmi -f "$local_tag" >/dev/null
  podman pull --quiet --cert-dir "$certs" "localhost:$port/tls/podman:v1" >/dev/null
  container=$(podman create "localhost:$port/tls/podman:v1" /hello.txt)
  podman export "$container" | tar -C "$work" -xf - hello.txt
  podman rm "$container" >/dev/null
  cmp -s "$work/hello.txt" "$work/files/hello.txt" || fail "podman round trip changed hello.txt"
  echo "podman round trip identical"
fi

step "status of a node serving HTTPS (through its admin socket)"
"$bin" --data-dir "$work/data" status >/dev/null || fail "status of the HTTPS node"

kill -TERM "$node_pid"
wait "$node_pid" || true
node_pid=
echo
echo "e2e-tls: 1 passed, 0 failed"
