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
from typing import TypeVar

import grpc

from roost.client.errors import RoostClientError, from_rpc_error
from roost.v1 import control_pb2 as pb
from roost.v1 import control_pb2_grpc

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
        self.addr = addr or default_addr()
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

    def modules(self) -> list[pb.Module]:
        """Every module the daemon holds."""
        with _rpc_errors():
            return list(self._stub.ListModules(pb.ListModulesRequest()).modules)

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
            checkpoint_every_seconds=checkpoint_every_seconds,
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

    def list(self, all: bool = False, timeout: float | None = None) -> list[pb.Execution]:
        """The executions this daemon owns, pending and running; with `all`, ended ones too.
        `timeout` bounds the call (a cluster-wide listing must not hang on one member)."""
        request = pb.ListExecutionsRequest(all=all)
        with _rpc_errors():
            return list(self._stub.ListExecutions(request, timeout=timeout).executions)

    def logs(
        self, id: str, follow: bool = False, stream: pb.LogStream | None = None, from_seq: int = 0
    ) -> Iterator[pb.LogChunk]:
        """Replays the durable output from record `from_seq`; with `follow`, until the end.

        `stream` is pb.STDOUT or pb.STDERR to pick one; None gives both, interleaved.
        """
        request = pb.StreamLogsRequest(
            id=id, follow=follow, stream=stream or pb.LOG_STREAM_UNSPECIFIED, from_seq=from_seq
        )
        with _rpc_errors():
            responses = self._stub.StreamLogs(request)
        return _translated(responses)

    def wait(self, id: str, timeout: float | None = None) -> pb.Execution:
        """Blocks until the execution ends; past `timeout` seconds, DEADLINE_EXCEEDED."""
        request = pb.WaitExecutionRequest(id=id, timeout_seconds=timeout or 0.0)
        with _rpc_errors():
            return self._stub.WaitExecution(request)

    def kill(self, id: str) -> pb.Execution:
        """Kills a running execution; it ends in state KILLED."""
        with _rpc_errors():
            return self._stub.KillExecution(pb.KillExecutionRequest(id=id))

    def checkpoint(self, id: str, timeout: float | None = None) -> pb.CheckpointResponse:
        """Checkpoints a running execution at its next safepoint; it keeps running."""
        request = pb.CheckpointRequest(id=id, timeout_seconds=timeout or 0.0)
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
                                    downtime_budget_seconds=downtime_budget_seconds,
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

    def copy_out(self, id: str, guest_path: str) -> Iterator[pb.FileChunk]:
        """Streams a file or directory tree out of the execution's filesystem."""
        with _rpc_errors():
            responses = self._stub.CopyOut(pb.CopyOutRequest(id=id, path=guest_path))
        return _translated(responses)


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
