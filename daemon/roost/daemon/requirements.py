"""roostd's own dependencies, checked before anything imports them.

The distribution's core dependencies are the client's (`pip install roost` gives `roost`, not a
daemon's ~140 MB); roostd needs the `daemon` extra. Started without it, roostd says so in one
line and exits 1, instead of a ModuleNotFoundError traceback from deep inside its imports. The
check only finds the modules (`importlib.util.find_spec`): nothing is imported, so start-up pays
a few stat calls, not wasmtime's import.
"""
from __future__ import annotations

import importlib.util
import sys

# import name -> distribution (as in pyproject's `daemon` extra)
MODULES = {
    "wasmtime": "wasmtime",
    "lmdb": "lmdb",
    "zstandard": "zstandard",
    "numpy": "numpy",
    "cffi": "cffi",
    "icpp_binaryen": "icpp-binaryen",
    "prometheus_client": "prometheus-client",
    "grpc_health": "grpcio-health-checking",
    "grpc_reflection": "grpcio-reflection",
    "etcd3gw": "etcd3gw",
    "urllib3": "urllib3",
}


def missing() -> list[str]:
    """The daemon's distributions that are not installed, in pyproject's order."""
    absent = []
    for module, distribution in MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            absent.append(distribution)
    return absent


def check() -> None:
    """Exit 1 with one line if any of the daemon's dependencies is missing."""
    absent = missing()
    if absent:
        print(f"roostd needs the daemon's dependencies: pip install 'roost[daemon]' "
              f"(missing: {', '.join(absent)})", file=sys.stderr)
        raise SystemExit(1)
