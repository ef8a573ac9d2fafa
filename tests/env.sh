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
export PATH="$PWD/$VENV/bin:$PATH"
