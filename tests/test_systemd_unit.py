"""The shipped systemd user unit verifies, and its hardening cannot silently regress."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

UNIT = REPO / "systemd" / "privacycam.service"
# `systemd-analyze security --offline=true --user` exposure of the unit as shipped
# (1.0 with systemd 252). Raise only with a reason in the commit.
EXPOSURE_CEILING = 1.5

pytestmark = pytest.mark.skipif(
    not shutil.which("systemd-analyze"), reason="needs systemd-analyze (apt-get install systemd)"
)


@pytest.fixture
def user_env(tmp_path) -> dict[str, str]:
    """A home where ExecStart exists, as after `pip install --user`, and a runtime dir."""
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "privacycam").symlink_to(Path(sys.prefix) / "bin" / "privacycam")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    shutil.copy(UNIT, unit_dir / UNIT.name)
    return {
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(runtime),
        "PATH": "/usr/bin:/bin",
        "UNIT": str(unit_dir / UNIT.name),
    }


def test_unit_verifies(user_env):
    result = subprocess.run(
        ["systemd-analyze", "verify", "--user", user_env["UNIT"]], env=user_env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_hardening_exposure_stays_under_ceiling(user_env):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--user", user_env["UNIT"]],
        env=user_env,
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    print(f"systemd-analyze security exposure: {score}")
    assert score <= EXPOSURE_CEILING


def test_unit_keeps_the_essentials():
    text = UNIT.read_text()
    for line in (
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "ProtectHome=read-only",
        "DevicePolicy=closed",
        "DeviceAllow=char-video4linux rw",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in text, line


def test_modprobe_files_make_the_privacycam_device():
    options = (REPO / "systemd" / "v4l2loopback-privacycam.conf").read_text()
    assert re.search(r"^options v4l2loopback .*exclusive_caps=1", options, re.M)
    assert "card_label=PrivacyCam" in options and "video_nr=10" in options
    assert "v4l2loopback" in (REPO / "systemd" / "v4l2loopback-modules-load.conf").read_text()
