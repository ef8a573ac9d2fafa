# Sourced by tests/run.sh and demo.sh: make sure the venv, roost and the tools exist.
# Idempotent and quiet when everything is already there.
VENV=${ROOST_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating venv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
stamp="$VENV/.roost-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ proto/roost/v1/control.proto -nt "$stamp" ] \
   || ! "$VENV/bin/python" -c "import roost.v1.control_pb2, roost.daemon, roost.client" 2>/dev/null; then
  echo "== installing roost into $VENV"
  "$VENV/bin/pip" install -q -e '.[test]'
  touch "$stamp"
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "== installing Debian's systemd (for systemd-analyze)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
# Third-party guests (../shared/guests): fetched once, cached in tests/.cache.
if [ -z "${ROOST_GUESTS_DIR:-}" ] && [ -f ../shared/guests/fetch.sh ]; then
  export ROOST_GUESTS_DIR="$PWD/tests/.cache/shared-guests"
  if [ ! -f "$ROOST_GUESTS_DIR/manifest.json" ]; then
    echo "== fetching third-party guests into $ROOST_GUESTS_DIR"
    WITH_YOSYS=1 PYTHON="$PWD/$VENV/bin/python" bash ../shared/guests/fetch.sh "$ROOST_GUESTS_DIR" >/dev/null
  fi
fi
export PATH="$PWD/$VENV/bin:$PATH"
