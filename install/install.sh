#!/bin/sh
# Installs ipns-registry as a systemd service on Debian or Raspberry Pi OS, in one command:
#
#   sudo install/install.sh                     install or upgrade, enable and start the service
#   sudo install/install.sh --uninstall         remove it, keeping config and data
#   sudo install/install.sh --uninstall --purge remove config, data and the system user too
#
# Options:
#   --binary PATH    the binary to install (default: the release build in target/, built with
#                    `cargo build --release` first if missing)
#   --config FILE    the config to install as /etc/ipns-registry/config.toml when there is none
#                    yet (default: config/writer.toml; config/replica.toml for a replica)
#   --destdir DIR    lay every file into the staging root DIR instead of /, with the same
#                    modes: no user is created, nothing is owned by it, systemctl is not run
#                    (for packaging and tests); needs no root
#   --no-start       install and enable, but do not (re)start the service
#
# Lays down: /usr/local/bin/ipns-registry (0755), /etc/systemd/system/ipns-registry.service
# (0644), /etc/ipns-registry/ (0750) with config.toml (0640, group ipns-registry), the data
# directory /var/lib/ipns-registry (0700, user ipns-registry) and
# /usr/local/share/doc/ipns-registry/README.md (0644). Re-running it upgrades the binary and the
# unit and keeps an existing config and all data.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
name=ipns-registry
user=ipns-registry

destdir=
binary=
config_src=$repo/config/writer.toml
uninstall=0
purge=0
start=1

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) [ $# -ge 2 ] || die "--destdir needs a directory"; destdir=$2; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --config) [ $# -ge 2 ] || die "--config needs a file"; config_src=$2; shift 2 ;;
    --config=*) config_src=${1#*=}; shift ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    --no-start) start=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[ "$purge" = 0 ] || [ "$uninstall" = 1 ] || die "--purge only goes with --uninstall"

if [ -n "$destdir" ]; then
  mkdir -p "$destdir"
  root=$(cd "$destdir" && pwd)
  staged=1
else
  root=
  staged=0
  [ "$(id -u)" = 0 ] || die "run it as root (sudo $0), or use --destdir DIR to stage the files"
  command -v systemctl >/dev/null 2>&1 || die "systemctl not found: this script needs systemd"
fi

bin_path=/usr/local/bin/$name
unit_path=/etc/systemd/system/$name.service
conf_dir=/etc/$name
conf_path=$conf_dir/config.toml
data_dir=/var/lib/$name
doc_dir=/usr/local/share/doc/$name

if [ "$uninstall" = 1 ]; then
  if [ "$staged" = 0 ]; then
    systemctl disable --now "$name.service" 2>/dev/null || true
  fi
  rm -f "$root$unit_path" "$root$bin_path"
  rm -rf "$root$doc_dir"
  [ "$staged" = 1 ] || systemctl daemon-reload
  if [ "$purge" = 1 ]; then
    rm -rf "$root$conf_dir" "$root$data_dir"
    if [ "$staged" = 0 ] && getent passwd "$user" >/dev/null; then
      userdel "$user"
    fi
    echo "removed $name with its config ($conf_dir), data ($data_dir) and user"
  else
    echo "removed $name; kept $conf_path and the data in $data_dir (--purge removes them)"
  fi
  exit 0
fi

if [ "$staged" = 0 ] && dpkg-query -W -f '${Status}' "$name" 2>/dev/null | grep -q 'install ok installed'; then
  die "the $name Debian package is installed: upgrade it with apt, or remove it first"
fi

if [ -z "$binary" ]; then
  binary=${CARGO_TARGET_DIR:-$repo/target}/release/$name
  if [ ! -x "$binary" ]; then
    command -v cargo >/dev/null 2>&1 ||
      die "no release build at $binary and no cargo on PATH: build it first or pass --binary"
    echo "building the release binary (cargo build --release)…"
    (cd "$repo" && cargo build --locked --release)
  fi
fi
[ -f "$binary" ] || die "no binary at $binary"
version=$("$binary" --version 2>/dev/null) || die "$binary does not run on this machine"
case "$version" in
  "$name "*) ;;
  *) die "$binary is not $name (it says: $version)" ;;
esac
[ -f "$config_src" ] || die "no config file at $config_src"
# `follow list` only reads the config: it proves the file parses with this binary.
"$binary" --data-dir /nonexistent --config "$config_src" follow list >/dev/null ||
  die "$config_src is not a valid configuration for $version"

if [ "$staged" = 0 ] && ! getent passwd "$user" >/dev/null; then
  useradd --system --user-group --home-dir "$data_dir" --no-create-home \
    --shell /usr/sbin/nologin --comment "ipns-registry node" "$user"
  echo "created the system user $user"
fi
# Owner and group of the config and data: the service user once it exists; a staged tree
# keeps the invoking user's, to be set by whoever installs it.
owned() { [ "$staged" = 1 ] || chown "$1" "$2"; }

install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system" "$root$doc_dir"
# Replace, don't overwrite in place: a running service keeps executing the old file.
install -m 0755 "$binary" "$root$bin_path.new"
mv -f "$root$bin_path.new" "$root$bin_path"

sed -e "s|^ExecStart=/usr/bin/$name|ExecStart=$bin_path|" \
  -e "s|/usr/share/doc/$name|$doc_dir|" \
  "$repo/install/$name.service" >"$root$unit_path.new"
chmod 0644 "$root$unit_path.new"
mv -f "$root$unit_path.new" "$root$unit_path"
install -m 0644 "$repo/README.md" "$root$doc_dir/README.md"

install -d -m 0750 "$root$conf_dir"
owned "root:$user" "$root$conf_dir"
if [ -e "$root$conf_path" ]; then
  echo "kept the existing $conf_path"
else
  {
    echo "# ipns-registry configuration, installed by install/install.sh from $(basename "$config_src")."
    echo "# The service (ipns-registry.service) runs with --config $conf_path and the data"
    echo "# directory $data_dir (IPNS_REGISTRY_CONFIG / IPNS_REGISTRY_DATA_DIR in the unit)."
    echo "# Restart after editing: systemctl restart $name"
    echo
    cat "$config_src"
  } >"$root$conf_path.new"
  chmod 0640 "$root$conf_path.new"
  owned "root:$user" "$root$conf_path.new"
  mv "$root$conf_path.new" "$root$conf_path"
  echo "wrote $conf_path"
fi

install -d -m 0700 "$root$data_dir"
owned "$user:$user" "$root$data_dir"

if [ "$staged" = 1 ]; then
  echo "staged $version into $root:"
  (cd "$root" && find . -type f -o -type d | sort | sed 's|^\.||' | grep -v '^$' | sed 's|^|  |')
  echo "not done in a staging root: creating the user $user, owning $conf_path and $data_dir by it,"
  echo "and systemctl daemon-reload, enable --now $name"
  exit 0
fi

systemctl daemon-reload
systemctl enable "$name.service" >/dev/null 2>&1
echo "installed $version as $bin_path; enabled $name.service"
if [ "$start" = 0 ]; then
  echo "not started (--no-start): systemctl start $name"
  exit 0
fi
# Type=notify: restart returns once the node reports READY=1, or fails.
if ! systemctl restart "$name.service"; then
  journalctl -u "$name.service" -n 30 --no-pager >&2 || true
  die "$name.service failed to start"
fi
echo "$name.service is running: $(systemctl show -p StatusText --value "$name.service")"
runuser -u "$user" -- "$bin_path" --data-dir "$data_dir" --config "$conf_path" id
echo "check it with: systemctl status $name; sudo -u $user $bin_path --data-dir $data_dir --config $conf_path status"
