"""`privacycam doctor`: one line per check, OK / WARN / FAIL, each with a fix."""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from privacycam import models
from privacycam.config import SegmenterConfig, load_config, user_config_path
from privacycam.errors import PrivacyCamError
from privacycam.x_display import x_display_problem

OK, WARN, FAIL = "OK", "WARN", "FAIL"
SYSFS_VIDEO = "/sys/class/video4linux"
LOOPBACK_MODULE = "/sys/module/v4l2loopback"


@dataclass
class Check:
    status: str
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:4s}  {self.what}" + (f"  -> {self.fix}" if self.fix else "")


def check_python() -> list[Check]:
    checks = [Check(OK, f"Python {sys.version.split()[0]}")]
    for package, needed in (
        ("opencv-contrib-python", True),
        ("numpy", True),
        ("mediapipe", True),
        ("ai-edge-litert", True),
        ("pyvirtualcam", True),
        ("pynput", True),
        ("PyYAML", True),
        ("pydantic", True),
        ("av", True),
        ("torch", False),
        ("torchvision", False),
    ):
        try:
            checks.append(Check(OK, f"{package} {importlib.metadata.version(package)}"))
        except importlib.metadata.PackageNotFoundError:
            if needed:
                checks.append(Check(FAIL, f"{package} is not installed", "pip install privacycam"))
            else:
                checks.append(Check(OK, f"{package} not installed (optional: pip install 'privacycam[torch]')"))
    return checks


def models_in_use(config) -> set[str]:
    """The built-in model files the config runs (auto and pose run two models)."""
    segmenter = config.segmenter if config is not None else SegmenterConfig()
    if segmenter.backend != "mediapipe" or segmenter.model_path is not None:
        return set()
    return set(models.built_in_models(segmenter.model))


def check_models(config=None) -> list[Check]:
    """A missing or altered file the config needs is a FAIL; one it does not use only a WARN."""
    checks = []
    needed = models_in_use(config)
    for model in models.MODELS.values():
        path = models.model_dir() / model.filename
        status = FAIL if model.name in needed else WARN
        unused = "" if model.name in needed else f" (only needed for segmenter.model: {model.name})"
        if not path.is_file():
            checks.append(
                Check(status, f"model {model.name}: {path} missing{unused}", f"run `{models.INSTALL_COMMAND}`")
            )
        elif models.sha256_of(path) != model.sha256:
            checks.append(
                Check(
                    status, f"model {model.name}: {path} has a wrong sha256{unused}", f"run `{models.INSTALL_COMMAND}`"
                )
            )
        else:
            checks.append(Check(OK, f"model {model.name}: {path} sha256 {model.sha256[:12]}..."))
    return checks


def is_loopback(node: str) -> bool:
    return "/virtual/" in os.path.realpath(os.path.join(SYSFS_VIDEO, node))


def _label(node: str) -> str:
    try:
        return Path(SYSFS_VIDEO, node, "name").read_text().strip()
    except OSError:
        return "?"


def _formats(device: str) -> str:
    if not shutil.which("v4l2-ctl"):
        return "formats unknown (install v4l-utils to list them)"
    result = subprocess.run(
        ["v4l2-ctl", "-d", device, "--list-formats-ext"], capture_output=True, text=True, timeout=5, check=False
    )
    formats, sizes = [], set()
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.startswith("[") and "'" in line:
            formats.append(line.split("'")[1])
        elif line.startswith("Size:"):
            sizes.add(line.split()[-1])
    ordered = sorted(sizes, key=lambda s: tuple(int(n) for n in s.split("x")) if "x" in s else (0, 0))
    return f"{'/'.join(formats) or 'no formats'}; sizes {', '.join(ordered[-4:]) or '?'}"


def check_cameras() -> list[Check]:
    nodes = sorted(Path(p).name for p in glob.glob(os.path.join(SYSFS_VIDEO, "video*")))
    cameras = [n for n in nodes if not is_loopback(n)]
    if not cameras:
        return [Check(FAIL, "no camera found (no /dev/video* besides loopback devices)", "plug in a webcam")]
    return [Check(OK, f"camera /dev/{n} '{_label(n)}': {_formats('/dev/' + n)}") for n in cameras]


