"""random_get: host entropy (READS_WORLD, so it will be journaled for replay)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .durable import Kind, hostcall

if TYPE_CHECKING:
    from .host import WasiHost


@hostcall(Kind.READS_WORLD, 'ii')
def random_get(host: WasiHost, buf: int, n: int) -> int:
    host.mem().write(buf, os.urandom(n))
    return 0
