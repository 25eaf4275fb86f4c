"""The daemon on a real (private) D-Bus session bus with fake desktop services.

A private `dbus-daemon --session` per test (python-dbusmock's PrivateDBus);
the portal is the test's own small service (tests/fake_portal.py, so the test
can stop and restart it), the notification server is python-dbusmock's
notification_daemon template and the tray host our StatusNotifierWatcher
template. Nothing inside PrivacyCam is mocked: the daemon runs as
`privacycam run` and talks D-Bus like on a desktop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import cli_env, run_cli
from daemon_helpers import RunningDaemon

from privacycam.sources.synthetic import SyntheticSource

dbus = pytest.importorskip("dbus", reason="needs python-dbusmock (pip install '.[test]'; scripts/test.sh does this)")
dbusmock_testcase = pytest.importorskip("dbusmock.testcase")

pytestmark = pytest.mark.skipif(
    not shutil.which("dbus-daemon"), reason="needs dbus-daemon (apt-get install dbus; scripts/test.sh does this)"
)

FAKE_PORTAL = Path(__file__).with_name("fake_portal.py")
WATCHER_TEMPLATE = Path(__file__).parent / "dbusmock_templates" / "status_notifier_watcher.py"
MOCK_IFACE = "org.freedesktop.DBus.Mock"


@pytest.fixture
def private_bus():
    """A private session bus (dbusmock's PrivateDBus, which sets DBUS_SESSION_BUS_ADDRESS here: undone after)."""
    before = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    bus = dbusmock_testcase.PrivateDBus(dbusmock_testcase.BusType.SESSION)
    bus.start()
    try:
        yield bus
    finally:
        bus.stop()
        if before is None:
            os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = before


@pytest.fixture
def session_bus(private_bus) -> str:
    return private_bus.address


class FakePortal:
    def __init__(self, address: str, mode: str = "require-app-id") -> None:
        env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address}
        self.process = subprocess.Popen(
            [sys.executable, str(FAKE_PORTAL), f"--{mode}"], env=env, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout.readline().strip() == "ready", "the fake portal did not start"
        self.connection = dbus.bus.BusConnection(address)
        self.control = dbus.Interface(
            self.connection.get_object("org.freedesktop.portal.Desktop", "/test"), "org.privacycam.test.FakePortal"
        )

    def calls(self) -> list[list[str]]:
        return json.loads(str(self.control.Calls()))

    def bound(self) -> bool:
        return any(call[0] == "BindShortcuts" for call in self.calls())

    def press(self, shortcut_id: str = "toggle-privacy") -> int:
        return int(self.control.Press(shortcut_id))

    def stop(self) -> None:
        self.connection.close()
        self.process.terminate()
        self.process.wait(10)


class LoggedDaemon(RunningDaemon):
    """A RunningDaemon whose log is read as it comes, so a test can wait for a line."""

    def __init__(self, *args, **kwargs) -> None:
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None
        super().__init__(*args, **kwargs)

    def status(self) -> dict | None:
        if self._reader is None:  # start reading as soon as the process exists
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return super().status()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, timeout: float = 20) -> None:
        self.wait_until(lambda: any(text in line for line in self.lines), timeout, f"the log line {text!r}")

    def stop(self, timeout: float = 15) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("daemon did not stop on SIGTERM: " + "\n".join(self.lines)) from None
        if self._reader is not None:
            self._reader.join()
        return self.process.returncode, "\n".join(self.lines)


def start_daemon(runtime_dir: Path, address: str, *args: str, config: str = "", **env: str) -> LoggedDaemon:
    extra = {"XDG_RUNTIME_DIR": str(runtime_dir), "DBUS_SESSION_BUS_ADDRESS": address, **env}
    options = []
    if config:
        path = runtime_dir / "config.yaml"
        path.write_text(config)
        options = ["--config", str(path)]
    return LoggedDaemon(
        runtime_dir, *options, "--input", "synthetic", *(args or ("--output", "null")), env=cli_env(**extra)
    )


def privacy(daemon: RunningDaemon) -> bool:
    return daemon.command("status")["privacy"]


def mock_calls(connection, name: str, path: str, method: str) -> list:
    mock = dbus.Interface(connection.get_object(name, path), MOCK_IFACE)
    return list(mock.GetMethodCalls(method))


