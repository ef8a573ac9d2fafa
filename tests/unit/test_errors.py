"""The error tree (roost.daemon.errors): every RoostError of the daemon is drawn in it where it
really sits, declares whether a retry may help and the gRPC status it becomes; the rpc helper
maps by the classes alone."""
from __future__ import annotations

import importlib
import pkgutil
import re

import grpc
import pytest

import roost.daemon
from roost.daemon import errors
from roost.daemon.service import rpc

# Classes still defined outside errors.py (checkpoint.frames, modules.wasmparse, cluster): drawn
# in the tree all the same, to move into errors.py.
DEFINED_ELSEWHERE: set[str] = set()
_BRANCH = re.compile(r"^((?:│   |    )*)[├└]── (\w+)")


def _all_daemon_modules() -> None:
    for info in pkgutil.walk_packages(roost.daemon.__path__, "roost.daemon."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def drawn_tree() -> dict[str, str]:
    """name -> parent name, as the docstring of errors.py draws them."""
    lines = errors.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("RoostError"))
    parents, stack = {}, ["RoostError"]
    for line in lines[start + 1:]:
        if not line.strip():
            break
        m = _BRANCH.match(line[4:])
        if m:
            depth = len(m.group(1)) // 4 + 1
            del stack[depth:]
            parents[m.group(2)] = stack[-1]
            stack.append(m.group(2))
    return parents


@pytest.fixture(scope="module")
def roost_errors() -> list[type]:
    _all_daemon_modules()
    return sorted(_subclasses(errors.RoostError), key=lambda c: c.__name__)


def test_every_roost_error_is_drawn_under_its_real_parent(roost_errors):
    tree = drawn_tree()
    for cls in roost_errors:
        assert cls.__name__ in tree, f"{cls.__module__}.{cls.__name__} is not drawn in errors.py"
        assert tree[cls.__name__] == cls.__bases__[0].__name__, cls
    assert set(tree) == {c.__name__ for c in roost_errors}      # nothing drawn that is gone


def test_every_roost_error_is_defined_in_errors_py(roost_errors):
    for cls in roost_errors:
        assert cls.__module__ == "roost.daemon.errors" or cls.__name__ in DEFINED_ELSEWHERE, cls


def test_every_roost_error_has_a_status_and_a_retriable_flag(roost_errors):
    for cls in [errors.RoostError, *roost_errors]:
        assert isinstance(cls.retriable, bool), cls
        assert cls.status in grpc.StatusCode.__members__, cls


def test_the_rpc_helper_maps_by_the_classes():
    cases = {errors.InvalidRequest: "INVALID_ARGUMENT", errors.ModuleRejected: "INVALID_ARGUMENT",
             errors.NotFound: "NOT_FOUND", errors.PermissionDenied: "PERMISSION_DENIED",
             errors.StateConflict: "FAILED_PRECONDITION", errors.LimitExceeded: "RESOURCE_EXHAUSTED",
             errors.OutputQuotaExceeded: "RESOURCE_EXHAUSTED", errors.TimedOut: "DEADLINE_EXCEEDED",
             errors.StoreError: "INTERNAL", errors.StoreFull: "RESOURCE_EXHAUSTED",
             errors.FormatError: "INTERNAL", errors.Corrupt: "DATA_LOSS",
             errors.CorruptCheckpoint: "DATA_LOSS", errors.PeerError: "INTERNAL",
             errors.PeerUnavailable: "UNAVAILABLE", errors.ReplayDiverged: "INTERNAL"}
    for cls, name in cases.items():
        assert rpc.status_for(cls("x")) == grpc.StatusCode[name], cls


def test_peer_unavailable_is_unavailable_and_retriable():
    from roost.daemon.cluster.peers import PeerError, PeerUnavailable
    assert PeerUnavailable is errors.PeerUnavailable and PeerError is errors.PeerError
    assert rpc.status_for(PeerUnavailable("peer a:1: down")) == grpc.StatusCode.UNAVAILABLE
    assert PeerUnavailable.retriable and not PeerError.retriable


def test_moved_classes_are_the_same_objects_where_they_used_to_live():
    from roost.daemon.checkpoint import inflate, journal
    assert journal.ReplayDiverged is errors.ReplayDiverged
    assert inflate.Inflated is errors.Inflated
    with pytest.raises(errors.Inflated):
        inflate.inflate(b"not zstd", 100, "t")
