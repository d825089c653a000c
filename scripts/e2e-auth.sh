#!/usr/bin/env bash
# End to end with authentication: users made with `ipns-registry user add --password-stdin`,
# access rules in config.toml, and real clients against a node on loopback: a user's push with
# `skopeo copy --dest-creds`, an anonymous pull with skopeo, refused anonymous and unauthorised
# pushes, `podman login` (a wrong password refused, the right one accepted), `podman push` and
# `podman pull`, and an anonymous podman pull from the same node. No registry but ours is
# contacted: images are built from local files.
#
# usage: scripts/e2e-auth.sh [path/to/ipns-registry]     (default: target/release/ipns-registry)
set -euo pipefail

bin=$(realpath "${1:-target/release/ipns-registry}")
work=$(mktemp -d)
node_pid=
image_ids=()
passed=0
cleanup() {
  [ -n "$node_pid" ] && kill -9 "$node_pid" 2>/dev/null || true
  for i in "${image_ids[@]}"; do podman rmi -f "$i" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; passed=$((passed + 1)); }

# expect_failure WHAT PATTERN COMMAND...: COMMAND must fail with PATTERN in its output.
expect_failure() {
  local what=$1 pattern=$2; shift 2
  if "$@" >"$work/out" 2>&1; then
    fail "$what succeeded"
  fi
  grep -Eqi "$pattern" "$work/out" || { cat "$work/out" >&2; fail "$what failed without /$pattern/"; }
  ok "$what refused ($(grep -m 1 -Eoi "$pattern" "$work/out"))"
}

say "a writer with two users and access rules"
data="$work/data"
"$bin" --data-dir "$data" init --role writer >/dev/null
cat >"$work/config.toml" <<'EOF'
role = "writer"

[auth]
anonymous_pull = true

# e2e/: anyone pulls, alice pushes and deletes.
[[auth.access]]
prefix = "e2e/"
pull = ["*"]
push = ["alice"]
delete = ["alice"]
EOF
printf 'alice in wonderland\n' | "$bin" --data-dir "$data" user add alice --password-stdin
printf 'bob the builder\n' | "$bin" --data-dir "$data" user add bob --password-stdin
[ "$("$bin" --data-dir "$data" user list)" = "$(printf 'alice\nbob')" ] || fail "user list"
[ "$(stat -c %a "$data/htpasswd")" = 600 ] || fail "htpasswd is not mode 0600"

"$bin" --data-dir "$data" --config "$work/config.toml" serve --listen 127.0.0.1:0 \
  --p2p-listen /ip4/127.0.0.1/tcp/0 --no-mdns >"$work/node.out" 2>"$work/node.err" &
node_pid=$!
disown "$node_pid"  # killed at exit without a job notice
addr=
for _ in $(seq 1 300); do
  addr=$(sed -n 's|^listening on http://||p' "$work/node.out" 2>/dev/null || true)
  [ -n "$addr" ] && break
  kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.err" >&2; fail "node exited at start"; }
  sleep 0.1
done
[ -n "$addr" ] || fail "node did not start"
echo "node at http://$addr"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/v2/")
[ "$code" = 401 ] || fail "GET /v2/ without credentials: $code, not 401"
curl -sI "http://$addr/v2/" | tr -d '\r' | grep '^[Ww]ww-[Aa]uthenticate: Basic realm="ipns-registry"' >/dev/null ||
  fail "no Basic challenge on /v2/"
ok "GET /v2/ challenges with Basic"

say "an OCI image from local files"
mkdir -p "$work/src/blobs/sha256" "$work/files"
add_blob() {
  local hex
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$work/src/blobs/sha256/$hex"
  echo "sha256:$hex"
}
head -c $((2 * 1024 * 1024 + 3)) /dev/urandom >"$work/files/blob.bin"
echo "hello from an authenticated push" >"$work/files/hello.txt"
tar -C "$work/files" -cf "$work/layer.tar" .
cp "$work/layer.tar" "$work/podman-layer.tar"
layer_size=$(stat -c %s "$work/layer.tar")
layer=$(add_blob "$work/layer.tar")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]},"config":{"Cmd":["/hello.txt"]}}' \
  "$layer" >"$work/config.json"
