"""Control API listings and lookups (issue 15): ListExecutions and ListModules come a page at a
time (page_size, an opaque page_token, "" at the end) in a stable order, filtered by state and
name prefix; a token no listing handed out is INVALID_ARGUMENT; the client pages transparently;
CopyOut of a file that is not there is NOT_FOUND, in one line; times are Timestamps."""
from __future__ import annotations

import hashlib
import time

import grpc
import pytest

from roost.client import times
from roost.client.api import Client
from roost.client.errors import RoostClientError
from roost.v1 import control_pb2 as pb
from roost.v1 import control_pb2_grpc
from tests.framework.guestbuild import compile_guest

NAMES = ["page-a1", "page-a2", "page-b1", "page-b2", "page-b3"]


@pytest.fixture(scope="module")
def listed(roostd):
    """Five short executions named NAMES (ended, in this order) and one sleeping one
    ("page-sleeper"), on the module's shared daemon: (client, ids by name)."""
    with Client(roostd.addr) as client:
        hello = client.upload_module(compile_guest("hello"))
        ids = {}
        for name in NAMES:
            ids[name] = client.start(hello.sha256, name=name, argv0="hello").id
            client.wait(ids[name], timeout=60)
        sleeper = client.upload_module(compile_guest("sleeper"))
        ids["page-sleeper"] = client.start(sleeper.sha256, name="page-sleeper", argv0="sleeper",
                                           args=["60"]).id
        yield client, ids
        client.kill(ids["page-sleeper"])


def pages(stub, request) -> list[pb.ListExecutionsResponse]:
    out = []
    while True:
        out.append(stub.ListExecutions(request, timeout=10))
        if not out[-1].next_page_token:
            return out
        request.page_token = out[-1].next_page_token
        assert len(out) < 20, "the token never ends"


def test_executions_come_in_pages_in_creation_order(roostd, listed) -> None:
    client, ids = listed
    with roostd.channel() as ch:
        stub = control_pb2_grpc.ControlStub(ch)
        got = pages(stub, pb.ListExecutionsRequest(all=True, name_prefix="page-", page_size=2))
    assert [len(p.executions) for p in got] == [2, 2, 2]
    names = [e.name for p in got for e in p.executions]
    assert names == [*NAMES, "page-sleeper"]
    created = [times.unix_seconds(e.create_time) for p in got for e in p.executions]
    assert created == sorted(created) and created[0] > time.time() - 600
    assert all(e.HasField("finish_time") for p in got for e in p.executions[:5] if e.name != "page-sleeper")
    # the client walks the pages itself: `roost ps` sees one list
    assert [e.name for e in client.list(all=True, name_prefix="page-", page_size=2)] == names
    assert [e.name for e in client.list(all=True, name_prefix="page-")] == names


def test_state_and_name_filters(listed) -> None:
    client, ids = listed
    assert [e.name for e in client.list(name_prefix="page-")] == ["page-sleeper"]    # not ended
    exited = client.list(states=[pb.EXITED], name_prefix="page-", page_size=1)
    assert [e.name for e in exited] == NAMES
    assert [e.name for e in client.list(all=True, name_prefix="page-b")] == NAMES[2:]
    assert client.list(states=[pb.FAILED, pb.KILLED], name_prefix="page-") == []
    assert client.list(all=True, name_prefix="page-zzz") == []


@pytest.mark.parametrize("token", ["not a token!", "bm9wZQ", "MS41L3g" + "A" * 600, "bmFuL3g"])
def test_a_page_token_no_listing_handed_out_is_invalid_argument(roostd, listed, token) -> None:
    with roostd.channel() as ch:
        stub = control_pb2_grpc.ControlStub(ch)
        for call, request in ((stub.ListExecutions, pb.ListExecutionsRequest(page_token=token)),
                              (stub.ListModules, pb.ListModulesRequest(page_token=token))):
            with pytest.raises(grpc.RpcError) as e:
                call(request, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
            assert "page_token" in e.value.details() and "\n" not in e.value.details()


def test_an_unknown_state_filter_is_invalid_argument(roostd, listed) -> None:
    with roostd.channel() as ch:
        stub = control_pb2_grpc.ControlStub(ch)
        for states in ([99], [pb.EXECUTION_STATE_UNSPECIFIED]):
            with pytest.raises(grpc.RpcError) as e:
                stub.ListExecutions(pb.ListExecutionsRequest(states=states), timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "states" in e.value.details()


def test_modules_come_in_pages_with_a_name_filter(listed) -> None:
    client, _ = listed
    client.upload_module(compile_guest("exitcode"))
    everything = client.modules()
    assert len(everything) >= 3
    assert [m.sha256 for m in client.modules(page_size=1)] == [m.sha256 for m in everything]
    uploaded = [(times.unix_seconds(m.upload_time), m.sha256) for m in everything]
    assert uploaded == sorted(uploaded) and all(t > 0 for t, _ in uploaded)
    hello = hashlib.sha256(compile_guest("hello").read_bytes()).hexdigest()
    assert [m.sha256 for m in client.modules(name_prefix="hello-")] == [hello]


def test_copying_out_a_missing_file_is_not_found_in_one_line(listed) -> None:
    client, _ = listed
    hello = client.upload_module(compile_guest("hello"))
    mount = pb.Mount(guest_path="/data", entries=[pb.FileEntry(path="a.txt", kind=pb.FileEntry.FILE,
                                                                  data=b"here\n")])
    ex = client.start(hello.sha256, argv0="hello", mounts=[mount])
    client.wait(ex.id, timeout=60)
    assert b"".join(c.data for c in client.copy_out(ex.id, "/data/a.txt")) == b"here\n"
    for path in ("/data/missing.txt", "/data/a.txt/below", "/elsewhere/x"):
        with pytest.raises(RoostClientError) as e:
            list(client.copy_out(ex.id, path))
        assert e.value.code_name == "NOT_FOUND", e.value
        assert e.value.message == f"no such file in {ex.id}: {path}"
    with pytest.raises(RoostClientError) as e:
        list(client.copy_out("feedfacecafe", "/data/a.txt"))
    assert e.value.code_name == "NOT_FOUND" and "feedfacecafe" in e.value.message