def wait_for_desktop_services(daemon: RunningDaemon, connection):
    """The daemon's tray item exists (the last service started): its Properties interface."""
    name = f"org.kde.StatusNotifierItem-{daemon.process.pid}-1"
    daemon.wait_until(lambda: connection.name_has_owner(name), 20, "the daemon's desktop services")
    return dbus.Interface(connection.get_object(name, "/StatusNotifierItem"), "org.freedesktop.DBus.Properties")


# -- GlobalShortcuts portal ------------------------------------------------------------


def test_portal_shortcut_toggles_privacy_in_status_and_frames(session_bus, runtime_dir, tmp_path):
    portal = FakePortal(session_bus)  # refuses callers without an app id, like xdg-desktop-portal >= 1.21
    out = tmp_path / "frames"
    daemon = start_daemon(runtime_dir, session_bus, "--output", str(out), WAYLAND_DISPLAY="wayland-test")
    try:
        daemon.wait_until(portal.bound, 20, "the daemon to bind its shortcut")
        members = [call[0] for call in portal.calls()]
        assert members == ["Register", "CreateSession", "BindShortcuts"]
        register, _, bind = portal.calls()
        assert register[1] == bind[1] and bind[2] == "io.github.privacycam.PrivacyCam"
        assert bind[3:] == ["p"]  # the preferred trigger: privacy.hotkey with no modifiers
        daemon.wait_until(lambda: daemon.command("status")["segmenter"] != "loading", 20, "the model")
        assert privacy(daemon) is True
        daemon.wait_until(lambda: any(out.glob("0*.png")), 20, "a filtered frame")
        filtered = max(p.stem for p in out.glob("0*.png"))
        assert portal.press() == 1
        daemon.wait_until(lambda: privacy(daemon) is False, 10, "privacy off after Activated")
        # The newest frame now, and the next, may have been composited before the switch; the one after not.
        newest = max(p.stem for p in out.glob("0*.png"))
        later = lambda: sorted(p.stem for p in out.glob("0*.png") if p.stem > newest)  # noqa: E731
        daemon.wait_until(lambda: len(later()) >= 2, 10, "two newer frames")
        last = later()[1]
        assert portal.press() == 1
        daemon.wait_until(lambda: privacy(daemon) is True, 10, "privacy on after the second Activated")
    finally:
        code, stderr = daemon.stop()
        portal.stop()
    assert code == 0, stderr
    assert "privacy off (hotkey)" in stderr and "privacy on (hotkey)" in stderr
    assert "'Press p' toggles privacy" in stderr
    source, raw = SyntheticSource(1280, 720), {}
    for _ in range(int(last) + 1):
        frame = source.read()
        if frame.name in (filtered, last):
            raw[frame.name] = frame.image.copy()
    assert not np.array_equal(cv2.imread(str(out / f"{filtered}.png")), raw[filtered]), "privacy on: not filtered"
    assert np.array_equal(cv2.imread(str(out / f"{last}.png")), raw[last]), "privacy off: not the raw input"


def test_preferred_trigger_follows_the_modifiers(session_bus, runtime_dir):
    portal = FakePortal(session_bus)
    config = "privacy: {hotkey: b, hotkey_modifiers: [alt, ctrl], hotkey_backend: portal}\n"
    daemon = start_daemon(runtime_dir, session_bus, config=config)  # no WAYLAND_DISPLAY: the backend is forced
    try:
        daemon.wait_until(portal.bound, 20, "the daemon to bind its shortcut")
        assert portal.calls()[-1][3:] == ["CTRL+ALT+b"]
    finally:
        daemon.stop()
        portal.stop()


