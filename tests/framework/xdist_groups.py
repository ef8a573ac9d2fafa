"""Which tests pytest-xdist runs together, and in what order (tests/run.sh runs `-n 4`).

A group is a unit of work one worker runs from start to end: the tests of a module that share
a module-scoped fixture (a daemon: started once), or the tests over one third-party guest case
(prepared once). Every other test is a group of its own, run by whichever worker is free.

The workers say which group each test is in (they alone see the fixtures), in a file the
controller's scheduler (`GroupScheduling`) reads. xdist's own `--dist loadgroup` does this by
appending "@group" to node ids, which pytest 9.2's node ids no longer allow. The groups go out
longest first, by the durations the last run recorded (tests/.cache/durations.json; on a
fresh checkout, those of tests/framework/durations.json), so that a long group does not start
last and hold up the end of the run.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

DURATIONS = Path(__file__).resolve().parent.parent / ".cache" / "durations.json"
# The durations of the tests over a second, as a fresh clone ran them on a 2-core machine (cold
# guest caches): the order of a fresh checkout's first run (CI's), which has no recorded ones
# yet. Refresh it from a fresh clone's DURATIONS when tests are added or moved.
SEED_DURATIONS = Path(__file__).resolve().parent / "durations.json"
_KEY = "roost_groups_dir"


class XdistGroups:
    """The plugin (registered by tests/conftest.py when xdist is loaded)."""

    def __init__(self, group_of: Callable[[pytest.Item], str | None]) -> None:
        self.group_of = group_of
        self.dir = ""
        self.known: dict[str, float] = {}        # durations recorded by the last run
        self.durations: dict[str, float] = {}    # this run's

    # ---- the controller
    def pytest_configure_node(self, node) -> None:
        if not self.dir:
            self.dir = tempfile.mkdtemp(prefix="roost-xdist-groups-")
            self.known = _read_durations()       # read once: every worker orders by the same
        node.workerinput[_KEY] = self.dir
        node.workerinput[_KEY + "_durations"] = self.known

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log) -> LoadScopeScheduling | None:
        if config.getvalue("dist") != "loadgroup" or not self.dir:
            return None
        return GroupScheduling(config, log, Path(self.dir))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if hasattr(report, "node"):          # (a worker's report, as the controller gets it)
            self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self.durations and not hasattr(session.config, "workerinput"):
            known = _read_durations()
            known.update(self.durations)
            DURATIONS.parent.mkdir(parents=True, exist_ok=True)
            tmp = DURATIONS.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, sort_keys=True))
            tmp.replace(DURATIONS)

    # ---- a worker
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """Groups to the controller; items longest group first (the scheduler hands groups out
        in the order of the collection; every worker sorts the same, as xdist requires)."""
        workerinput = getattr(config, "workerinput", {})
        if not workerinput.get(_KEY):
            return
        groups = {item.nodeid: group for item in items if (group := self.group_of(item)) is not None}
        write_groups(Path(workerinput[_KEY]), groups)
        items[:] = longest_first(items, groups, workerinput.get(_KEY + "_durations", {}))


def write_groups(where: Path, groups: dict[str, str]) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    tmp = where / f"{worker}.tmp"
    tmp.write_text(json.dumps(groups))
    tmp.replace(where / f"{worker}.json")


def longest_first(items: list[pytest.Item], groups: dict[str, str], known: dict[str, float]) -> list[pytest.Item]:
    """`items` with each group's tests together, in their order, the groups by their total
    recorded duration, longest first (a test never recorded counts the mean)."""
    default = sum(known.values()) / len(known) if known else 1.0
    weight: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        scope = groups.get(item.nodeid, item.nodeid)
        weight[scope] = weight.get(scope, 0.0) + known.get(item.nodeid, default)
        first.setdefault(scope, i)
    def key(pair: tuple[int, pytest.Item]) -> tuple[float, int, int]:
        scope = groups.get(pair[1].nodeid, pair[1].nodeid)
        return (-weight[scope], first[scope], pair[0])
    return [item for _, item in sorted(enumerate(items), key=key)]


def _read_durations() -> dict[str, float]:
    """The seed's durations, overridden by those this checkout's runs recorded."""
    return _durations_in(SEED_DURATIONS) | _durations_in(DURATIONS)


def _durations_in(path: Path) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


class GroupScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with the workers' groups as scopes, in collection order."""

    def __init__(self, config: pytest.Config, log, where: Path) -> None:
        super().__init__(config, log)
        config.option.loadscopereorder = False     # (by size otherwise: the items are in order)
        self.where = where
        self._groups: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._groups is None:
            self._groups = {}
            for path in sorted(self.where.glob("*.json")):
                self._groups.update(json.loads(path.read_text()))
        return self._groups.get(nodeid, nodeid)
