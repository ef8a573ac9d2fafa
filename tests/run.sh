#!/usr/bin/env bash
# The test command (README) and what CI runs: sets up everything it needs on a fresh machine —
# a venv with roost and its test dependencies, Debian's systemd (for systemd-analyze), the
# third-party guests from ../shared/guests — then runs the checks (ruff, mypy) and the test suite.
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

echo "== checks: ruff, mypy"
"$VENV/bin/ruff" check
"$VENV/bin/mypy"

# The tests run in parallel (pytest-xdist): tests sharing a module's roostd stay together on one
# worker, so it starts once, longest groups first (tests/framework/xdist_groups.py). The tests
# marked `serial` measure time, so they run after that, alone. Workers: 4 on 2 cores, as most of
# a test's time is a daemon or a guest sleeping or waiting.
workers=${ROOST_TEST_WORKERS:-4}
echo "== tests ($workers workers)"
rc=0
ROOST_SERIAL=skip "$VENV/bin/python" -m pytest -q -ra --durations=15 -n "$workers" --dist loadgroup "$@" || rc=$?
echo "== tests marked serial (alone)"
rc_serial=0
ROOST_SERIAL=only "$VENV/bin/python" -m pytest -q -ra --durations=5 "$@" || rc_serial=$?
[ "$rc" -eq 5 ] && [ "$rc_serial" -ne 5 ] && rc=0          # 5: no test was selected in that part
[ "$rc_serial" -eq 5 ] && [ "$rc" -ne 5 ] && rc_serial=0
[ "$rc" -ne 0 ] && exit "$rc"
exit "$rc_serial"
