"""`roost debug`: read-only views of what roostd stores, for diagnosing a problem.

`roost debug checkpoint ID [NUMBER]` shows one checkpoint as the daemon stores it (the
DebugCheckpoint call): the manifest, the page map's summary, the header of every frame and the
host state's summary — as text, or with --json as one object whose `manifest` is the stored
manifest itself.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from roost.client import display
from roost.client.api import Client
from roost.v1 import control_pb2 as pb

MANIFEST_VALUE_CHARS = 100       # a long value (globals, frame lists): its start, --json has all


def cmd_debug(client: Client, ns: argparse.Namespace) -> int:
    """`roost debug WHAT`: the one view so far is `checkpoint`."""
    r = client.debug_checkpoint(ns.id, ns.number)
    print(json.dumps(checkpoint_dict(r), indent=2) if ns.json else "\n".join(checkpoint_lines(r)))
    return 0


def checkpoint_dict(r: pb.DebugCheckpointResponse) -> dict[str, Any]:
    """The --json form: the response's fields, the manifest as an object."""
    out = display.message_dict(r)
    out["manifest"] = json.loads(out.pop("manifest_json") or "{}")
    return out


def checkpoint_lines(r: pb.DebugCheckpointResponse) -> list[str]:
    """The text form, section by section."""
    restorable = ", ".join(map(str, r.restorable)) or "none"
    return [f"checkpoint {r.number} of {r.id} (restorable: {restorable})", "",
            *_manifest_lines(json.loads(r.manifest_json or "{}")), "",
            *_page_map_lines(r.page_map), "", *_frame_lines(r.frames), "",
            *_host_state_lines(r.host_state)]


def _manifest_lines(manifest: dict[str, Any]) -> list[str]:
    width = max((len(k) for k in manifest), default=0) + 1
    return ["manifest:", *(f"  {k + ':':<{width}} {_short(json.dumps(v))}"
                           for k, v in sorted(manifest.items()))]


def _short(text: str) -> str:
    if len(text) <= MANIFEST_VALUE_CHARS:
        return text
    return f"{text[:MANIFEST_VALUE_CHARS]}... ({len(text)} characters; --json shows all)"


def _page_map_lines(m: pb.DebugPageMap) -> list[str]:
    stored = m.pages - m.zero_pages
    head = (f"page map: {m.pages} pages ({display.human_bytes(m.pages * 4096)}), "
            f"{m.zero_pages} zero, {stored} stored in {len(m.versions)} version(s)")
    rows = ([str(v.version), str(v.pages)] for v in m.versions)
    return [head, *_indented(display.table(["VERSION", "PAGES"], rows))]


def _frame_lines(frames: list[pb.DebugFrame]) -> list[str]:
    total = sum(f.bytes for f in frames)
    head = f"frames: {len(frames)}, {display.human_bytes(total)}"
    rows = ([str(f.version), str(f.index), f.format, str(f.pages), str(f.bytes),
             f"{f.index_crc32:08x}", f.content_checksum or "-"] for f in frames)
    headers = ["VERSION", "INDEX", "FORMAT", "PAGES", "BYTES", "INDEX_CRC32", "CONTENT_XXH64"]
    return [head, *_indented(display.table(headers, rows))] if frames else [head]


def _host_state_lines(h: pb.DebugHostState) -> list[str]:
    if not h.present:
        return ["host state: not kept (an older checkpoint: only its pages live on)"]
    return [f"host state: format {h.format}, {display.human_bytes(h.bytes)}",
            f"  argv:           {' '.join(h.argv)}",
            f"  env:            {h.env_vars} variable(s)",
            f"  stdin position: {h.stdin_position}",
            f"  open fds:       {h.open_fds}",
            f"  files:          {h.inodes} inode(s), {display.human_bytes(h.file_bytes)}"]


def _indented(text: str) -> list[str]:
    return ["  " + line for line in text.splitlines()]
