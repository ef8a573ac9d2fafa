"""pytest fixtures shared by the test modules: real roostd daemons (see conftest_daemon)."""
from __future__ import annotations

import os
import time
import types

import pytest

from tests.framework.fixtures import etcd, fresh_roostd, roostd  # noqa: F401  (fixtures)
from tests.framework.harness import Roostd
from tests.framework.httpserver import http_server, https_server, session_test_ca  # noqa: F401  (fixtures)

_BEGAN = pytest.StashKey[float]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "serial: measures time (a deadline, a pause, a call's latency) or races a guest's run against "
                   "background work: runs alone, after the "
                   "parallel run, so that no other test's load moves what it measures")
    if config.pluginmanager.hasplugin("xdist"):
        from tests.framework.xdist_groups import XdistGroups
        config.pluginmanager.register(XdistGroups(_group), "roost-xdist-groups")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """ROOST_SERIAL=skip leaves out the tests marked `serial` (the parallel run), =only keeps
    only them (the run after it, tests/run.sh); unset, both run."""
    serial = os.environ.get("ROOST_SERIAL", "")
    if serial in ("skip", "only"):
        keep = [item for item in items if (item.get_closest_marker("serial") is not None) == (serial == "only")]
        dropped = [item for item in items if item not in keep]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep


def _group(item: pytest.Item) -> str | None:
    """The tests pytest-xdist runs together, on one worker (tests/framework/xdist_groups.py):
    module path::case for a test parametrized over a third-party guest case (prepared once);
    the module's path for a test that uses a fixture its module (or class) shares, such as a
    daemon (started once); None, a test any worker may run on its own, for the rest."""
    module = item.nodeid.split("::")[0]
    case = getattr(getattr(item, "callspec", None), "params", {}).get("case")
    name = getattr(case, "name", None)
    if isinstance(name, str):
        return f"{module}::{name}"
    return module if _uses_shared_fixture(item) else None


def _uses_shared_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:                     # (pytest's internals moved: keep modules together)
        return True
    return any(d.scope in ("module", "class", "package")
               for defs in info.name2fixturedefs.values() for d in defs)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_BEGAN] = time.time()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failure's report is made readable whatever interrupted the test, and carries the tail
    of the log of every daemon the test used (CI keeps nothing else of them).

    pytest-timeout fails a test from a SIGALRM handler; on Python 3.11 the frame it interrupts
    can have `tb_lineno` None (an instruction without a line), and pytest's formatter then dies
    with an INTERNALERROR that ends the whole run and hides which test timed out. So every frame
    gets a line number before the report is made."""
    if call.excinfo is not None and _renumber_chain(call.excinfo.value):
        call.excinfo = pytest.ExceptionInfo.from_exception(call.excinfo.value)
    report = yield
    if report.failed:
        began = item.stash.get(_BEGAN, 0.0)
        for daemon in Roostd.started:
            if daemon.started_at >= began or (daemon.proc is not None and daemon.proc.poll() is None):
                report.sections.append((f"roostd {daemon.addr} log (tail)", daemon.log()))
    return report


def _renumber_chain(exc: BaseException) -> bool:
    """Renumber the tracebacks of `exc` and the exceptions chained to it; whether any changed."""
    changed, seen = False, set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        numbered = _numbered(exc.__traceback__)
        if numbered is not exc.__traceback__:
            exc.with_traceback(numbered)
            changed = True
        exc = exc.__cause__ or exc.__context__
    return changed


def _numbered(tb: types.TracebackType | None) -> types.TracebackType | None:
    """`tb` itself if every entry has a line number, else a copy whose missing ones are the
    frame's current line (or its first)."""
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    if all(t.tb_lineno is not None for t in entries):
        return entries[0] if entries else None
    rebuilt = None
    for t in reversed(entries):
        lineno = t.tb_lineno
        if lineno is None:
            lineno = t.tb_frame.f_lineno or t.tb_frame.f_code.co_firstlineno
        rebuilt = types.TracebackType(rebuilt, t.tb_frame, t.tb_lasti, lineno)
    return rebuilt
