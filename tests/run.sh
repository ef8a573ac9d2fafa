#!/usr/bin/env bash
# The test command (README) and what CI runs: sets up everything it needs on a fresh machine —
# a venv with roost and its test dependencies, Debian's systemd (for systemd-analyze), the
# third-party guests from ../shared/guests — then runs the checks and the test suite.
#   bash tests/run.sh [PYTEST ARGS...]      e.g. bash tests/run.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/env.sh

# Third-party guests (../shared/guests): fetched once, cached in tests/.cache.
if [ -z "${ROOST_GUESTS_DIR:-}" ] && [ -f ../shared/guests/fetch.sh ]; then
  export ROOST_GUESTS_DIR="$PWD/tests/.cache/shared-guests"
  if [ ! -f "$ROOST_GUESTS_DIR/manifest.json" ]; then
    echo "== fetching third-party guests into $ROOST_GUESTS_DIR"
    WITH_YOSYS=1 PYTHON="$PWD/$VENV/bin/python" bash ../shared/guests/fetch.sh "$ROOST_GUESTS_DIR" >/dev/null
  fi
fi

echo "== unit file: systemd-analyze verify"
unit=$(mktemp --suffix=.service)
sed "s#^ExecStart=/usr/local/bin/roostd#ExecStart=$PWD/$VENV/bin/roostd#" systemd/roostd.service > "$unit"
systemd-analyze verify "$unit"
rm -f "$unit"

echo "== tests"
exec "$VENV/bin/python" -m pytest -q -ra --durations=15 "$@"