def test_a_portal_started_by_dbus_activation_is_bound_once(private_bus, runtime_dir):
    """On desktops xdg-desktop-portal is D-Bus activated by the first call: its appearing is no restart."""
    (private_bus.servicedir / "org.freedesktop.portal.Desktop.service").write_text(
        f"[D-BUS Service]\nName=org.freedesktop.portal.Desktop\nExec={sys.executable} {FAKE_PORTAL} --require-app-id\n"
    )
    connection = dbus.bus.BusConnection(private_bus.address)
    daemon = start_daemon(runtime_dir, private_bus.address, WAYLAND_DISPLAY="wayland-test")
    try:

        def calls() -> list:
            if not connection.name_has_owner("org.freedesktop.portal.Desktop"):
                return []  # asking it now would D-Bus-activate it for the test instead of the daemon
            portal = connection.get_object("org.freedesktop.portal.Desktop", "/test", introspect=False)
            return json.loads(str(dbus.Interface(portal, "org.privacycam.test.FakePortal").Calls()))

        daemon.wait_until(lambda: any(c[0] == "BindShortcuts" for c in calls()), 20, "the bind")
        daemon.wait_for_line("toggles privacy")
        members = [call[0] for call in calls()]
    finally:
        code, stderr = daemon.stop()
        if connection.name_has_owner("org.freedesktop.portal.Desktop"):
            bus = dbus.Interface(
                connection.get_object("org.freedesktop.DBus", "/org/freedesktop/DBus"), "org.freedesktop.DBus"
            )
            os.kill(int(bus.GetConnectionUnixProcessID("org.freedesktop.portal.Desktop")), signal.SIGTERM)
        connection.close()
    assert code == 0, stderr
    assert members == ["Register", "CreateSession", "BindShortcuts"]
    assert "restarted" not in stderr and "waits for" not in stderr


def test_portal_refusal_is_one_log_line_and_the_daemon_keeps_running(session_bus, runtime_dir):
    portal = FakePortal(session_bus, "refuse")
    daemon = start_daemon(runtime_dir, session_bus, WAYLAND_DISPLAY="wayland-test")
    try:
        daemon.wait_until(lambda: any(c[0] == "CreateSession" for c in portal.calls()), 20, "a CreateSession")
        assert daemon.command("toggle")["privacy"] is False  # the daemon still serves
    finally:
        code, stderr = daemon.stop()
        portal.stop()
    assert code == 0, stderr
    refusals = [line for line in stderr.splitlines() if "An app id is required" in line]
    assert len(refusals) == 1, stderr
    assert "app-io.github.privacycam.PrivacyCam.service" in refusals[0] and "privacycam toggle" in refusals[0]
    assert "Traceback" not in stderr


def test_portal_that_restarts_gets_the_shortcut_again(session_bus, runtime_dir):
    daemon = start_daemon(runtime_dir, session_bus, WAYLAND_DISPLAY="wayland-test")  # no portal yet
    portal = None
    try:
        portal = FakePortal(session_bus)  # appears after the daemon: it binds then
        daemon.wait_until(portal.bound, 20, "the daemon to bind when the portal appears")
        portal.stop()
        portal = FakePortal(session_bus)  # a new portal process knows no session
        daemon.wait_until(portal.bound, 20, "the daemon to bind again after the portal restarted")
        assert portal.press() == 1
        daemon.wait_until(lambda: privacy(daemon) is False, 10, "privacy off through the new portal")
    finally:
        code, stderr = daemon.stop()
        if portal is not None:
            portal.stop()
    assert code == 0, stderr
    waits = [line for line in stderr.splitlines() if "waits for xdg-desktop-portal" in line]
    assert len(waits) == 1, stderr
    assert "binding the privacy shortcut again" in stderr
    assert "Traceback" not in stderr


# -- notifications ---------------------------------------------------------------------


def test_each_toggle_sends_one_notification(session_bus, runtime_dir):
    server = dbusmock_testcase.SpawnedMock.spawn_with_template("notification_daemon", {})
    connection = dbus.bus.BusConnection(session_bus)
    daemon = start_daemon(runtime_dir, session_bus, config="privacy: {hotkey: null}\n")
    try:
        wait_for_desktop_services(daemon, connection)
        for _ in range(3):
            daemon.command("toggle")

        def notify() -> list:
            return mock_calls(connection, "org.freedesktop.Notifications", "/org/freedesktop/Notifications", "Notify")

        daemon.wait_until(lambda: len(notify()) >= 3, 10, "three notifications")
        daemon.command("status")
        calls = notify()
    finally:
        code, stderr = daemon.stop()
        connection.close()
        server.terminate()
    assert code == 0, stderr
    assert len(calls) == 3
    args = [call[1] for call in calls]
    assert [str(a[3]) for a in args] == ["PrivacyCam: privacy OFF", "PrivacyCam: privacy on", "PrivacyCam: privacy OFF"]
    assert [int(a[1]) for a in args] == [0, 1, 1]  # each replaces the one before
    assert str(args[0][6]["desktop-entry"]) == "io.github.privacycam.PrivacyCam"


