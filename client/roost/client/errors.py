"""The exceptions of the roost client.

    RoostClientError        a roostd call failed; carries the gRPC status code name (and, when
                            roostd raised it, the daemon's error class and whether a retry may do)
    LocalError              a local file, directory or argument cannot be used
    └── MountError          a --mount directory cannot be read into a Mount

gRPC errors are translated into RoostClientError in exactly one place, `from_rpc_error`,
which `api.Client` applies to every call it makes; the CLI maps both kinds to exit codes.
"""
from __future__ import annotations

import grpc

# Trailing metadata roostd sets on a failed call (`roost.daemon.service.rpc`).
ERROR_KEY = "roost-error"
RETRIABLE_KEY = "roost-retriable"


class RoostClientError(Exception):
    """A call to roostd failed; `code_name` is the gRPC status name (e.g. "NOT_FOUND").
    `error` names the daemon's error class ("" when the answer did not come from roostd, as
    when it cannot be reached); `retriable`: roostd says the same call may succeed later."""

    def __init__(self, code_name: str, message: str, error: str = "", retriable: bool = False) -> None:
        super().__init__(f"{code_name}: {message}")
        self.code_name = code_name
        self.message = message
        self.error = error
        self.retriable = retriable


class LocalError(Exception):
    """Something on the client's side (a file, a flag value) cannot be used."""


class MountError(LocalError):
    """A host directory cannot be read into a mount."""


def from_rpc_error(err: grpc.RpcError) -> RoostClientError:
    """Translates a grpc.RpcError: the one boundary between gRPC and roost client errors."""
    code = err.code() if isinstance(err, grpc.Call) else None
    details = err.details() if isinstance(err, grpc.Call) else None
    code_name = code.name if code is not None else "UNKNOWN"
    trailer = dict(err.trailing_metadata() or ()) if isinstance(err, grpc.Call) else {}
    return RoostClientError(code_name, details or str(err), str(trailer.get(ERROR_KEY, "")),
                            trailer.get(RETRIABLE_KEY) == "1")
