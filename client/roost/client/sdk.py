"""Where roost's guest SDK is: `roost/sdk` in an installed wheel (hatch's force-include), or
the checkout's top-level `sdk/` in an editable install."""
from __future__ import annotations

from pathlib import Path


def path() -> Path | None:
    here = Path(__file__).resolve().parent          # .../roost/client
    for candidate in (here.parent / "sdk", here.parents[2] / "sdk"):
        if (candidate / "c" / "roost.h").is_file():
            return candidate
    return None