def test_notifications_can_be_switched_off(session_bus, runtime_dir):
    server = dbusmock_testcase.SpawnedMock.spawn_with_template("notification_daemon", {})
    connection = dbus.bus.BusConnection(session_bus)
    daemon = start_daemon(runtime_dir, session_bus, config="privacy: {notifications: false, hotkey: null}\n")
    try:
        item = wait_for_desktop_services(daemon, connection)
        daemon.command("toggle")
        # The tray follows the toggle on the same thread, after the notifier would have sent its Notify.
        icon = lambda: str(item.Get("org.kde.StatusNotifierItem", "IconName"))  # noqa: E731
        daemon.wait_until(lambda: icon() == "camera-web", 10, "the tray to show privacy off")
        calls = mock_calls(connection, "org.freedesktop.Notifications", "/org/freedesktop/Notifications", "Notify")
    finally:
        daemon.stop()
        connection.close()
        server.terminate()
    assert calls == []


# -- tray ------------------------------------------------------------------------------


def test_tray_item_follows_the_state_and_its_menu_works(session_bus, runtime_dir):
    watcher = dbusmock_testcase.SpawnedMock.spawn_with_template(str(WATCHER_TEMPLATE), {})
    connection = dbus.bus.BusConnection(session_bus)
    daemon = start_daemon(runtime_dir, session_bus, config="privacy: {hotkey: null}\n")

    def registered() -> list:
        watcher = ("org.kde.StatusNotifierWatcher", "/StatusNotifierWatcher")
        return mock_calls(connection, *watcher, "RegisterStatusNotifierItem")

    try:
        daemon.wait_until(registered, 20, "the tray item to register")
        name = str(registered()[0][1][0])
        item = connection.get_object(name, "/StatusNotifierItem")
        props = dbus.Interface(item, "org.freedesktop.DBus.Properties")
        get = lambda key: props.Get("org.kde.StatusNotifierItem", key)  # noqa: E731
        assert str(get("IconName")) == "security-high"
        assert str(get("ToolTip")[2]) == "PrivacyCam: privacy on"
        # The null sink counts as always watched; with the virtual camera the readers' names show (see below).
        assert str(get("ToolTip")[3]) == "camera live; someone is watching"
        daemon.command("off")
        daemon.wait_until(lambda: str(get("IconName")) == "camera-web", 10, "the icon to show privacy off")
        assert str(get("ToolTip")[2]) == "PrivacyCam: privacy OFF"
        dbus.Interface(item, "org.kde.StatusNotifierItem").Activate(0, 0)  # a click
        daemon.wait_until(lambda: privacy(daemon) is True, 10, "the click to turn privacy on")
        daemon.wait_until(lambda: str(get("IconName")) == "security-high", 10, "the icon to follow")
        menu = dbus.Interface(connection.get_object(name, str(get("Menu"))), "com.canonical.dbusmenu")
        _, layout = menu.GetLayout(0, -1, [])
        labels = {int(child[0]): str(child[1]["label"]) for child in layout[2]}
        assert labels == {1: "Privacy (blurred background)", 2: "Quit PrivacyCam"}
        menu.Event(1, "clicked", dbus.String("", variant_level=1), 0)
        daemon.wait_until(lambda: privacy(daemon) is False, 10, "the menu checkbox to turn privacy off")
        menu.Event(2, "clicked", dbus.String("", variant_level=1), 0)
        daemon.process.wait(15)
    finally:
        code, stderr = daemon.stop()
        connection.close()
        watcher.terminate()
    assert code == 0, stderr
    assert "privacy on (tray icon)" in stderr and "stopping (tray menu)" in stderr


# -- a dead or missing bus -------------------------------------------------------------


@pytest.fixture
def silent_bus(tmp_path):
    """A socket that accepts connections and never says a word: a hung bus."""
    path = tmp_path / "hung-bus"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    held, stop = [], threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"unix:path={path}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


