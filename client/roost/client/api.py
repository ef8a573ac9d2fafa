"""Client: a thin, typed wrapper over the roost.v1 Control service.

Programs and the CLI both use it, so content-hash dedup of uploads, message size limits and
the translation of gRPC errors into `RoostClientError` live here once.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

# With GRPC_VERBOSITY unset, grpc-core logs at INFO through absl: a failed TLS handshake becomes
# a stray "I1207 ... ssl_transport_security.cc" line beside the CLI's own message. ERROR is
# grpc's documented default; it is read once, when grpc is first imported, so it is set here.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

from roost.client import times  # noqa: E402
from roost.client.errors import RoostClientError, from_rpc_error  # noqa: E402
from roost.v1 import control_pb2 as pb  # noqa: E402
from roost.v1 import control_pb2_grpc  # noqa: E402

# Mount contents travel inside StartExecutionRequest, so messages can be large.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
KEEPALIVE = [("grpc.keepalive_time_ms", 2000), ("grpc.keepalive_timeout_ms", 2000),
             ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0)]
UPLOAD_CHUNK_BYTES = 1024 * 1024
HASH_BLOCK_BYTES = 1024 * 1024

Progress = Callable[[int, int], None]
T = TypeVar("T")


SYSTEM_SOCKET = "/run/roost/roostd.sock"


def default_addr() -> str:
    """The daemon address: $ROOST_ADDR, else roostd's default Unix socket — the system
    daemon's (/run/roost/roostd.sock) when there is one, else the user's own daemon's
    ($XDG_RUNTIME_DIR/roost/roostd.sock), as roostd places it (`config.default_control_socket`).
    A TCP address is HOST:PORT; a socket is unix:PATH."""
    if os.environ.get("ROOST_ADDR"):
        return os.environ["ROOST_ADDR"]
    if os.geteuid() == 0 or os.path.exists(SYSTEM_SOCKET):
        return f"unix:{SYSTEM_SOCKET}"
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return "unix:" + os.path.join(base, "roost", "roostd.sock")


def is_local_socket(addr: str) -> bool:
    return addr.startswith("unix:")


# The port a TCP address without one dials: the one the README's `listen` examples use (gRPC
# itself would dial 443 for a bare host).
DEFAULT_PORT = 7070


def with_default_port(addr: str) -> str:
    """HOST -> HOST:7070, [::1] -> [::1]:7070, a bare IPv6 literal -> [IPv6]:7070; an
    address with a port, unix:PATH and other gRPC target schemes (dns:, ipv4:, ...) unchanged."""
    if not addr or is_local_socket(addr) or "://" in addr \
            or addr.split(":", 1)[0] in ("dns", "ipv4", "ipv6", "unix-abstract", "vsock"):
        return addr
    if addr.startswith("["):
        return addr if "]:" in addr else f"{addr}:{DEFAULT_PORT}"
    if addr.count(":") > 1:                     # an IPv6 literal without brackets
        return f"[{addr}]:{DEFAULT_PORT}"
    return addr if ":" in addr else f"{addr}:{DEFAULT_PORT}"


def host_port(addr: str) -> tuple[str, int] | None:
    """(host, port) of a HOST:PORT or [IPv6]:PORT address; None for anything else."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not host or is_local_socket(addr):
        return None
    return host.strip("[]"), int(port)


def speaks_tls(addr: str, timeout: float = 2.0) -> bool | None:
    """Whether what listens at `addr` answers a TLS handshake: True (it completes, or the
    server answers with a TLS alert), False (it answers something else: a plaintext server),
    None (nothing to ask: not TCP, unreachable, or it hung up without a word). Used only to
    explain a failed call, so it verifies nothing."""
    import socket
    import ssl

    target = host_port(addr)
    if target is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(target, timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=target[0]):
                return True
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return None
    except ssl.SSLError as err:
        return "ALERT" in str(err).upper()
    except OSError:
        return None


