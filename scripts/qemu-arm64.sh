#!/usr/bin/env bash
# A real run of the arm64 .deb on an emulated arm64 machine: boots Debian 12 (arm64) under
# qemu-system-aarch64 (software emulation, 2 CPUs, 1 GiB like a small Raspberry Pi), installs the
# package with apt, lets systemd start the hardened Type=notify unit, pushes an image with skopeo
# from this machine through a forwarded port and pulls it back byte for byte.
#
# Everything comes from Debian's packages: the kernel (linux-image-arm64), a root file system
# made with `debootstrap --arch arm64` (its second stage runs inside the VM, since qemu-user
# hangs on threads), busybox-static for a small initramfs that loads the virtio and ext4
# modules. The VM's network is QEMU user-mode networking with restrict=on: it reaches nothing,
# and only the forwarded port 127.0.0.1:$QEMU_HTTP_PORT -> guest :5000 leads in.
#
# usage: scripts/qemu-arm64.sh [--prepare] [path/to/ipns-registry_*_arm64.deb]
#   --prepare: only make the base image (no package needed yet)
#   default: the newest target/cross/debian/*_arm64.deb (scripts/cross-arm64.sh makes it)
#   QEMU_HTTP_PORT (default 15000), QEMU_LAYER_MIB (default 8): the pushed layer's size.
# The base image (Debian after debootstrap, ~20 min to make the first time) is kept in
# target/qemu/base.img; each run boots a fresh copy of it. Needs root (apt-get, debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."

prepare=0
if [ "${1:-}" = --prepare ]; then
  prepare=1
  shift
fi
deb=${1:-$(ls -t "${CARGO_TARGET_DIR:-target}"/cross/debian/ipns-registry_*_arm64.deb 2>/dev/null | head -1 || true)}
if [ "$prepare" = 0 ]; then
  [ -n "$deb" ] && [ -f "$deb" ] || { echo "no arm64 .deb: run scripts/cross-arm64.sh first" >&2; exit 1; }
  deb=$(realpath "$deb")
fi
w=$(realpath -m "${CARGO_TARGET_DIR:-target}/qemu")
port=${QEMU_HTTP_PORT:-15000}
layer_mib=${QEMU_LAYER_MIB:-8}
mkdir -p "$w"
qemu_pid=

cleanup() {
  if [ -n "$qemu_pid" ]; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf "$w/run" "$w/run.img" "$w/job.img"
}
trap cleanup EXIT

step() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "host tools"
missing=()
for pkg in qemu-system-arm debootstrap e2fsprogs cpio kmod skopeo; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  dpkg --print-foreign-architectures | grep -x arm64 >/dev/null || dpkg --add-architecture arm64
  apt-get update -qq
  # Some images carry a backported qemu-utils that breaks the release's qemu-system-common:
  # take the release's version of both.
  qemu_utils=()
  if [[ " ${missing[*]} " == *" qemu-system-arm "* ]] && dpkg -s qemu-utils >/dev/null 2>&1; then
    qemu_utils=("qemu-utils=$(apt-cache policy qemu-system-common | sed -n 's/^  Candidate: //p')")
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "${missing[@]}" "${qemu_utils[@]}" >/dev/null
fi
qemu-system-aarch64 --version | head -1

step "kernel and busybox (Debian arm64 packages)"
if [ ! -f "$w/kernel.ok" ]; then
  rm -rf "$w/dl" "$w/kernel" "$w/busybox"
  mkdir -p "$w/dl"
  kpkg=$(apt-cache depends linux-image-arm64:arm64 | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -1)
  [ -n "$kpkg" ] || fail "cannot find the kernel package behind linux-image-arm64:arm64"
  (cd "$w/dl" && apt-get download "$kpkg" busybox-static:arm64 2>/dev/null)
  dpkg-deb -x "$w"/dl/linux-image-*.deb "$w/kernel"
  dpkg-deb -x "$w"/dl/busybox-static_*.deb "$w/busybox"
  touch "$w/kernel.ok"