def check_loopback(card_label: str) -> list[Check]:
    if not os.path.isdir(LOOPBACK_MODULE):
        return [
            Check(
                FAIL,
                "v4l2loopback is not loaded",
                "sudo apt install v4l2loopback-dkms && sudo cp systemd/v4l2loopback-privacycam.conf "
                "/etc/modprobe.d/privacycam.conf && sudo modprobe v4l2loopback (see README)",
            )
        ]
    checks = []
    nodes = sorted(Path(p).name for p in glob.glob(os.path.join(SYSFS_VIDEO, "video*")))
    loopbacks = {f"/dev/{n}": _label(n) for n in nodes if is_loopback(n)}
    caps = Path(LOOPBACK_MODULE, "parameters", "exclusive_caps")
    exclusive = caps.read_text().strip() if caps.exists() else "?"
    checks.append(Check(OK, f"v4l2loopback loaded: {loopbacks or 'no devices'}; exclusive_caps={exclusive}"))
    if card_label not in loopbacks.values():
        checks.append(
            Check(FAIL, f"no loopback device labelled {card_label!r}", f"load it with card_label={card_label}")
        )
    if "Y" not in exclusive and "1" not in exclusive:
        checks.append(Check(WARN, "exclusive_caps is off: Chrome and Zoom may not list PrivacyCam", "exclusive_caps=1"))
    return checks


def check_config(config_file: str | None) -> tuple[list[Check], object | None]:
    try:
        config, path = load_config(config_file)
    except PrivacyCamError as exc:
        return [Check(FAIL, f"config: {exc.problem}", exc.fix)], None
    where = path or f"built-in defaults ({user_config_path()} not present)"
    return [Check(OK, f"config valid: {where}")], config


def check_hotkey() -> Check:
    problem = x_display_problem()
    if problem is not None:
        return Check(WARN, f"the hotkey is off: {problem}", "bind `privacycam toggle` to a desktop shortcut")
    try:
        import pynput.keyboard  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - pynput fails in many ways without a usable X
        return Check(WARN, f"hotkey backend unavailable: {exc}", "bind `privacycam toggle` to a desktop shortcut")
    return Check(OK, f"hotkey backend: X display {os.environ['DISPLAY']}")


def check_preview(config) -> list[Check]:
    """output.preview needs an X server the daemon can reach (checked only when it is on)."""
    if config is None or not config.output.preview:
        return []
    problem = x_display_problem()
    if problem is not None:
        return [
            Check(
                WARN, f"output.preview is on, but {problem}", "run in a desktop session, or set output.preview: false"
            )
        ]
    return [Check(OK, f"preview window: X display {os.environ['DISPLAY']}")]


def check_daemon(config) -> list[Check]:
    from privacycam.control.client import send_command
    from privacycam.control.socket_server import default_socket_path

    path = (config.control.socket if config else None) or default_socket_path()
    try:
        status = send_command(path, "status")
    except PrivacyCamError:
        return [Check(WARN, f"no daemon answers on {path}", "start it: systemctl --user start privacycam")]
    checks = [Check(OK, f"daemon running: privacy {'on' if status.get('privacy') else 'off'}, socket {path}")]
    if str(status.get("sink", "")).startswith("virtual camera"):
        checks.append(_timeout_image_check(bool(status.get("device_timeout_image"))))
    return checks


def _timeout_image_check(active: bool) -> Check:
    """Whether v4l2loopback itself shows a placeholder when PrivacyCam stops writing (crash, SIGKILL)."""
    if active:
        return Check(OK, "the virtual camera shows a placeholder by itself if PrivacyCam crashes (timeout image)")
    return Check(
        WARN,
        "the virtual camera has no timeout image: after a crash its last frame stays for new readers",
        "use v4l2loopback >= 0.12 (it has the timeout controls); the daemon sets them when it starts",
    )


def check_systemd_unit() -> Check:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    unit = Path(base) / "systemd" / "user" / "privacycam.service"
    if unit.is_file():
        return Check(OK, f"systemd user unit installed: {unit}")
    return Check(WARN, "systemd user unit not installed", f"install -Dm644 systemd/privacycam.service {unit}")


def doctor_command(args: argparse.Namespace) -> int:
    config_checks, config = check_config(args.config)
    label = config.output.card_label if config else "PrivacyCam"
    checks = [
        *check_python(),
        *check_models(config),
        *check_cameras(),
        *check_loopback(label),
        *config_checks,
        check_hotkey(),
        *check_preview(config),
        *check_daemon(config),
        check_systemd_unit(),
    ]
    for check in checks:
        print(check.line())
    failed = sum(check.status == FAIL for check in checks)
    print(f"{failed} problem(s) found" if failed else "all good")
    return 1 if failed else 0
