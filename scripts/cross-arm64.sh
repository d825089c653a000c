#!/usr/bin/env bash
# Cross-builds the release binary and the .deb for 64-bit Raspberry Pi OS / Debian arm64
# (aarch64-unknown-linux-gnu) with nothing but Debian's packages: Debian's rustc/cargo 1.96
# (rustc-web, cargo-web) with the arm64 standard library (libstd-rust-web-dev:arm64) and
# gcc-aarch64-linux-gnu as linker and C compiler (ring builds C and assembly). Then runs the
# binary's --version under qemu-user (qemu-user-static) as a smoke test.
#
# Debian's rustc is another compiler version than rustup's, so the build goes to its own target
# directory (target/cross) and the two never invalidate each other's artifacts.
#
# usage: scripts/cross-arm64.sh [--no-deb] [--profile NAME] [--toolchain-only]
#   installs the packages above with apt-get when missing (needs root), then writes
#   target/cross/aarch64-unknown-linux-gnu/release/ipns-registry and
#   target/cross/debian/ipns-registry_<version>-1_arm64.deb
#   --profile cross-check: an unoptimised build (cross-check/ and debian-cross-check/ instead of
#   release/ and debian/), about 4 minutes instead of 11 on 2 cores. It shows that the tree
#   compiles, links, runs and packages for arm64, as CI does; ship only release builds.
#   --toolchain-only: install the packages and cargo-deb, and stop (CI does this first, so the
#   build can run in the background while other stages use apt-get and cargo install).
set -euo pipefail
cd "$(dirname "$0")/.."

make_deb=1
toolchain_only=0
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --no-deb) make_deb=0; shift ;;
    --toolchain-only) toolchain_only=1; shift ;;
    --profile)
      [ $# -ge 2 ] || { echo "--profile needs a name (release, cross-check)" >&2; exit 2; }
      profile=$2
      shift 2
      ;;
    -h | --help)
      sed -n '2,19p' "$0"
      exit 0
      ;;
    *)
      echo "unknown argument: $1" >&2
      exit 2
      ;;
  esac
done
# Cargo's output directory for a profile: dev builds go to debug/.
case "$profile" in
  dev) profile_dir=debug ;;
  *) profile_dir=$profile ;;
esac

triple=aarch64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-target}/cross
# Only a release build's package goes where scripts/qemu-arm64.sh and README look for one.
deb_dir=$target_dir/debian
[ "$profile" = release ] || deb_dir=$target_dir/debian-$profile

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "toolchain (Debian packages)"
if ! dpkg --print-foreign-architectures | grep -x arm64 >/dev/null; then
  dpkg --add-architecture arm64
  apt_updated=0
fi
wanted=(rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu qemu-user-static)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ] || [ "${apt_updated:-1}" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
/usr/bin/rustc --version
/usr/bin/cargo --version
aarch64-linux-gnu-gcc --version | head -1
# With the toolchain, so that --toolchain-only leaves nothing for a background build to install.
if [ "$make_deb" = 1 ]; then
  command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb
fi
if [ "$toolchain_only" = 1 ]; then
  echo "cross-arm64: toolchain ready (--toolchain-only)"
  exit 0
fi

step "cargo build --profile $profile --target $triple (target dir $target_dir)"
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR=$target_dir
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
start=$(date +%s)
/usr/bin/cargo build --locked --profile "$profile" --target "$triple"
echo "built in $(($(date +%s) - start)) s"
bin=$target_dir/$triple/$profile_dir/ipns-registry
file "$bin" | grep 'ARM aarch64' >/dev/null || fail "$bin is not an aarch64 binary: $(file "$bin")"
echo "$bin: $(du -h "$bin" | cut -f1) ($(stat -c %s "$bin") bytes)"
# Only glibc: nothing else must be needed on the Pi.
needed=$(aarch64-linux-gnu-readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
echo "needs: $needed"
for lib in $needed; do
  case "$lib" in
    libc.so.6 | libm.so.6 | libgcc_s.so.1 | ld-linux-aarch64.so.1 | libpthread.so.0 | libdl.so.2 | librt.so.1) ;;
    *) fail "$bin needs $lib, which is not part of libc" ;;
  esac
done

step "--version under qemu-user"
# qemu-user 7.2 hangs in any program that starts a thread; --version starts none.
version=$(timeout 60 qemu-aarch64-static -L /usr/aarch64-linux-gnu "$bin" --version)
echo "$version"
[ "$version" = "ipns-registry $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ] ||
  fail "unexpected --version output: $version"

if [ "$make_deb" = 1 ]; then
  step "cargo deb --target $triple"
  cargo deb --no-build --profile "$profile" --target "$triple" --output "$deb_dir"
  deb=$(ls -t "$deb_dir"/ipns-registry_*_arm64.deb | head -1)
  [ "$(dpkg-deb -f "$deb" Architecture)" = arm64 ] || fail "$deb is not an arm64 package"
  dpkg-deb -f "$deb" Depends
  echo "$deb: $(du -h "$deb" | cut -f1)"
fi
echo
echo "cross-arm64: 1 passed, 0 failed"
