"""Fixtures for integration tests against real roostd processes (imported by conftest.py)."""
from __future__ import annotations

import pytest

from tests.framework.etcd import Etcd
from tests.framework.harness import Roostd


@pytest.fixture(scope="module")
def roostd(tmp_path_factory):
    """One real daemon shared by a test module (fresh data dir)."""
    daemon = Roostd(tmp_path_factory.mktemp("roostd") / "data").start()
    yield daemon
    daemon.stop()


@pytest.fixture
def fresh_roostd(tmp_path):
    """A daemon of the test's own, for tests that stop, kill or restart it."""
    daemon = Roostd(tmp_path / "data")
    yield daemon
    if daemon.proc is not None and daemon.proc.poll() is None:
        daemon.kill9()


@pytest.fixture
def etcd(tmp_path):
    """A started single-member etcd of the test's own (data under tmp_path/etcd); stopped after."""
    server = Etcd(tmp_path / "etcd").start()
    yield server
    server.stop()
