"""roost's own WASI preview1, with all state saveable (see `host` for the design).

One module per host interface: `args`, `clocks`, `random`, `stdio`, `fds`, `files` (fd_* on
data), `paths` (path_*), `poll`, `proc`, `sock`; `abi` holds constants and guest-memory access,
`durable` the combinator every call goes through.
"""
from roost.daemon.runtime.wasi.durable import REGISTRY, Kind, hostcall
from roost.daemon.runtime.wasi.host import PROVIDED_FUNCTIONS, WasiHost, WasiState, initial_state
from roost.daemon.runtime.wasi.proc import GuestExit, GuestTrap

__all__ = ["GuestExit", "GuestTrap", "Kind", "PROVIDED_FUNCTIONS", "REGISTRY", "WasiHost",
           "WasiState", "hostcall", "initial_state"]
