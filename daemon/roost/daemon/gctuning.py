"""Keeping Python's cyclic garbage collector out of the guest's pauses and a migration's
downtime.

A full collection walks every tracked object: right after importing grpc, protobuf, numpy and
wasmtime a process holds ~50 000 of them, and a generation-2 collection took 12-25 ms on our
2-core machines — landing, whenever it happened to, in the middle of a checkpoint's pause or a
handover. Nearly all of those objects live as long as the process (modules, descriptors,
functions), so once a process has started they are moved out of the collector's sight
(`gc.freeze`): later collections walk only what was allocated since.
"""
from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect once, then exempt every surviving object from later collections."""
    gc.collect()
    gc.freeze()
