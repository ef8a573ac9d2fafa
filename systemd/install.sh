#!/usr/bin/env bash
# Install roostd as a system service — the recipe that works on a fresh Debian 12, where pip may
# not write into the system Python (PEP 668) and a per-user (pipx) install is hidden from the
# service by ProtectHome=:
#   1. a virtual environment under PREFIX (default /opt/roost) with roost and its daemon's
#      dependencies (`roost[daemon]`) from SOURCE (default: the checkout this script is in);
#   2. `roost` and `roostd` linked into BIN_DIR (default /usr/local/bin) for operators;
#   3. the unit roostd.service into UNIT_DIR (default /etc/systemd/system), its ExecStart= naming
#      PREFIX/bin/roostd (and the README copied to PREFIX/share/doc/roost for Documentation=);
#      then `systemctl daemon-reload`, when systemd runs this host.
# Debian 12 needs `apt-get install python3-venv` first. Then `systemctl enable --now roostd`.
#
#   systemd/install.sh [--prefix DIR] [--unit-dir DIR] [--bin-dir DIR] [--source SPEC]
#                      [--python PYTHON] [--root DIR] [-- PIP ARGS...]
#
# --root DIR installs everything under DIR (PREFIX DIR/opt/roost, unit in DIR/etc/systemd/system,
# links in DIR/usr/local/bin) and never reloads systemd: to try the recipe or test it. The unit's
# ExecStart names the venv where it really is. Running it again upgrades roost in place.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true    # bash 5.2: "&" in --prefix stays "&"
umask 022                                  # the service's dynamic user must read the venv

here=$(cd "$(dirname "$0")" && pwd)
prefix="" unit_dir="" bin_dir="" root="" python=${PYTHON:-python3}
source_spec="$(dirname "$here")"
pip_args=()

die() { echo "install.sh: $*" >&2; exit 2; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) need "$@"; prefix=$2; shift 2 ;;
    --unit-dir) need "$@"; unit_dir=$2; shift 2 ;;
    --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a value (\"\" for no links)"; bin_dir=$2; shift 2
               [ -n "$bin_dir" ] || bin_dir=none ;;
    --source) need "$@"; source_spec=$2; shift 2 ;;
    --python) need "$@"; python=$2; shift 2 ;;
    --root) need "$@"; root=$(mkdir -p "$2" && cd "$2" && pwd); shift 2 ;;
    --) shift; pip_args=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
prefix=${prefix:-$root/opt/roost}
unit_dir=${unit_dir:-$root/etc/systemd/system}
bin_dir=${bin_dir:-$root/usr/local/bin}
case "$prefix" in /*) ;; *) die "--prefix must be an absolute path: $prefix" ;; esac
prefix=${prefix%/}

# roostd's dependencies are the `daemon` extra: DIR[daemon], FILE.whl[daemon], roost[daemon]==V,
# roost[daemon] @ URL (a SOURCE that names extras itself is taken as it is).
spec=$source_spec
if [[ "$source_spec" == *"["* ]]; then
  :
elif [ -d "$source_spec" ]; then
  spec="$(cd "$source_spec" && pwd)[daemon]"
elif [ -f "$source_spec" ]; then
  spec="$source_spec[daemon]"
elif [[ "$source_spec" == *"://"* ]]; then
  spec="roost[daemon] @ $source_spec"
elif [[ "$source_spec" =~ ^([A-Za-z0-9._-]+)(.*)$ ]]; then
  spec="${BASH_REMATCH[1]}[daemon]${BASH_REMATCH[2]}"
fi

command -v "$python" >/dev/null || die "no $python: install Python 3.11 or newer (Debian 12: apt-get install python3)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$python is older than Python 3.11"
if [ ! -x "$prefix/bin/python" ]; then
  echo "== creating the venv $prefix"
  "$python" -m venv "$prefix" 2>/dev/null \
    || { rm -rf "$prefix"; die "$python cannot create a venv (Debian 12: apt-get install python3-venv)"; }
fi
echo "== installing $spec into $prefix"
"$prefix/bin/python" -m pip install -q --upgrade ${pip_args[@]+"${pip_args[@]}"} "$spec"
[ -x "$prefix/bin/roostd" ] || die "$prefix/bin/roostd is missing after the install"

if [ "$bin_dir" != none ]; then
  mkdir -p "$bin_dir"
  ln -sfn "$prefix/bin/roost" "$bin_dir/roost"
  ln -sfn "$prefix/bin/roostd" "$bin_dir/roostd"
fi

# The README, where the unit's Documentation= points: the checkout's, else the one in the
# package's metadata (its long description).
mkdir -p "$prefix/share/doc/roost"
if [ -d "$source_spec" ] && [ -f "$source_spec/README.md" ]; then
  cp "$source_spec/README.md" "$prefix/share/doc/roost/README.md"
else
  "$prefix/bin/python" -c 'import importlib.metadata as m, sys
sys.stdout.write(m.metadata("roost").get_payload() or "")' > "$prefix/share/doc/roost/README.md" || true
fi

# The unit as shipped, its ExecStart= and Documentation= naming this venv instead of /opt/roost.
mkdir -p "$unit_dir"
unit="$unit_dir/roostd.service"
tmp=$(mktemp "$unit_dir/.roostd.service.XXXXXX")
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    ExecStart=*|Documentation=*) line=${line//\/opt\/roost\//$prefix\/} ;;
  esac
  printf '%s\n' "$line"
done < "$here/roostd.service" > "$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$unit"
echo "== installed $unit (ExecStart=$prefix/bin/roostd)"

# systemd is this host's init (sd_booted's test) and the unit went where it looks: reload it.
if [ -z "$root" ] && [ -d /run/systemd/system ] && [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
  systemctl daemon-reload
  echo "== systemctl daemon-reload done; start it with: systemctl enable --now roostd"
else
  echo "== systemd not reloaded (not running as init here, or --root)"
fi