fi
kver=$(ls "$w/kernel/lib/modules")
vmlinuz="$w/kernel/boot/vmlinuz-$kver"
echo "kernel $kver"

step "initramfs: busybox and the modules for virtio disks, network, rng and ext4"
depmod -b "$w/kernel" "$kver"
# modules.dep lists every dependency of a module; modprobe loads them from the end backwards.
order=()
add_module() {
  local line path dep
  # A module's file name may spell its underscores as dashes (virtio-rng.ko).
  line=$(grep -E "(^|/)${1//_/[-_]}\.ko:" "$w/kernel/lib/modules/$kver/modules.dep") || fail "no module $1"
  path=${line%%:*}
  for dep in $(echo "${line#*:}" | tr ' ' '\n' | tac); do
    [[ " ${order[*]} " == *" $dep "* ]] || order+=("$dep")
  done
  [[ " ${order[*]} " == *" $path "* ]] || order+=("$path")
}
# crc32c_generic: ext4 asks the crypto API for crc32c at mount time, not through modules.dep.
for m in virtio_pci virtio_blk virtio_net virtio_rng crc32c_generic ext4; do add_module "$m"; done
rm -rf "$w/initramfs"
mkdir -p "$w/initramfs"/{bin,dev,proc,sys,newroot,modules}
cp "$w/busybox/bin/busybox" "$w/initramfs/bin/"
for applet in sh mount umount insmod switch_root sleep cat mkdir echo; do
  ln -s busybox "$w/initramfs/bin/$applet"
done
: >"$w/initramfs/modules.order"
for path in "${order[@]}"; do
  cp "$w/kernel/lib/modules/$kver/$path" "$w/initramfs/modules/"
  basename "$path" >>"$w/initramfs/modules.order"
