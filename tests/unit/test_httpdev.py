"""The /dev/http device files (runtime.httpdev) without a daemon: parsing what a guest writes,
the answer a read gets, the limits, and the state saved with a checkpoint (hoststate 1.3)."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from roost.daemon.checkpoint import hoststate
from roost.daemon.http.policy import RequestError
from roost.daemon.http.records import Reply, Request
from roost.daemon.http.settings import HttpSettings
from roost.daemon.runtime.httpdev import HttpDevice, HttpDevState, parse_request, status_line
from roost.daemon.runtime.outbound import MAX_HELD
from roost.daemon.runtime.vfs import Errno, FsError, Vfs
from roost.daemon.runtime.wasi import WasiHost, initial_state


@dataclass
class FakeOutbound:
    """Stands in for `Outbound`: records each request, answers with `reply`."""
    reply: Reply = Reply(0, 200, b"X-A: 1\r\n", b"hello")
    last_error: str = ""
    sent: list[Request] = field(default_factory=list)

    def perform(self, request: Request) -> Reply:
        self.sent.append(request)
        self.last_error = self.reply.error if self.reply.errno else ""
        return self.reply


def device() -> tuple[HttpDevice, Vfs]:
    vfs = Vfs()
    return HttpDevice.mount(vfs), vfs


def test_parse_request_takes_everything_after_the_blank_line_as_the_body():
    r = parse_request(b"POST http://h/p HTTP/1.1\r\nA: 1\r\nB:  two \r\n\r\nbody\r\n\r\nmore")
    assert r == Request("POST", "http://h/p", (("A", "1"), ("B", "two")), b"body\r\n\r\nmore")
    assert parse_request(b"GET http://h/\n\n") == Request("GET", "http://h/", (), b"")


@pytest.mark.parametrize("raw", [b"", b"GET http://h/ HTTP/1.1\r\n", b"GET\r\n\r\n",
                                 b"GET http://h/ FTP/1\r\n\r\n", b"GET http://h/ HTTP/1.1\r\nbad\r\n\r\n",
                                 b"GET http://h/\xff HTTP/1.1\r\n\r\n"])
def test_parse_request_refuses_what_is_not_a_request(raw):
    with pytest.raises(RequestError):
        parse_request(raw)


def test_status_line_has_the_reason_phrase():
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"
    assert status_line(599) == b"HTTP/1.1 599 Unknown\r\n"


def test_first_read_makes_the_request_once_then_the_file_is_the_response():
    dev, vfs = device()
    ino = dev.create(vfs, dev.root, "a")
    dev.write(ino, b"GET http://h/ HTTP/1.1\r\n\r\n")
    http = FakeOutbound()
    assert dev.content(ino, http) == b"GET http://h/ HTTP/1.1\r\n\r\n"      # (stat before the read)
    assert dev.answer(ino, http) and not dev.answer(ino, http)
    assert len(http.sent) == 1
    assert dev.content(ino, http) == b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nhello"
    with pytest.raises(FsError) as e:
        dev.write(ino, b"more")
    assert e.value.errno == Errno.INVAL
    assert vfs.data_bytes == 0            # none of it counts against the files' budget


def test_a_failed_request_is_its_errno_and_its_message_is_in_the_error_file():
    dev, vfs = device()
    ino = dev.create(vfs, dev.root, "a")
    dev.write(ino, b"GET http://h/ HTTP/1.1\r\n\r\n")
    http = FakeOutbound(Reply(int(Errno.TIMEDOUT), error="timed out after 2 s"))
    dev.answer(ino, http)
    for _ in range(2):
        with pytest.raises(FsError) as e:
            dev.content(ino, http)
        assert e.value.errno == Errno.TIMEDOUT
    assert dev.content(dev.error, http) == b"timed out after 2 s"
    bad = dev.create(vfs, dev.root, "b")
    dev.write(bad, b"nonsense\r\n\r\n")
    dev.answer(bad, http)
    with pytest.raises(FsError) as e:
        dev.content(bad, http)
    assert e.value.errno == Errno.INVAL and "nonsense" in http.last_error
    assert len(http.sent) == 1            # a malformed request is never made


def test_files_elsewhere_are_plain_and_the_device_files_are_capped():
    dev, vfs = device()
    other = vfs.create(dev.root, "sub", "dir")
    assert not dev.owns(dev.create(vfs, other, "plain"))
    names = [dev.create(vfs, dev.root, f"f{i}") for i in range(MAX_HELD)]
    with pytest.raises(FsError) as e:
        dev.create(vfs, dev.root, "one-more")
    assert e.value.errno == Errno.MFILE
    vfs.unlink(dev.root, "f0")
    vfs.collect(names[0], still_open=False)
    dev.create(vfs, dev.root, "one-more")     # room again once one is gone


def test_the_folder_exists_only_when_http_is_allowed():
    settings = HttpSettings.from_meta({
        "allow": [{"prefix": "http://127.0.0.1:1/"}], "timeout_seconds": 1, "connect_timeout_seconds": 1,
        "retries": 0, "backoff_seconds": 0.1, "max_response_bytes": 100, "ca_bundle": "",
        "execution": ["http://127.0.0.1:1/"]})
    on = WasiHost(initial_state(["x"], [], b"", Vfs()), lambda fd, b: None, http_settings=settings)
    off = WasiHost(initial_state(["x"], [], b"", Vfs()), lambda fd, b: None)
    assert [name for name, _ in on.vfs.preopens] == ["/dev/http"]
    assert [e.preopen for e in on.fds.used.values() if e.preopen] == ["/dev/http"]
    assert off.vfs.preopens == [] and off.httpdev.root == 0
    assert on.save().httpdev == HttpDevState(on.httpdev.root, on.httpdev.error)


def test_device_state_round_trips_through_the_host_state():
    dev, vfs = device()
    http = FakeOutbound()
    written = dev.create(vfs, dev.root, "written")
    dev.write(written, b"POST http://h/ HTTP/1.1\r\n\r\nbody")
    answered = dev.create(vfs, dev.root, "answered")
    dev.write(answered, b"GET http://h/ HTTP/1.1\r\n\r\n")
    dev.answer(answered, http)
    host = WasiHost(initial_state(["x"], [], b"", vfs), lambda fd, b: None)
    host.httpdev = dev
    state = host.save()
    again = hoststate.decode(hoststate.encode(state), b"")
    assert again.httpdev == state.httpdev and again.httpdev is not None
    restored = HttpDevice(again.httpdev)
    assert restored.content(written, http) == b"POST http://h/ HTTP/1.1\r\n\r\nbody"
    assert restored.content(answered, http) == b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nhello"