config_size=$(stat -c %s "$work/config.json")
config=$(add_blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$config" "$config_size" "$layer" "$layer_size" >"$work/manifest.json"
manifest_size=$(stat -c %s "$work/manifest.json")
manifest=$(add_blob "$work/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
  "$manifest" "$manifest_size" >"$work/src/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/src/oci-layout"

say "skopeo: pushes"
expect_failure "anonymous skopeo push" "unauthorized|authentication required" \
  skopeo copy --quiet --dest-tls-verify=false "oci:$work/src:v1" "docker://$addr/e2e/app:v1"
expect_failure "bob's skopeo push to e2e/" "denied|may not push" \
  skopeo copy --quiet --dest-tls-verify=false --dest-creds "bob:bob the builder" \
  "oci:$work/src:v1" "docker://$addr/e2e/app:v1"
expect_failure "skopeo push with a wrong password" "unauthorized|invalid user name or password" \
  skopeo copy --quiet --dest-tls-verify=false --dest-creds "alice:wrong" \
  "oci:$work/src:v1" "docker://$addr/e2e/app:v1"
skopeo copy --quiet --preserve-digests --dest-tls-verify=false --dest-creds "alice:alice in wonderland" \
  "oci:$work/src:v1" "docker://$addr/e2e/app:v1"
ok "alice's skopeo push"
# Outside e2e/ the default rule lets every user push.
skopeo copy --quiet --dest-tls-verify=false --dest-creds "bob:bob the builder" \
  "oci:$work/src:v1" "docker://$addr/bob/app:v1"
ok "bob's skopeo push outside e2e/"

say "skopeo: anonymous pulls"
skopeo copy --quiet --preserve-digests --src-tls-verify=false "docker://$addr/e2e/app:v1" "oci:$work/dst:v1"
for d in "$config" "$layer" "$manifest"; do
  cmp -s "$work/src/blobs/sha256/${d#sha256:}" "$work/dst/blobs/sha256/${d#sha256:}" ||
    fail "blob $d differs after the round trip"
done
ok "anonymous skopeo pull, every blob byte-identical"
skopeo list-tags --tls-verify=false "docker://$addr/e2e/app" | grep '"v1"' >/dev/null || fail "tags"
ok "anonymous skopeo list-tags"
expect_failure "skopeo pull with a wrong password" "unauthorized|invalid user name or password" \
  skopeo inspect --raw --tls-verify=false --creds "alice:wrong" "docker://$addr/e2e/app:v1"

say "podman login, push and pull"
auth="$work/auth.json"
expect_failure "podman login with a wrong password" "unauthorized|invalid user ?name" \
  sh -c "printf 'not it\n' | podman login --authfile '$auth' --tls-verify=false -u alice --password-stdin '$addr'"
printf 'alice in wonderland\n' | podman login --authfile "$auth" --tls-verify=false -u alice --password-stdin "$addr"
ok "podman login"
local_tag="localhost/ipns-registry-e2e-auth:$$"
image_ids+=("$local_tag")
podman import --quiet "$work/podman-layer.tar" "$local_tag" >/dev/null
podman push --quiet --authfile "$auth" --tls-verify=false "$local_tag" "$addr/e2e/podman:v1"
ok "podman push as alice"
podman rmi -f "$local_tag" >/dev/null
pulled="$addr/e2e/podman:v1"
image_ids+=("$pulled")
podman pull --quiet --authfile "$auth" --tls-verify=false "$pulled" >/dev/null
container=$(podman create "$pulled" /hello.txt)
mkdir -p "$work/extracted"
podman export "$container" | tar -C "$work/extracted" -xf -
podman rm "$container" >/dev/null
for f in blob.bin hello.txt; do
  cmp -s "$work/files/$f" "$work/extracted/$f" || fail "$f differs after podman push and pull"
done
ok "podman pull as alice, files identical"

say "podman without credentials"
podman logout --authfile "$auth" "$addr" >/dev/null
podman rmi -f "$pulled" >/dev/null
podman pull --quiet --authfile "$auth" --tls-verify=false "$pulled" >/dev/null
ok "anonymous podman pull"
expect_failure "anonymous podman push" "unauthorized|authentication required" \
  podman push --quiet --authfile "$auth" --tls-verify=false "$pulled" "$addr/e2e/podman:v2"

echo
echo "e2e-auth: $passed passed, 0 failed"
