"""The shipped systemd user unit verifies, and its hardening cannot silently regress."""

from __future__ import annotations

import ctypes.util
import errno
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli_env

from privacycam.control.dbus_session import APP_ID
from privacycam.models import model_dir

# app-<app id>.service: how xdg-desktop-portal names an unsandboxed app (issue #16).
UNIT = REPO / "systemd" / f"app-{APP_ID}.service"
DESKTOP_ENTRY = REPO / "systemd" / f"{APP_ID}.desktop"
WIREPLUMBER_DROP_IN = REPO / "systemd" / "wireplumber-after-privacycam.conf"
# `systemd-analyze security --offline=true --user` exposure of the unit as shipped
# (1.2 with systemd 252: it scores the unit as a system service, so it counts the
# system-only ProtectProc= and ProtectControlGroups= this unit leaves out, and
# takes the settings a user manager ignores at face value). Raise only with a
# reason in the commit.
EXPOSURE_CEILING = 1.5
# Rebuilds the unit's seccomp filters and execs a command under them.
SECCOMP_RUNNER = REPO / "tests" / "unit_seccomp.py"

needs_libseccomp = pytest.mark.skipif(
    ctypes.util.find_library("seccomp") is None,
    reason="needs libseccomp to rebuild the unit's seccomp filter (apt-get install libseccomp2; scripts/test.sh does)",
)

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


def _under_units_filter(unit: Path, user_env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    """Run command under the unit's own seccomp filter, in the unit's kind of environment."""
    env = cli_env(
        HOME=user_env["HOME"], XDG_RUNTIME_DIR=user_env["XDG_RUNTIME_DIR"], PRIVACYCAM_MODEL_DIR=str(model_dir())
    )
    return subprocess.run(
        [sys.executable, str(SECCOMP_RUNNER), str(unit), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _killed_by_sigsys(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == -signal.SIGSYS


@needs_libseccomp
def test_daemon_runs_under_the_units_own_seccomp_filter(user_env):
    """As ExecStart runs it: SIGSYS here means the unit would kill the daemon at every start."""
    exec_start = str(Path(user_env["HOME"]) / ".local" / "bin" / "privacycam")
    run = ["run", "--input", "synthetic", "--output", "null", "--frames", "60"]
    result = _under_units_filter(Path(user_env["UNIT"]), user_env, exec_start, *run)
    assert not _killed_by_sigsys(result), (
        "the unit's seccomp filter killed the daemon (SIGSYS): a call outside SystemCallFilter= "
        "with no SystemCallErrorNumber=\n" + result.stderr
    )
    assert result.returncode == 0, result.stderr
    assert "stopped after 60 frames" in result.stderr


@needs_libseccomp
def test_the_rebuilt_filter_is_the_units(user_env):
    """The runner really applies the unit's filter: refused calls fail with EPERM, other sockets than AF_UNIX
    with EAFNOSUPPORT; and without SystemCallErrorNumber= numpy's start-up kills the process, as it did."""
    probe = (
        "import errno, os, socket\n"
        "def refused(call):\n"
        "    try:\n"
        "        call()\n"
        "    except OSError as exc:\n"
        "        return exc.errno\n"
        "print(refused(lambda: os.sched_setaffinity(0, {0})), refused(lambda: socket.socket(socket.AF_INET)))\n"
        "socket.socket(socket.AF_UNIX).close()\n"
    )
    result = _under_units_filter(Path(user_env["UNIT"]), user_env, sys.executable, "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(errno.EPERM), str(errno.EAFNOSUPPORT)]

    killing = Path(user_env["UNIT"]).with_name("killing.service")
    lines = Path(user_env["UNIT"]).read_text().splitlines()
    killing.write_text("\n".join(line for line in lines if not line.startswith("SystemCallErrorNumber=")))
    assert _killed_by_sigsys(_under_units_filter(killing, user_env, sys.executable, "-c", "import numpy"))


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
        "Type=notify",
        "Before=wireplumber.service",
        "Alias=privacycam.service",
    ):
        assert line in text, line


def test_wireplumber_drop_in_verifies_and_orders_it_after_privacycam(user_env, tmp_path):
    """WirePlumber (a stand-in unit) with the shipped drop-in pulls PrivacyCam in and starts after it."""
    units = Path(user_env["UNIT"]).parent
    (units / "wireplumber.service").write_text("[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/true\n")
    (units / "wireplumber.service.d").mkdir()
    shutil.copy(WIREPLUMBER_DROP_IN, units / "wireplumber.service.d" / "privacycam.conf")
    env = {**user_env, "SYSTEMD_UNIT_PATH": f"{units}:"}
    result = subprocess.run(
        ["systemd-analyze", "verify", "--user", str(units / "wireplumber.service")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr  # a bad drop-in key warns here
    drop_in = WIREPLUMBER_DROP_IN.read_text()
    assert f"Wants={UNIT.name}" in drop_in and f"After={UNIT.name}" in drop_in


@pytest.mark.skipif(
    not shutil.which("desktop-file-validate"),
    reason="needs desktop-file-validate (apt-get install desktop-file-utils; scripts/test.sh does this)",
)
def test_desktop_entry_validates():
    result = subprocess.run(["desktop-file-validate", str(DESKTOP_ENTRY)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_unit_and_desktop_entry_carry_the_app_id():
    assert UNIT.is_file() and DESKTOP_ENTRY.is_file()
    entry = DESKTOP_ENTRY.read_text()
    assert "Exec=privacycam run" in entry and "X-GNOME-UsesNotifications=true" in entry


def test_modprobe_files_make_the_privacycam_device():
    options = (REPO / "systemd" / "v4l2loopback-privacycam.conf").read_text()
    assert re.search(r"^options v4l2loopback .*exclusive_caps=1", options, re.M)
    assert "card_label=PrivacyCam" in options and "video_nr=10" in options
    assert "v4l2loopback" in (REPO / "systemd" / "v4l2loopback-modules-load.conf").read_text()