@pytest.mark.parametrize("bus_kind", ["hung", "missing"])
def test_a_dead_bus_blocks_neither_start_nor_sigterm(bus_kind, silent_bus, runtime_dir, tmp_path):
    address = silent_bus if bus_kind == "hung" else f"unix:path={tmp_path / 'no-such-bus'}"
    daemon = start_daemon(runtime_dir, address, WAYLAND_DISPLAY="wayland-test")
    assert daemon.command("toggle")["privacy"] is False
    if bus_kind == "missing":
        daemon.wait_for_line("hotkey 'p' (portal) is off")
    daemon.process.send_signal(signal.SIGTERM)
    code, stderr = daemon.stop(timeout=8)  # the connect timeout is 5 s: stopping must not wait for it
    assert code == 0, stderr
    assert "Traceback" not in stderr
    if bus_kind == "missing":
        assert len([line for line in stderr.splitlines() if "hotkey 'p' (portal) is off" in line]) == 1, stderr


def test_tray_names_the_processes_that_read_the_device(tmp_path):
    from privacycam.control.tray import reader_names, tray_look

    device = tmp_path / "video10"
    device.touch()
    hold_open = "import sys; f = open(sys.argv[1]); print('open', flush=True); sys.stdin.read()"
    reader = subprocess.Popen(
        [sys.executable, "-c", hold_open, device],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "open"
        names = reader_names(str(device), exclude_pid=os.getpid())
        comm = Path(f"/proc/{reader.pid}/comm").read_text().strip()
    finally:
        reader.communicate("")
    assert names == [f"{comm} ({reader.pid})"]
    status = {"privacy": False, "camera_open": True, "consumer_watching": True}
    assert tray_look(status, names)[2] == f"camera live; watched by {names[0]}"
    assert reader_names(str(device), exclude_pid=os.getpid()) == []


# -- doctor ----------------------------------------------------------------------------


def test_doctor_reports_the_backend_the_portal_the_tray_host_and_the_app_id(session_bus, tmp_path):
    portal = FakePortal(session_bus)
    watcher = dbusmock_testcase.SpawnedMock.spawn_with_template(str(WATCHER_TEMPLATE), {})
    data_home = tmp_path / "share"
    env = cli_env(
        DBUS_SESSION_BUS_ADDRESS=session_bus,
        WAYLAND_DISPLAY="wayland-test",
        XDG_DATA_HOME=str(data_home),
        XDG_DATA_DIRS=str(tmp_path / "none"),
    )
    try:
        before = run_cli("doctor", env=env).stdout.splitlines()
        entry = data_home / "applications" / "io.github.privacycam.PrivacyCam.desktop"
        entry.parent.mkdir(parents=True)
        entry.write_text("[Desktop Entry]\n")
        after = run_cli("doctor", env=env).stdout.splitlines()
    finally:
        watcher.terminate()
        portal.stop()

    def line(lines: list[str], text: str) -> str:
        found = [entry for entry in lines if text in entry]
        assert len(found) == 1, "\n".join(lines)
        return found[0]

    assert line(before, "hotkey backend:").startswith("OK    hotkey backend: portal (a Wayland session")
    assert "GlobalShortcuts version 1" in line(before, "hotkey backend:")
    assert line(before, "app id").startswith("WARN  app id io.github.privacycam.PrivacyCam: no desktop entry")
    assert line(after, "app id").startswith(f"OK    app id io.github.privacycam.PrivacyCam: desktop entry {entry}")
    assert line(before, "tray host").startswith("OK    tray host (StatusNotifierWatcher) present")
    assert line(before, "notification server").startswith("OK    no notification server")
    assert "hotkey_modifiers: [ctrl, alt]" in line(before, "has no modifiers")


def test_doctor_says_when_there_is_no_portal(session_bus):
    env = cli_env(DBUS_SESSION_BUS_ADDRESS=session_bus, WAYLAND_DISPLAY="wayland-test")
    lines = run_cli("doctor", env=env).stdout.splitlines()
    hotkey = [entry for entry in lines if "hotkey backend:" in entry]
    assert hotkey == [
        "WARN  hotkey backend: portal (a Wayland session (X11 clients get no global keys there)), but the portal has "
        "no GlobalShortcuts (no xdg-desktop-portal on the session bus)  -> it needs xdg-desktop-portal 1.16+ with KDE "
        "Plasma, GNOME 48+ or Hyprland; else bind `privacycam toggle` to a desktop shortcut, or set "
        "privacy.hotkey_backend: x11 on X11"
    ]