class TLS:
    """Mutual TLS to a roostd that demands it: a CA certificate, a client certificate and
    its key (PEM files); from $ROOST_TLS_CA, $ROOST_TLS_CERT and $ROOST_TLS_KEY by default."""

    def __init__(self, ca: str, cert: str, key: str) -> None:
        self.paths = (ca, cert, key)
        self.ca, self.cert, self.key = (Path(p).read_bytes() for p in self.paths)

    @classmethod
    def from_env(cls) -> "TLS | None":
        paths = [os.environ.get(f"ROOST_TLS_{k}", "") for k in ("CA", "CERT", "KEY")]
        return cls(*paths) if all(paths) else None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)


def file_sha256(path: Path) -> str:
    """Hashes a file in blocks, so a large module is never held in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _rpc_errors() -> Iterator[None]:
    """Re-raises any grpc.RpcError as RoostClientError (see errors.from_rpc_error)."""
    try:
        yield
    except grpc.RpcError as err:
        raise from_rpc_error(err) from None


def _translated(stream: Iterable[T]) -> Iterator[T]:
    """Wraps a server stream so errors raised mid-iteration are translated too.

    Closing the iterator early (a `break`, Ctrl-C) cancels the call on the daemon at once
    instead of leaving it to the garbage collector.
    """
    try:
        with _rpc_errors():
            yield from stream
    finally:
        cancel = getattr(stream, "cancel", None)
        if cancel is not None:
            cancel()


class Client:
    """A connection to one roostd; cheap to create, close it (or use `with`) when done."""

    def __init__(self, addr: str | None = None, tls: TLS | None = None) -> None:
        self.addr = with_default_port(addr or default_addr())
        self.tls = tls if tls is not None else TLS.from_env()
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # A daemon whose host died or was cut off sends no reset: pings find it gone
            # within seconds, so a follower moves on to where the execution runs now.
            *KEEPALIVE,
            # Notice a restarted daemon within a second or two, not grpc's default 2 min.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        if self.tls is None or is_local_socket(self.addr):     # a socket: file permissions
            self._channel = grpc.insecure_channel(self.addr, options=options)
        else:
            self._channel = grpc.secure_channel(self.addr, self.tls.credentials(), options=options)
        self._stub = control_pb2_grpc.ControlStub(self._channel)

    def at(self, addr: str) -> Client:
        """A client of another roostd of the cluster, with the same credentials."""
        return Client(addr, self.tls)

    def close(self) -> None:
        """Closes the channel; streams still open are cancelled."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Modules

    def upload_module(self, path: str | os.PathLike[str], progress: Progress | None = None) -> pb.Module:
        """Uploads a module unless the daemon already holds the same bytes (by sha256).

        `progress(sent_bytes, total_bytes)` is called as chunks go out; a deduplicated module
        reports one call with sent == total. The returned Module has `deduplicated` set when
        no bytes had to be sent.
        """
        path = Path(path)
        total = path.stat().st_size
        sha256 = file_sha256(path)
        existing = self._find_module(sha256)
        if existing is not None:
            existing.deduplicated = True
            if progress:
                progress(total, total)
            return existing
        header = pb.ModuleHeader(name=path.name, size_bytes=total, sha256=sha256)
        with _rpc_errors():
            return self._stub.UploadModule(_upload_requests(path, header, progress))

    def _find_module(self, sha256: str) -> pb.Module | None:
        """GetModule, with NOT_FOUND meaning "not there yet" rather than an error."""
        try:
            return self.get_module(sha256)
        except RoostClientError as err:
            if err.code_name == "NOT_FOUND":
                return None
            raise

    def get_module(self, sha256: str) -> pb.Module:
        """Looks a module up by the sha256 of its bytes."""
        with _rpc_errors():
            return self._stub.GetModule(pb.GetModuleRequest(sha256=sha256))

    def modules(self, name_prefix: str = "", page_size: int = 0) -> list[pb.Module]:
        """Every module the daemon holds (whose name starts with `name_prefix`), in upload
        order; fetched a page (`page_size`, 0: the daemon's 100) at a time."""
        request = pb.ListModulesRequest(name_prefix=name_prefix, page_size=page_size)
        return list(_pages(self._stub.ListModules, request, "modules"))

    # Executions

    def start(
        self,
        module_sha256: str,
        *,
        name: str = "",
        argv0: str = "",
        args: Sequence[str] = (),
        env: Sequence[tuple[str, str]] = (),
        stdin: bytes = b"",
        mounts: Sequence[pb.Mount] = (),
        cooperative: bool = False,
        checkpoint_every_seconds: float = 0.0,
        memory_limit_bytes: int = 0,
        allow_http: Sequence[str] = (),
    ) -> pb.Execution:
        """Starts an execution of an uploaded module; `env` keeps the order given;
        `allow_http`: the destinations its guest may send HTTP requests to."""
        request = pb.StartExecutionRequest(
            module_sha256=module_sha256,
            name=name,
            argv0=argv0,
            args=list(args),
            env=[pb.EnvVar(key=k, value=v) for k, v in env],
            stdin=stdin,
            mounts=list(mounts),
            cooperative=cooperative,
            checkpoint_interval=times.to_duration(checkpoint_every_seconds),
            memory_limit_bytes=memory_limit_bytes,
            allow_http=list(allow_http),
        )
        with _rpc_errors():
            return self._stub.StartExecution(request)

    def get(self, id: str) -> pb.Execution:
        """One execution by its id."""
        with _rpc_errors():
            return self._stub.GetExecution(pb.GetExecutionRequest(id=id))

    def recover(self, id: str) -> pb.Execution:
        """Run a replica held by this daemon (its owner is gone for good; no etcd)."""
        with _rpc_errors():
            return self._stub.Recover(pb.RecoverRequest(id=id))

    def nodes(self, timeout: float | None = None) -> list[pb.Node]:
        """The cluster's members (etcd's, or this daemon and its configured peers)."""
        with _rpc_errors():
            return list(self._stub.ListNodes(pb.ListNodesRequest(), timeout=timeout).nodes)

    def list(self, all: bool = False, timeout: float | None = None, *,
             states: Sequence[pb.ExecutionState] = (), name_prefix: str = "",
             page_size: int = 0) -> list[pb.Execution]:
        """The executions this daemon owns, oldest first: those not ended; with `all`, ended
        ones too; with `states`, exactly those states; `name_prefix` filters by name. Fetched a
        page (`page_size`, 0: the daemon's 100) at a time; `timeout` bounds each page's call
        (a cluster-wide listing must not hang on one member)."""
        request = pb.ListExecutionsRequest(all=all, states=list(states), name_prefix=name_prefix,
                                           page_size=page_size)
        return list(_pages(self._stub.ListExecutions, request, "executions", timeout))

    def logs(
        self, id: str, follow: bool = False, stream: pb.LogStream | None = None, from_seq: int = 0,
        tail: int | None = None, since: Timestamp | None = None,
    ) -> Iterator[pb.LogChunk]:
        """Replays the durable output from record `from_seq`; with `follow`, until the end.

        `stream` is pb.STDOUT or pb.STDERR to pick one; None gives both, interleaved.
        `tail`: only the last that many lines (None: all); `since`: only output made durable
        at or after it. Each chunk carries its `time` (unset: stored without one).
        """
        request = pb.StreamLogsRequest(
            id=id, follow=follow, stream=stream or pb.LOG_STREAM_UNSPECIFIED, from_seq=from_seq,
            since=since,
        )
        if tail is not None:
            request.tail = tail
        with _rpc_errors():
            responses = self._stub.StreamLogs(request)
        return _translated(responses)

    def wait(self, id: str, timeout: float | None = None) -> pb.Execution:
        """Blocks until the execution ends; past `timeout` seconds, DEADLINE_EXCEEDED."""
        request = pb.WaitExecutionRequest(id=id, timeout=times.to_duration(timeout))
        with _rpc_errors():
            return self._stub.WaitExecution(request)

    def kill(self, id: str) -> pb.Execution:
        """Kills a running execution; it ends in state KILLED."""
        with _rpc_errors():
            return self._stub.KillExecution(pb.KillExecutionRequest(id=id))

    def checkpoint(self, id: str, timeout: float | None = None) -> pb.CheckpointResponse:
        """Checkpoints a running execution at its next safepoint; it keeps running."""
        request = pb.CheckpointRequest(id=id, timeout=times.to_duration(timeout))
        with _rpc_errors():
            return self._stub.Checkpoint(request)

    def pause(self, id: str) -> pb.Execution:
        """Checkpoints and stops an execution (state PAUSED) until `resume`."""
        with _rpc_errors():
            return self._stub.Pause(pb.PauseRequest(id=id))

    def resume(self, id: str) -> pb.Execution:
        with _rpc_errors():
            return self._stub.Resume(pb.ResumeRequest(id=id))

    def migrate(self, id: str, target: str, cold: bool = False, downtime_budget_seconds: float = 0.0,
                max_rounds: int = 0) -> Iterator[pb.MigrateProgress]:
        """Moves an execution to the roostd at `target`; progress, then the report (last)."""
        request = pb.MigrateRequest(id=id, target=target, cold=cold,
                                    downtime_budget=times.to_duration(downtime_budget_seconds),
                                    max_rounds=max_rounds)
        with _rpc_errors():
            responses = self._stub.Migrate(request)
        return _translated(responses)

    def prepare_module(self, sha256: str, cooperative: bool = False) -> pb.Module:
        """Prepares a stored module for a mode ahead of its first start."""
        with _rpc_errors():
            return self._stub.PrepareModule(pb.PrepareModuleRequest(sha256=sha256, cooperative=cooperative))

    def debug_checkpoint(self, id: str, number: int = 0) -> pb.DebugCheckpointResponse:
        """A stored checkpoint summarised (`roost debug checkpoint`); 0: the newest restorable."""
        with _rpc_errors():
            return self._stub.DebugCheckpoint(pb.DebugCheckpointRequest(id=id, number=number))

    def version(self, timeout: float | None = None) -> pb.Version:
        """The daemon's version, API and node id (`roost version`)."""
        with _rpc_errors():
            return self._stub.GetVersion(pb.GetVersionRequest(), timeout=timeout)

    def copy_out(self, id: str, guest_path: str) -> Iterator[pb.FileChunk]:
        """Streams a file or directory tree out of the execution's filesystem."""
        with _rpc_errors():
            responses = self._stub.CopyOut(pb.CopyOutRequest(id=id, path=guest_path))
        return _translated(responses)

    # Lifecycle: rm, prune, modules rm

    def remove(self, id: str, force: bool = False) -> pb.RemoveExecutionResponse:
        """Removes an ended execution and everything stored of it; `force` kills it first."""
        with _rpc_errors():
            return self._stub.RemoveExecution(pb.RemoveExecutionRequest(id=id, force=force))

    def prune(self, older_than_seconds: float = 0.0, states: Sequence[pb.ExecutionState] = (),
              dry_run: bool = False) -> pb.PruneExecutionsResponse:
        """Removes the ended executions (of `states`; all ended ones if empty) that ended at
        least `older_than_seconds` ago; `dry_run` only lists them."""
        from google.protobuf.duration_pb2 import Duration
        older_than = Duration()
        older_than.FromNanoseconds(round(older_than_seconds * 1e9))
        request = pb.PruneExecutionsRequest(older_than=older_than, states=list(states),
                                            dry_run=dry_run)
        with _rpc_errors():
            return self._stub.PruneExecutions(request)

    def remove_module(self, sha256: str, force: bool = False) -> pb.RemoveModuleResponse:
        """Removes a module (a sha256 or a unique prefix) no execution still uses; `force`:
        even if ended executions used it."""
        with _rpc_errors():
            return self._stub.RemoveModule(pb.RemoveModuleRequest(sha256=sha256, force=force))


def _pages(call: Callable, request: Any, field: str, timeout: float | None = None) -> Iterator[Any]:
    """A paged listing's items, page after page: `request` again with each next_page_token
    until the daemon answers with none."""
    while True:
        with _rpc_errors():
            page = call(request, timeout=timeout)
        yield from getattr(page, field)
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token


def _upload_requests(
    path: Path, header: pb.ModuleHeader, progress: Progress | None
) -> Iterator[pb.UploadModuleRequest]:
    """The UploadModule stream: the header, then the file in 1 MiB chunks."""
    yield pb.UploadModuleRequest(header=header)
    sent = 0
    with path.open("rb") as f:
        while chunk := f.read(UPLOAD_CHUNK_BYTES):
            yield pb.UploadModuleRequest(chunk=chunk)
            sent += len(chunk)
            if progress:
                progress(sent, header.size_bytes)
