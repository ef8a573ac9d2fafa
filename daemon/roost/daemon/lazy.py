"""Modules imported on first use: roostd serves its API before it has imported numpy,
zstandard and the like, which only checkpoints, restores and replication need (issue 14:
the API within 0.1 s of start).

    if TYPE_CHECKING:
        import numpy as np
    else:
        from roost.daemon.lazy import numpy as np

`numpy.zeros` (any attribute) imports the module then; the attribute is kept on the
stand-in, so later uses cost what a module attribute costs. Every import deferred past start
goes through `load`, under one lock: Python's per-module import locks let two threads that
enter a package's import cycle at different modules (the API's upload check, the warm-up after
start) see one of them half initialized ("cannot import name ... partially initialized
module"). Caching a looked-up attribute twice is harmless.
"""
from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import Any

_IMPORTS = threading.RLock()


def load(name: str) -> ModuleType:
    """Module `name`, imported now if it was not (serialised with every other deferred import)."""
    with _IMPORTS:
        return importlib.import_module(name)


class LazyModule:
    """Stands in for module `name` until an attribute is asked for."""

    def __init__(self, name: str) -> None:
        self.__name = name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(load(self.__name), attr)
        setattr(self, attr, value)
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self.__name!r}>"


numpy = LazyModule("numpy")
zstandard = LazyModule("zstandard")
