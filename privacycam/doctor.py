"""`privacycam doctor`: one line per check, OK / WARN / FAIL, each with a fix."""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from privacycam import models
from privacycam.config import PrivacyConfig, SegmenterConfig, load_config, user_config_path
from privacycam.control.dbus_session import APP_ID
from privacycam.control.hotkey import MODIFIERS_HINT, choose_hotkey_backend
from privacycam.errors import PrivacyCamError
from privacycam.x_display import x_display_problem

OK, WARN, FAIL = "OK", "WARN", "FAIL"
SYSFS_VIDEO = "/sys/class/video4linux"
LOOPBACK_MODULE = "/sys/module/v4l2loopback"
UNIT_NAME = f"app-{APP_ID}.service"
# The repository's systemd/ folder: beside the package in a source checkout and
# in the editable install scripts/install.sh makes. An installed wheel has the
# same files as data files (pyproject.toml), in <prefix>/share/privacycam/systemd.
SHIPPED_FILES = Path(__file__).resolve().parent.parent / "systemd"
INSTALLED_FILES = "share/privacycam/systemd"
MODPROBE_FILE = "v4l2loopback-privacycam.conf"
MODULES_LOAD_FILE = "v4l2loopback-modules-load.conf"
UNIT_FILE = UNIT_NAME
# What the two v4l2loopback files say, for an install without the source
# folder (a test keeps these equal to the files).
MODPROBE_OPTIONS = "options v4l2loopback devices=1 video_nr=10 card_label=PrivacyCam exclusive_caps=1"
MODULES_LOAD_LINE = "v4l2loopback"


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
        ("dbus-fast", True),
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


def shipped_file(name: str) -> Path | None:
    """A file of the repository's systemd/ folder by its absolute path, if this install has it."""
    path = SHIPPED_FILES / name
    if path.is_file():
        return path
    try:
        installed = importlib.metadata.files("privacycam") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for record in installed:
        if record.name == name and f"{INSTALLED_FILES}/" in record.as_posix():
            located = Path(str(record.locate())).resolve()
            if located.is_file():
                return located
    return None


def _install_file_command(name: str, destination: str, content: str) -> str:
    """A shell command that puts a shipped file at `destination`, from any working folder."""
    source = shipped_file(name)
    if source is not None:
        return f"sudo cp {source} {destination}"
    return f"echo '{content}' | sudo tee {destination}"


def loopback_fix() -> str:
    """Install the module, configure it, load it at every boot, and load it now."""
    steps = [
        "sudo apt install v4l2loopback-dkms",
        _install_file_command(MODPROBE_FILE, "/etc/modprobe.d/privacycam.conf", MODPROBE_OPTIONS),
        _install_file_command(MODULES_LOAD_FILE, "/etc/modules-load.d/privacycam.conf", MODULES_LOAD_LINE),
        "sudo modprobe v4l2loopback",
    ]
    return " && ".join(steps) + " (see README)"


def check_loopback(card_label: str) -> list[Check]:
    if not os.path.isdir(LOOPBACK_MODULE):
        return [Check(FAIL, "v4l2loopback is not loaded", loopback_fix())]
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


def check_hotkey(config=None) -> list[Check]:
    """Which hotkey backend `run` would use and why, and whether it can work here."""
    privacy = config.privacy if config is not None else PrivacyConfig()
    backend = choose_hotkey_backend(privacy.hotkey_backend, privacy.hotkey)
    shortcut = "bind `privacycam toggle` to a desktop shortcut"
    if backend.name == "none":
        return [Check(WARN, f"the hotkey is off: {backend.reason}", shortcut)]
    bare = (
        [Check(OK, f"hotkey {privacy.hotkey!r} has no modifiers: it also fires while you type it", MODIFIERS_HINT)]
        if not privacy.hotkey_modifiers
        else []
    )
    if backend.name == "portal":
        return [*check_portal(backend.reason, privacy.hotkey), *bare]
    problem = x_display_problem()
    if problem is not None:
        return [Check(WARN, f"the hotkey is off: {problem}", shortcut)]
    try:
        import pynput.keyboard  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - pynput fails in many ways without a usable X
        return [Check(WARN, f"hotkey backend unavailable: {exc}", shortcut)]
    return [Check(OK, f"hotkey backend: x11 ({backend.reason}), X display {os.environ['DISPLAY']}"), *bare]


def check_portal(reason: str, key: str) -> list[Check]:
    """The GlobalShortcuts portal, the tray host and the notification server on the session bus."""
    from privacycam.control.desktop_probe import probe_desktop

    found = probe_desktop()
    fix = "bind `privacycam toggle` to a desktop shortcut, or set privacy.hotkey_backend: x11 on X11"
    if found.error:
        return [Check(WARN, f"hotkey backend: portal ({reason}), but {found.error}", fix)]
    checks = []
    if found.shortcuts_version:
        checks.append(
            Check(OK, f"hotkey backend: portal ({reason}); GlobalShortcuts version {found.shortcuts_version}")
        )
    else:
        checks.append(
            Check(
                WARN,
                f"hotkey backend: portal ({reason}), but the portal has no GlobalShortcuts ({found.portal})",
                "it needs xdg-desktop-portal 1.16+ with KDE Plasma, GNOME 48+ or Hyprland; else " + fix,
            )
        )
    checks.append(check_app_id())
    checks.append(
        Check(OK, "tray host (StatusNotifierWatcher) present")
        if found.tray_host
        else Check(OK, "no tray host: no tray icon (GNOME needs the AppIndicator extension)")
    )
    checks.append(
        Check(OK, "notification server present")
        if found.notifications
        else Check(OK, "no notification server: privacy changes are only logged")
    )
    return checks


