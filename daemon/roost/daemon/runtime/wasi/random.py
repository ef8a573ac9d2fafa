"""random_get: host entropy (READS_WORLD, so it will be journaled for replay). The length sizes
an allocation and a journal record: over MAX_BYTES it traps as in wasmtime ("requested len ...
exceeds limit"), and the buffer is bounds-checked before any entropy is drawn."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from roost.daemon.runtime.wasi.durable import Kind, hostcall
from roost.daemon.runtime.wasi.proc import GuestTrap

MAX_BYTES = 64 << 20      # wasmtime's limit for one call

if TYPE_CHECKING:
    from roost.daemon.runtime.wasi.host import WasiHost


@hostcall(Kind.READS_WORLD, 'ii')
def random_get(host: WasiHost, buf: int, n: int) -> int:
    if n > MAX_BYTES:
        raise GuestTrap(f"requested len {n} exceeds limit {MAX_BYTES}")
    mem = host.mem()
    mem.check(buf, n)
    mem.write(buf, os.urandom(n))
    return 0
