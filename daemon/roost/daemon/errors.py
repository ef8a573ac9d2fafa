"""The one exception tree of roostd.

    RoostError                  base; str() names the operation and the object      -> INTERNAL
    ├── InvalidRequest          malformed request arguments           -> INVALID_ARGUMENT
    │   ├── ModuleRejected      invalid or unsupported wasm module    -> INVALID_ARGUMENT
    │   │   └── InvalidModule   not well-formed wasm (modules.wasmparse)
    │   └── Inflated            compressed bytes malformed or past their bound (checkpoint.inflate)
    ├── NotFound                unknown module, execution or file      -> NOT_FOUND
    ├── NameInUse               a start names an existing execution's name -> ALREADY_EXISTS
    ├── PermissionDenied        the caller may not do this (a non-peer calling the Peer
    │                           service, a peer claiming another's identity) -> PERMISSION_DENIED
    ├── StateConflict           not valid in the current state        -> FAILED_PRECONDITION
    │   └── Superseded          another owns it now (a peer, etcd: cluster.membership)
    ├── LimitExceeded           a configured limit was hit            -> RESOURCE_EXHAUSTED
    │   └── OutputQuotaExceeded an execution's stored output is at its quota (it pauses)
    ├── TimedOut                a wait's own deadline passed          -> DEADLINE_EXCEEDED  retriable
    ├── ReplayDiverged          a guest left its journal's path on replay (checkpoint.journal)
    ├── PeerError               a peer refused or failed a call (cluster.peers)
    │   └── PeerUnavailable     a peer cannot be reached              -> UNAVAILABLE        retriable
    ├── Unavailable             etcd cannot be reached                 -> UNAVAILABLE        retriable
    └── StoreError              the LMDB store failed                 -> INTERNAL
        ├── StoreFull           no room (map or disk) for more output  -> RESOURCE_EXHAUSTED retriable
        ├── FormatError         on-disk format version not supported
        └── Corrupt             a stored value fails its checksum      -> DATA_LOSS
            ├── CorruptPage     a page frame fails its own checks (checkpoint.frames)
            └── CorruptCheckpoint  a checkpoint's host state does not decode (checkpoint.hoststate)

A class without an arrow maps as its parent does; `retriable` marks an error after which the
same call, unchanged, may succeed later (nothing is wrong with the request or the data). Both
live on the classes (`status`, the name of a grpc.StatusCode, is a string so that a worker
process never imports grpc). A module named in brackets raises the class and imports it from
here: every class is defined in this module.

Foreign errors are translated at exactly one boundary each: LMDB errors in `store`, wasmtime
errors in `worker`/`modules`, and roost errors to gRPC status codes in `service.rpc`.
"""
from __future__ import annotations

from typing import ClassVar


class RoostError(Exception):
    """Base of every error roostd raises on purpose."""
    status: ClassVar[str] = "INTERNAL"       # a grpc.StatusCode name (`service.rpc.status_for`)
    retriable: ClassVar[bool] = False


class InvalidRequest(RoostError):
    """The request's arguments cannot be acted on."""
    status = "INVALID_ARGUMENT"


class ModuleRejected(InvalidRequest):
    """A module is not valid wasm, or uses something roost does not provide."""


class InvalidModule(ModuleRejected):
    """The bytes are not a well-formed core wasm module (bad magic, truncated, malformed)."""


class Inflated(InvalidRequest):
    """Compressed data that is malformed or would grow past its bound (`checkpoint.inflate`).
    Refused as input; a reader of stored bytes reports it as a store error instead."""


class NotFound(RoostError):
    """A module, execution or file does not exist."""
    status = "NOT_FOUND"


class NameInUse(RoostError):
    """A start asks for a name an execution that still exists has (docker's Conflict)."""
    status = "ALREADY_EXISTS"


class PermissionDenied(RoostError):
    """The caller is not allowed this call: only peers may use the Peer service, and a peer
    speaks only for itself."""
    status = "PERMISSION_DENIED"


class StateConflict(RoostError):
    """The operation is not valid in the object's current state."""
    status = "FAILED_PRECONDITION"


class Superseded(StateConflict):
    """The peer knows the execution at a newer epoch: someone else owns it now."""

    def __init__(self, owner: str, address: str, epoch: int, ended: bool = False) -> None:
        super().__init__(f"execution {'ended on' if ended else 'is owned by'} {owner} at epoch {epoch}")
        self.owner, self.address, self.epoch, self.ended = owner, address, epoch, ended


class LimitExceeded(RoostError):
    """A configured limit (memory, message size, executions) was exceeded."""
    status = "RESOURCE_EXHAUSTED"


class OutputQuotaExceeded(LimitExceeded):
    """An execution's stored stdout + stderr would pass `limits.output_bytes`: the supervisor
    pauses it (as for a full store) until the quota is raised."""


class TimedOut(RoostError):
    """A wait with a timeout ended before the awaited thing happened."""
    status = "DEADLINE_EXCEEDED"
    retriable = True


class ReplayDiverged(RoostError):
    """The guest asked for something other than what the journal recorded: it is not
    deterministic, and continuing would show the world inconsistent results."""


class PeerError(RoostError):
    """A peer refused or failed a call."""


class PeerUnavailable(PeerError):
    """A peer could not be reached (down, restarting, network): the caller retries, or aborts
    a migration; a client is told UNAVAILABLE, as gRPC says of an unreachable server."""
    status = "UNAVAILABLE"
    retriable = True


class Unavailable(RoostError):
    """A service roostd depends on (etcd) cannot be reached: the same call may work later."""
    status = "UNAVAILABLE"
    retriable = True


class StoreError(RoostError):
    """The store failed; the message names the operation."""


class StoreFull(StoreError):
    """The store (LMDB map or the disk under it) has no room: executions pause, nothing is lost."""
    status = "RESOURCE_EXHAUSTED"
    retriable = True


class FormatError(StoreError):
    """The data directory was written by an incompatible format version."""


class Corrupt(StoreError):
    """Stored bytes fail their checksum (damaged on disk): never served, the message names the
    database and the key."""
    status = "DATA_LOSS"


class CorruptPage(Corrupt):
    """A stored page failed its checksum: the checkpoint cannot be restored as it is."""


class CorruptCheckpoint(Corrupt):
    """A checkpoint's host state does not decode (bad magic, version, checksum or contents):
    it cannot be restored as it is."""
