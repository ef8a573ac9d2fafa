"""The third-party guests from ../shared/guests (fetched by tests/env.sh): locating them and
turning a case.json into a `roost run` command line."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def guests_dir() -> Path | None:
    for candidate in (os.environ.get("ROOST_GUESTS_DIR"), ROOT / "tests" / ".cache" / "shared-guests"):
        if candidate and (Path(candidate) / "cases").is_dir():
            return Path(candidate)
    return None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Case:
    dir: Path
    spec: dict

    @property
    def name(self) -> str:
        return self.spec["name"]

    def resolve(self, p: str) -> Path:
        return self.dir.parent.parent / p[1:] if p.startswith("@") else Path(p)

    @property
    def wasm(self) -> Path:
        return self.resolve(self.spec["wasm"])

    def prepare(self, run_dir: Path) -> tuple[list[str], dict[str, str]]:
        """Lay out the case's inputs under run_dir; return the `roost run` options and a map
        expected-file -> guest path for `roost cp`."""
        work = run_dir / "work"
        work.mkdir(parents=True)
        for f in self.spec.get("files", []):
            shutil.copy(self.dir / f, work / f)
        for d in self.spec.get("mkdirs", []):
            (work / d).mkdir(parents=True, exist_ok=True)
        argv = self.spec["argv"]
        opts = ["--argv0", argv[0]]
        for k, v in self.spec.get("env", {}).items():
            opts += ["--env", f"{k}={v}"]
        if self.spec.get("stdin"):
            opts += ["--stdin", str(work / self.spec["stdin"])]
        work_guest = None
        for host, guest in self.spec.get("preopens", []):
            if host == "work" or host.startswith("work/"):
                host_path = work / host[5:] if host != "work" else work
                if host == "work":
                    work_guest = guest
            else:
                host_path = self.resolve(host)
            opts += ["--mount", f"{host_path}:{guest}"]
        files = {f: _join(work_guest, f) for f in self.spec.get("expected", {}).get("files", {})}
        return opts + [str(self.wasm), "--", *argv[1:]], files


def _join(guest_dir: str | None, name: str) -> str:
    if guest_dir in (None, "."):
        return f"./{name}"
    return guest_dir.rstrip("/") + "/" + name


def cases() -> list[Case]:
    root = guests_dir()
    if root is None:
        return []
    out = []
    for case_json in sorted((root / "cases").glob("*/case.json")):
        out.append(Case(case_json.parent, json.loads(case_json.read_text())))
    return out
