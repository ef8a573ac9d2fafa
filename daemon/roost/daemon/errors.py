"""The one exception tree of roostd.

    RoostError                  base; str() names the operation and the object
    ├── InvalidRequest          malformed request arguments           -> INVALID_ARGUMENT
    │   └── ModuleRejected      invalid or unsupported wasm module    -> INVALID_ARGUMENT
    ├── NotFound                unknown module, execution or file      -> NOT_FOUND
    ├── PermissionDenied        the caller may not do this (a non-peer calling the Peer
    │                           service, a peer claiming another's identity) -> PERMISSION_DENIED
    ├── StateConflict           not valid in the current state        -> FAILED_PRECONDITION
    ├── LimitExceeded           a configured limit was hit            -> RESOURCE_EXHAUSTED
    │   └── OutputQuotaExceeded an execution's stored output is at its quota (it pauses)
    ├── TimedOut                a wait's own deadline passed          -> DEADLINE_EXCEEDED
    └── StoreError              the LMDB store failed                 -> INTERNAL
        ├── StoreFull           no room (map or disk) for more output  -> RESOURCE_EXHAUSTED
        ├── FormatError         on-disk format version not supported
        └── Corrupt             a stored value fails its checksum      -> DATA_LOSS
            └── CorruptPage     a page frame fails its own checks (snapshot)

Foreign errors are translated at exactly one boundary each: LMDB errors in `store`, wasmtime
errors in `worker`/`modules`, and roost errors to gRPC status codes in `api.status_for`.
"""
from __future__ import annotations


class RoostError(Exception):
    """Base of every error roostd raises on purpose."""


class InvalidRequest(RoostError):
    """The request's arguments cannot be acted on."""


class ModuleRejected(InvalidRequest):
    """A module is not valid wasm, or uses something roost does not provide."""


class NotFound(RoostError):
    """A module, execution or file does not exist."""


class PermissionDenied(RoostError):
    """The caller is not allowed this call: only peers may use the Peer service, and a peer
    speaks only for itself."""


class StateConflict(RoostError):
    """The operation is not valid in the object's current state."""


class LimitExceeded(RoostError):
    """A configured limit (memory, message size, executions) was exceeded."""


class OutputQuotaExceeded(LimitExceeded):
    """An execution's stored stdout + stderr would pass `limits.output_bytes`: the supervisor
    pauses it (as for a full store) until the quota is raised."""


class TimedOut(RoostError):
    """A wait with a timeout ended before the awaited thing happened."""


class StoreError(RoostError):
    """The store failed; the message names the operation."""


class StoreFull(StoreError):
    """The store (LMDB map or the disk under it) has no room: executions pause, nothing is lost."""


class FormatError(StoreError):
    """The data directory was written by an incompatible format version."""


class Corrupt(StoreError):
    """Stored bytes fail their checksum (damaged on disk): never served, the message names the
    database and the key."""
