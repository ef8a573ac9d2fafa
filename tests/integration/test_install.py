"""The install recipe (systemd/install.sh) into a scratch root: the unit as installed verifies,
names a roostd that exists and runs, and keeps the shipped unit's hardening and its
service settings (reload, OOM policy)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "systemd" / "install.sh"
SHIPPED_EXPOSURE = 1.7       # `systemd-analyze security` of the shipped unit: must not get worse


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The recipe run once (a full venv install from the checkout, pip's cache: ~25 s)."""
    root = tmp_path_factory.mktemp("root")
    got = subprocess.run(["bash", str(INSTALL), "--root", str(root)], capture_output=True, timeout=600)
    assert got.returncode == 0, got.stderr.decode(errors="replace")[-3000:]
    return root


def _directives(unit: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_installed_unit_names_the_venv(installed):
    unit = installed / "etc/systemd/system/roostd.service"
    prefix = installed / "opt/roost"
    d = _directives(unit)
    assert d["ExecStart"] == [f"{prefix}/bin/roostd"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["OOMPolicy"] == ["continue"]
    assert d["Restart"] == ["on-failure"]
    assert d["Documentation"] == [f"file://{prefix}/share/doc/roost/README.md"]
    assert (prefix / "share/doc/roost/README.md").is_file()
    for name in ("roost", "roostd"):       # linked for operators
        assert (installed / "usr/local/bin" / name).resolve() == prefix / "bin" / name
    # Apart from what the recipe rewrites, the unit is the shipped one.
    shipped = (REPO / "systemd/roostd.service").read_text()
    assert unit.read_text() == shipped.replace("/opt/roost/", f"{prefix}/")


def test_installed_roostd_runs(installed):
    roostd = installed / "opt/roost/bin/roostd"
    assert roostd.is_file()
    got = subprocess.run([str(roostd), "--version"], capture_output=True, timeout=120)
    if got.returncode != 0 and b"unrecognized arguments" in got.stderr:    # before --version
        got = subprocess.run([str(roostd), "--help"], capture_output=True, timeout=120)
    assert got.returncode == 0, got.stderr
    assert b"Traceback" not in got.stderr
    # The venv's own python imports the daemon: its dependencies came with the recipe.
    probe = subprocess.run([str(installed / "opt/roost/bin/python"), "-c",
                            "import roost.daemon.wiring, roost.client.cli"], capture_output=True, timeout=120)
    assert probe.returncode == 0, probe.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze (tests/env.sh installs it)")
def test_installed_unit_verifies_and_keeps_its_hardening(installed):
    unit = installed / "etc/systemd/system/roostd.service"
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, timeout=120)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                              capture_output=True, timeout=120)
    level = re.search(rb"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
    if level is None:
        pytest.skip(f"systemd-analyze security --offline unsupported here: {security.stderr[:200]!r}")
    assert float(level.group(1)) <= SHIPPED_EXPOSURE, security.stdout.decode()[-2000:]


def test_bad_arguments_are_one_line(tmp_path):
    for args, message in ((["--nope"], b"unknown argument: --nope"),
                          (["--prefix", "relative/dir"], b"--prefix must be an absolute path"),
                          (["--prefix"], b"--prefix needs a value")):
        got = subprocess.run(["bash", str(INSTALL), "--root", str(tmp_path), *args],
                             capture_output=True, timeout=60)
        assert got.returncode == 2 and message in got.stderr, got.stderr
        assert len(got.stderr.strip().splitlines()) == 1
