#!/usr/bin/env bash
# Builds the amd64 .deb from the release build with `cargo deb --no-build` and checks it with
# dpkg-deb: control fields (-I), every file with its owner and mode (-c), conffiles, the
# maintainer scripts (service user, unit enabled and started), and that the packaged unit and
# binary are the ones in the tree (the unit still passes systemd-analyze verify).
#
# usage: scripts/deb-test.sh   (after cargo build --release; installs cargo-deb when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
bin=$target/release/ipns-registry
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
passed=0
check() { passed=$((passed + 1)); }

[ -x "$bin" ] || fail "no release build at $bin (cargo build --release)"
command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb

step "cargo deb --no-build"
cargo deb --no-build --locked --output "$work/out"
deb=$(ls "$work"/out/ipns-registry_*_amd64.deb)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ "$(basename "$deb")" = "ipns-registry_${version}-1_amd64.deb" ] || fail "unexpected name $deb"
echo "$deb: $(du -h "$deb" | cut -f1)"

step "dpkg-deb -I: control fields"
dpkg-deb -I "$deb" | tee "$work/info"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = ipns-registry ] || fail "Package"
[ "$(field Version)" = "${version}-1" ] || fail "Version $(field Version)"
[ "$(field Architecture)" = amd64 ] || fail "Architecture"
[ "$(field Section)" = net ] || fail "Section"
field Depends | grep '^libc6 (>= [0-9.]*)' >/dev/null || fail "Depends should be libc only: $(field Depends)"
! field Depends | grep 'libssl\|libsystemd' >/dev/null || fail "Depends: $(field Depends)"
[ -n "$(field Maintainer)" ] || fail "no Maintainer"
field Description | grep 'OCI container registry' >/dev/null || fail "Description"
for script in postinst prerm postrm conffiles; do
  grep -q "^ *[0-9]* bytes, *[0-9]* lines .*\b$script\b" "$work/info" || fail "no $script in the control archive"
done
check

step "dpkg-deb -c: files, owners and modes"
dpkg-deb -c "$deb" | tee "$work/contents"
# expect MODE PATH: the entry exists with that mode, owned by root.
expect() {
  grep -Eq "^$1 (root/root|0/0) +[0-9]+ [0-9-]+ [0-9:]+ \.$2\$" "$work/contents" || fail "no $2 with mode $1"
}
expect '-rwxr-xr-x' /usr/bin/ipns-registry
expect '-rw-r--r--' /etc/ipns-registry/config.toml
expect '-rw-r--r--' '(/usr)?/lib/systemd/system/ipns-registry.service'
expect '-rw-r--r--' /usr/share/doc/ipns-registry/README.md
expect '-rw-r--r--' /usr/share/doc/ipns-registry/copyright
# Every file of config/ ships as an example; the count catches anything else slipping in.
examples=0
for example in config/*.toml; do
  expect '-rw-r--r--' "/usr/share/doc/ipns-registry/examples/$(basename "$example")"
  examples=$((examples + 1))
done
files=$(grep -c '^-' "$work/contents")
[ "$files" = $((5 + examples)) ] || fail "expected $((5 + examples)) files in the package, found $files"
check

step "conffiles and maintainer scripts"
mkdir "$work/control"
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/ipns-registry/config.toml "$work/control/conffiles" || fail "config.toml is not a conffile"
grep -q 'useradd --system' "$work/control/postinst" || fail "postinst creates no user"
grep -q 'deb-systemd-helper.*enable.*ipns-registry.service' "$work/control/postinst" || fail "postinst does not enable the unit"
grep -q '_dh_action=start' "$work/control/postinst" &&
  grep -q 'deb-systemd-invoke $_dh_action ipns-registry.service' "$work/control/postinst" || fail "postinst does not start the unit"
[ "$(grep -c 'Automatically added by cargo-deb' "$work/control/postinst")" = 2 ] || fail "postinst: the generated snippets are not there exactly once"
grep -q 'deb-systemd-invoke stop.*ipns-registry.service' "$work/control/prerm" || fail "prerm does not stop the unit"
grep -q 'userdel ipns-registry' "$work/control/postrm" || fail "postrm does not remove the user on purge"
for script in postinst prerm postrm; do
  sh -n "$work/control/$script" || fail "$script is not valid sh"
done
check

step "packaged files are the tree's"
dpkg-deb -x "$deb" "$work/root"
cmp "$work/root/usr/bin/ipns-registry" "$bin" >/dev/null 2>&1 ||
  "$work/root/usr/bin/ipns-registry" --version | grep -x "ipns-registry $version" >/dev/null ||
  fail "packaged binary is not this build"
unit=
for dir in usr/lib lib; do
  [ -f "$work/root/$dir/systemd/system/ipns-registry.service" ] && unit=$work/root/$dir/systemd/system/ipns-registry.service
done
[ -n "$unit" ] || fail "no unit in the package"
cmp "$unit" install/ipns-registry.service || fail "packaged unit differs from install/ipns-registry.service"
cmp "$work/root/etc/ipns-registry/config.toml" config/writer.toml || fail "packaged config is not config/writer.toml"
sed "s|^ExecStart=/usr/bin/ipns-registry|ExecStart=$work/root/usr/bin/ipns-registry|" "$unit" >"$work/ipns-registry.service"
out=$(systemd-analyze verify "$work/ipns-registry.service" 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
check

echo
echo "deb: $passed passed, 0 failed"
