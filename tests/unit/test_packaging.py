"""Packaging: a client-only install does not need the daemon's dependencies, roostd without them
says what to install, the wheel carries LICENSE and the py.typed markers, `python -m roost` runs
the CLI.

The client runs in a subprocess whose imports of the daemon's packages are refused (a
sys.meta_path finder), as on a machine with `pip install roost` alone.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

from roost.daemon import requirements

ROOT = Path(__file__).resolve().parents[2]
DAEMON_ONLY = ["wasmtime", "numpy", "lmdb", "zstandard", "cffi", "prometheus_client",
               "icpp_binaryen", "grpc_health", "grpc_reflection", "etcd3gw", "urllib3"]
CLIENT_DEPENDENCIES = {"grpcio", "protobuf"}

BLOCKER = textwrap.dedent(f"""
    import sys
    BLOCKED = {DAEMON_ONLY!r}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
""")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower()


def _blocked(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run `code` (after the blocker) in a fresh interpreter with argv `args`."""
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_core_dependencies_are_the_clients_and_the_daemon_has_an_extra() -> None:
    project = _pyproject()["project"]
    assert {_name(r) for r in project["dependencies"]} == CLIENT_DEPENDENCIES
    extras = project["optional-dependencies"]
    assert extras["client"] == []
    daemon = {_name(r) for r in extras["daemon"]}
    assert {"wasmtime", "numpy", "lmdb", "zstandard", "icpp-binaryen"} <= daemon
    # roostd's start-up check names exactly the daemon extra's distributions
    assert set(requirements.MODULES.values()) == daemon


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["run", "--help"]])
def test_python_m_roost_runs_the_cli_without_the_daemons_dependencies(argv: list[str]) -> None:
    got = _blocked("""
        import runpy
        sys.argv = ["roost", *sys.argv[1:]]
        runpy.run_module("roost", run_name="__main__", alter_sys=True)
    """, *argv)
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith(("usage: roost", "roost ")), got.stdout
    assert "blocked" not in got.stderr


def test_the_client_library_imports_without_the_daemons_dependencies() -> None:
    got = _blocked("""
        import roost.client.api, roost.client.cli, roost.v1.control_pb2_grpc
        from roost.client import Client
        print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
    """)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "[]"


def test_python_m_roost_is_the_installed_module() -> None:
    """Not only runpy in-process: the interpreter's own `-m` over the namespace package."""
    got = subprocess.run([sys.executable, "-m", "roost", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert got.returncode == 0 and got.stdout.startswith("roost "), (got.stdout, got.stderr)


def test_roostd_without_the_daemon_extra_says_what_to_install() -> None:
    got = _blocked("""
        from roost.daemon.main import main
        sys.exit(main(["--data-dir", "/nonexistent/never-made", "--control-socket", ""]))
    """)
    assert got.returncode == 1, (got.stdout, got.stderr)
    lines = got.stderr.strip().splitlines()
    assert lines == ["roostd needs the daemon's dependencies: pip install 'roost[daemon]' "
                     "(missing: wasmtime, lmdb, zstandard, numpy, cffi, icpp-binaryen, "
                     "prometheus-client, grpcio-health-checking, grpcio-reflection, etcd3gw, "
                     "urllib3)"], got.stderr
    assert not Path("/nonexistent/never-made").exists()


def test_the_wheel_has_license_typing_markers_and_client_only_requirements(tmp_path: Path) -> None:
    """Built offline from a copy of the tree (the build writes generated code into proto/)."""
    pytest.importorskip("hatchling", reason="hatchling is in the test extra: pip install -e '.[daemon,test]'")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "hatch_build.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*_pb2*.py", "*_pb2*.pyi")
    for name in ("daemon", "client", "proto", "sdk"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", str(src), "-w", str(tmp_path / "dist")],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("roost-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(info).decode()
        dist_info = info.rsplit("/", 1)[0]
        license_text = z.read(f"{dist_info}/licenses/LICENSE").decode()
    assert {"roost/client/py.typed", "roost/daemon/py.typed", "roost/v1/py.typed",
            "roost/__main__.py", "roost/v1/control_pb2.pyi"} <= names
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    unconditional = {_name(r) for r in requires if ";" not in r}
    assert unconditional == CLIENT_DEPENDENCIES
    wasmtime = [r for r in requires if _name(r) == "wasmtime"]
    assert wasmtime and all("extra == 'daemon'" in r or 'extra == "daemon"' in r for r in wasmtime)