done
cat >"$w/initramfs/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/modules/$m" || echo "initramfs: insmod $m failed"; done
init=/sbin/init
for arg in $(cat /proc/cmdline); do
  case "$arg" in init=*) init=${arg#init=} ;; esac
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initramfs: cannot mount /dev/vda"; exec sh; }
mkdir -p /newroot/dev
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot "$init"
EOF
chmod 755 "$w/initramfs/init"
(cd "$w/initramfs" && find . | cpio -o -H newc --quiet | gzip -1) >"$w/initrd.gz"
echo "initramfs: ${#order[@]} modules, $(du -h "$w/initrd.gz" | cut -f1)"

# boot IMAGE LOG APPEND [EXTRA QEMU ARGS...]: starts the VM in the background (qemu_pid).
boot() {
  local image=$1 log=$2 append=$3
  shift 3
  qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -nographic -no-reboot \
    -kernel "$vmlinuz" -initrd "$w/initrd.gz" \
    -append "console=ttyAMA0 root=/dev/vda rw panic=-1 $append" \
    -drive "file=$image,format=raw,if=virtio" \
    -device virtio-rng-pci \
    -netdev "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:5000" \
    -device virtio-net-pci,netdev=net0,romfile= \
    "$@" </dev/null >"$log" 2>&1 &
  qemu_pid=$!
}

if [ ! -f "$w/base.img" ]; then
  step "base image: debootstrap --arch arm64 (first stage here, second stage in the VM)"
  if [ ! -f "$w/rootfs.ok" ]; then
    rm -rf "$w/rootfs"
    debootstrap --foreign --arch=arm64 --variant=minbase \
      --include=systemd,systemd-sysv,udev,kmod,iproute2 bookworm "$w/rootfs" >"$w/debootstrap.log"
    touch "$w/rootfs.ok"
  fi
  cat >"$w/rootfs/stage2.sh" <<'EOF'
#!/bin/sh
# Runs once as PID 1 in the VM: the second stage of debootstrap, then the settings the runs need.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
if /debootstrap/debootstrap --second-stage; then
  echo qemu-arm64 >/etc/hostname
  passwd -d root
  mkdir -p /etc/systemd/network /etc/systemd/system/multi-user.target.wants
  printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n' >/etc/systemd/network/10-wired.network
  ln -sf /lib/systemd/system/systemd-networkd.service /etc/systemd/system/multi-user.target.wants/
  ln -sf /etc/systemd/system/qemu-job.service /etc/systemd/system/multi-user.target.wants/
  echo "STAGE2 OK"
else
  echo "STAGE2 FAILED"
  tail -30 /debootstrap/debootstrap.log
fi
rm -f /stage2.sh
sync
mount -o remount,ro /
echo 1 >/proc/sys/kernel/sysrq
echo o >/proc/sysrq-trigger
EOF
  chmod 755 "$w/rootfs/stage2.sh"
  # Each run's job comes on a second disk: this unit mounts it and runs its run.sh.
  cat >"$w/rootfs/etc/systemd/system/qemu-job.service" <<'EOF'
[Unit]
Description=Job of scripts/qemu-arm64.sh (run.sh on /dev/vdb)
Requires=dev-vdb.device
After=dev-vdb.device systemd-networkd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mkdir -p /mnt/job && mount -o ro /dev/vdb /mnt/job && exec /bin/sh /mnt/job/run.sh'
StandardOutput=journal+console
StandardError=journal+console
EOF
  rm -f "$w/base.img.tmp"
  truncate -s 3G "$w/base.img.tmp"
  mkfs.ext4 -q -L root -d "$w/rootfs" "$w/base.img.tmp"
  start=$(date +%s)
  boot "$w/base.img.tmp" "$w/stage2.log" "init=/stage2.sh"
  wait "$qemu_pid" || true
  qemu_pid=
  grep -q "STAGE2 OK" "$w/stage2.log" || { tail -40 "$w/stage2.log"; fail "debootstrap's second stage failed"; }
  echo "second stage took $(($(date +%s) - start)) s"
  mv "$w/base.img.tmp" "$w/base.img"
  rm -rf "$w/rootfs" "$w/rootfs.ok"
fi

if [ "$prepare" = 1 ]; then
  echo "base image ready: $w/base.img"
  exit 0
fi

step "job disk: the .deb and run.sh"
rm -rf "$w/run"
mkdir -p "$w/run/job"
cp "$deb" "$w/run/job/ipns-registry.deb"
cat >"$w/run/job/run.sh" <<'EOF'
#!/bin/sh
# In the VM, started by qemu-job.service: install the package as a user would, then report.
say() { echo "JOB: $*"; }
say "boot finished at uptime $(cut -d' ' -f1 /proc/uptime) s; $(uname -m), $(nproc) CPUs, $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) MiB"
apt-get install -y /mnt/job/ipns-registry.deb >/tmp/apt.log 2>&1 && say "apt-get install: ok" ||
  { say "apt-get install failed:"; sed 's/^/JOB:   /' /tmp/apt.log; }
say "installed $(ipns-registry --version); unit $(systemctl is-enabled ipns-registry) and $(systemctl is-active ipns-registry) at uptime $(cut -d' ' -f1 /proc/uptime) s"
# Reachable through the forwarded port: listen on every interface of this throwaway VM.
sed -i 's/^listen = "127.0.0.1:5000"$/listen = "0.0.0.0:5000"/' /etc/ipns-registry/config.toml
systemctl restart ipns-registry && say "restarted with HTTP on 0.0.0.0:5000 at uptime $(cut -d' ' -f1 /proc/uptime) s" ||
  journalctl -u ipns-registry --no-pager -n 30 | sed 's/^/JOB:   /'
runuser -u ipns-registry -- ipns-registry --data-dir /var/lib/ipns-registry --config /etc/ipns-registry/config.toml id | sed 's/^/JOB: /'
i=0
while [ $i -lt 360 ]; do
  say "status: $(systemctl show -p ActiveState -p SubState -p NRestarts -p MemoryCurrent -p WatchdogUSec -p StatusText ipns-registry | tr '\n' ' ')"
  sleep 10
  i=$((i + 1))
done
EOF
truncate -s 64M "$w/job.img"
mkfs.ext4 -q -L job -d "$w/run/job" "$w/job.img"

step "boot a fresh copy of the base image"
cp --sparse=always "$w/base.img" "$w/run.img"
start=$(date +%s)
boot "$w/run.img" "$w/run.log" "" -drive "file=$w/job.img,format=raw,if=virtio,readonly=on"
echo "qemu pid $qemu_pid, serial console in $w/run.log"
for _ in $(seq 1 900); do
  kill -0 "$qemu_pid" 2>/dev/null || { tail -30 "$w/run.log"; fail "the VM stopped"; }
  grep -q "JOB: restarted with HTTP" "$w/run.log" && break
  grep -q "JOB: apt-get install failed" "$w/run.log" && { sleep 2; grep JOB "$w/run.log"; fail "apt-get install failed in the VM"; }
  sleep 2
done
grep -q "JOB: restarted with HTTP" "$w/run.log" || { tail -30 "$w/run.log"; fail "the node did not start in the VM within 30 min"; }
ready=$(($(date +%s) - start))
grep -m 8 "JOB:" "$w/run.log"
echo "VM boot, apt install and service start: ${ready} s"
# GET /v2/ through the forwarded port; prints the status line.
v2() { timeout 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf 'GET /v2/ HTTP/1.0\r\n\r\n' >&3 && head -1 <&3" 2>/dev/null || true; }
answer=
for _ in $(seq 1 60); do
  answer=$(v2)
  [ -n "$answer" ] && break
  sleep 2
done
[[ "$answer" == *" 200 "* ]] || fail "the node in the VM does not answer on 127.0.0.1:$port: $answer"
echo "GET /v2/ through 127.0.0.1:$port: $answer"

step "push an image (${layer_mib} MiB layer) from this machine with skopeo"
src=$w/run/src
mkdir -p "$src/blobs/sha256" "$w/run/files"
head -c $((layer_mib * 1024 * 1024)) /dev/urandom >"$w/run/files/payload.bin"
tar -C "$w/run/files" -cf "$w/run/layer.tar" payload.bin
add_blob() {
  local hex
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$src/blobs/sha256/$hex"
  echo "sha256:$hex"
}
layer_size=$(stat -c %s "$w/run/layer.tar")
layer=$(add_blob "$w/run/layer.tar")
printf '{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]}}' "$layer" >"$w/run/config.json"
config_size=$(stat -c %s "$w/run/config.json")
config=$(add_blob "$w/run/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$config" "$config_size" "$layer" "$layer_size" >"$w/run/manifest.json"
manifest_size=$(stat -c %s "$w/run/manifest.json")
manifest=$(add_blob "$w/run/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
  "$manifest" "$manifest_size" >"$src/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$src/oci-layout"
t=$(date +%s)
skopeo copy --quiet --preserve-digests --dest-tls-verify=false "oci:$src:v1" "docker://127.0.0.1:$port/pi/hello:v1"
echo "pushed $manifest in $(($(date +%s) - t)) s"

step "pull it back and compare"
t=$(date +%s)
skopeo copy --quiet --preserve-digests --src-tls-verify=false "docker://127.0.0.1:$port/pi/hello:v1" "oci:$w/run/dst:v1"
echo "pulled in $(($(date +%s) - t)) s"
for d in "$config" "$layer" "$manifest"; do
  cmp -s "$src/blobs/sha256/${d#sha256:}" "$w/run/dst/blobs/sha256/${d#sha256:}" || fail "blob $d differs"
done
echo "all 3 blobs byte-identical"
sleep 11
status=$(grep "JOB: status" "$w/run.log" | tail -1)
echo "$status"
for property in ActiveState=active SubState=running NRestarts=0 WatchdogUSec=1min "StatusText=serving http://0.0.0.0:5000 as k51"; do
  [[ "$status" == *"$property"* ]] || fail "the service is not running cleanly (no $property)"
done

echo
echo "qemu-arm64: 1 passed, 0 failed"