def _data_dirs() -> list[Path]:
    home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    dirs = os.environ.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share"
    return [Path(home), *(Path(d) for d in dirs.split(":") if d)]


def check_app_id() -> Check:
    """The portal knows PrivacyCam by APP_ID only if a desktop entry of that name is installed."""
    entry = f"{APP_ID}.desktop"
    installed = [d / "applications" / entry for d in _data_dirs() if (d / "applications" / entry).is_file()]
    if installed:
        return Check(OK, f"app id {APP_ID}: desktop entry {installed[0]}")
    target = _data_dirs()[0] / "applications" / entry
    return Check(
        WARN,
        f'app id {APP_ID}: no desktop entry installed, the portal may refuse the hotkey ("An app id is required")',
        f"install -Dm644 systemd/{entry} {target}",
    )


def check_pipewire(card_label: str) -> list[Check]:
    """A loopback device PipeWire has no node for is invisible to PipeWire camera clients (Firefox, OBS...)."""
    nodes = sorted(Path(p).name for p in glob.glob(os.path.join(SYSFS_VIDEO, "video*")))
    devices = [f"/dev/{n}" for n in nodes if is_loopback(n) and _label(n) == card_label]
    if not devices or not shutil.which("pw-dump"):
        return []
    try:
        result = subprocess.run(["pw-dump"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Check(WARN, f"PipeWire could not be asked (pw-dump: {exc})")]
    if result.returncode != 0:
        return [Check(OK, "PipeWire is not running (only PipeWire camera clients need it)")]
    return [pipewire_check(device, result.stdout) for device in devices]


def pipewire_check(device: str, pw_dump_json: str) -> Check:
    try:
        objects = json.loads(pw_dump_json or "[]")
    except json.JSONDecodeError:
        return Check(WARN, "PipeWire: pw-dump printed no JSON")
    for obj in objects if isinstance(objects, list) else []:
        props = ((obj.get("info") or {}).get("props") or {}) if isinstance(obj, dict) else {}
        if obj.get("type", "").endswith(":Node") and device in (
            props.get("api.v4l2.path"),
            str(props.get("object.path", "")).removeprefix("v4l2:"),
        ):
            return Check(OK, f"PipeWire has a camera node for {device}: {props.get('node.description', '?')}")
    return Check(
        WARN,
        f"PipeWire has no node for {device}: PipeWire camera clients (Firefox, OBS, portals) do not see PrivacyCam "
        "(it probed the device before PrivacyCam wrote to it)",
        "with PrivacyCam running: systemctl --user restart wireplumber; for good, install "
        "systemd/wireplumber-after-privacycam.conf (README, 'As a service')",
    )


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


def check_daemon(config, unit_installed: bool | None = None) -> list[Check]:
    """Whether a daemon answers (its fix starts the unit only once the unit is installed), and
    whether its virtual camera has the driver's timeout image."""
    from privacycam.control.client import send_command
    from privacycam.control.socket_server import default_socket_path

    path = (config.control.socket if config else None) or default_socket_path()
    try:
        status = send_command(path, "status")
    except PrivacyCamError:
        if unit_installed is None:
            unit_installed = user_unit_path().is_file()
        how = (
            "start it: systemctl --user start privacycam"
            if unit_installed
            else "start it: privacycam run (or install the systemd user unit, above)"
        )
        return [Check(WARN, f"no daemon answers on {path}", how)]
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


def user_unit_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "systemd" / "user" / UNIT_FILE


def check_systemd_unit() -> Check:
    unit = user_unit_path()
    if unit.is_file():
        return Check(OK, f"systemd user unit installed: {unit} (app id {APP_ID})")
    old = unit.parent / "privacycam.service"
    if old.is_file() and not old.is_symlink():
        return Check(
            WARN,
            f"old systemd user unit {old}: the portal cannot tell its app id",
            f"systemctl --user disable --now privacycam; rm {old}; then install {UNIT_NAME} (README, 'As a service')",
        )
    source = shipped_file(UNIT_FILE)
    if source is None:
        fix = f"copy systemd/{UNIT_FILE} from the PrivacyCam source to {unit} (see README, 'As a service')"
    else:
        fix = f"install -Dm644 {source} {unit} && systemctl --user daemon-reload"
        fix += " && systemctl --user enable --now privacycam"
    return Check(WARN, "systemd user unit not installed", fix)


def doctor_command(args: argparse.Namespace) -> int:
    config_checks, config = check_config(args.config)
    label = config.output.card_label if config else "PrivacyCam"
    unit = check_systemd_unit()
    checks = [
        *check_python(),
        *check_models(config),
        *check_cameras(),
        *check_loopback(label),
        *check_pipewire(label),
        *config_checks,
        *check_hotkey(config),
        *check_preview(config),
        unit,
        *check_daemon(config, unit_installed=unit.status == OK),
    ]
    for check in checks:
        print(check.line())
    failed = sum(check.status == FAIL for check in checks)
    print(f"{failed} problem(s) found" if failed else "all good")
    return 1 if failed else 0
