"""The global privacy hotkey (default `p`): which backend runs it, and the X11 one through pynput.

`privacy.hotkey_backend` picks: portal (xdg-desktop-portal GlobalShortcuts,
control/portal_hotkey.py: Wayland, and any desktop whose portal has it), x11
(pynput on an X display), none, or auto: portal in a Wayland session, x11 with
an X display, else portal if there is a session bus at all.

pynput's GlobalHotKeys ignores modifiers (it fires on shift+p and ctrl+p for
`p`), so this listener tracks modifiers itself and fires only when exactly the
configured ones are held: with no modifiers configured, `P` (shift) and
ctrl+p do not toggle.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from privacycam.x_display import x_display_problem

log = logging.getLogger(__name__)

NO_BACKEND_HINT = (
    "bind `privacycam toggle` to a desktop keyboard shortcut instead (GNOME/KDE settings > Keyboard > Shortcuts)"
)
MODIFIERS_HINT = "to type a bare `p` in other windows without toggling, set privacy.hotkey_modifiers: [ctrl, alt]"
STOP_TIMEOUT_S = 1.0
READY_TIMEOUT_S = 2.0


def _listener_that_logs_its_death(keyboard):
    """pynput's Listener, with its thread ending in one log line instead of a traceback.

    When the X server drops the connection, pynput's thread dies with Xlib's
    ConnectionClosedError (printed as a traceback by threading); the daemon
    goes on without the hotkey, and says so once.
    """

    class Listener(keyboard.Listener):
        def run(self) -> None:
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - Xlib raises several kinds for a lost display
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("hotkey is off: its X connection is gone (%s); %s", reason, NO_BACKEND_HINT)

    return Listener


class HotkeyListener:
    def __init__(self, key: str, modifiers: Iterable[str], on_hotkey: Callable[[], None]) -> None:
        from pynput import keyboard  # raises ImportError without a usable X display

        self._keyboard = keyboard
        self._key = key.lower()
        self._wanted = frozenset(modifiers)
        self._held: set[str] = set()
        self._on_hotkey = on_hotkey
        self._listener = _listener_that_logs_its_death(keyboard)(on_press=self._press, on_release=self._release)
        self._listener.daemon = True
        self._listener.start()
        # The listener connects to X on its own thread; a key pressed before that
        # is lost. Wait for it, but never forever (wait() has no timeout and
        # would block for good if the thread died first).
        self._ready_waiter = threading.Thread(target=self._listener.wait, daemon=True)
        self._ready_waiter.start()
        self._ready_waiter.join(READY_TIMEOUT_S)
        if not self.ready and self._listener.is_alive():  # a dead listener has said why
            log.info("hotkey %r: the keyboard listener is not ready after %.0f s", key, READY_TIMEOUT_S)

    @property
    def alive(self) -> bool:
        return self._listener.is_alive()

    @property
    def ready(self) -> bool:
        """Connected to X and listening: a key pressed now is seen."""
        return not self._ready_waiter.is_alive() and self.alive

    def _modifier(self, key) -> str | None:
        k = self._keyboard.Key
        names = {
            "ctrl": (k.ctrl, k.ctrl_l, k.ctrl_r),
            "shift": (k.shift, k.shift_l, k.shift_r),
            "alt": (k.alt, k.alt_l, k.alt_r, k.alt_gr),
            "cmd": (k.cmd, k.cmd_l, k.cmd_r),
        }
        return next((name for name, keys in names.items() if key in keys), None)

    def _press(self, key) -> None:
        modifier = self._modifier(key)
        if modifier:
            self._held.add(modifier)
            return
        char = getattr(key, "char", None)
        if char and char.lower() == self._key and self._held == self._wanted:
            self._on_hotkey()

    def _release(self, key) -> None:
        modifier = self._modifier(key)
        if modifier:
            self._held.discard(modifier)

    def stop(self) -> None:
        """Stop listening; returns within STOP_TIMEOUT_S whatever state X and the listener are in.

        pynput's stop() cannot be trusted with shutdown: for a listener thread
        that died before it was ready (X dropped the connection while it
        started) it waits for readiness forever, on a lost connection it raises,
        and it may not end the thread until the next X event. So it runs on a
        thread of its own that is waited for a bounded time.
        """
        if not self._listener.is_alive():
            return  # died with its X connection, and said so
        deadline = time.monotonic() + STOP_TIMEOUT_S
        stopper = threading.Thread(target=self._stop_listener, name="hotkey-stop", daemon=True)
        stopper.start()
        stopper.join(STOP_TIMEOUT_S)
        self._listener.join(max(0.0, deadline - time.monotonic()))
        if self._listener.is_alive():
            log.debug("hotkey listener still running after %.0f s; leaving it (a daemon thread)", STOP_TIMEOUT_S)

    def _stop_listener(self) -> None:
        try:
            self._listener.stop()
        except Exception as exc:  # noqa: BLE001 - Xlib raises several kinds for a lost display
            log.debug("hotkey listener stop: %s", exc)


def start_hotkey(key: str | None, modifiers: Iterable[str], on_hotkey: Callable[[], None]) -> HotkeyListener | None:
    """A running listener, or None with one log line saying why and what to do instead."""
    if not key:
        return None
    problem = x_display_problem()
    if problem is not None:
        log.info("hotkey %r is off: %s; %s", key, problem, NO_BACKEND_HINT)
        return None
    try:
        return HotkeyListener(key, modifiers, on_hotkey)
    except Exception as exc:  # noqa: BLE001 - pynput raises many kinds when X is unusable
        log.info("hotkey %r is off: %s; %s", key, str(exc).splitlines()[0] if str(exc) else exc, NO_BACKEND_HINT)
        return None


@dataclass(frozen=True)
class HotkeyBackend:
    name: str  # portal, x11 or none
    reason: str


def session_bus_address(env: Mapping[str, str]) -> str | None:
    """The session bus a D-Bus client would use: $DBUS_SESSION_BUS_ADDRESS, else $XDG_RUNTIME_DIR/bus if it exists."""
    if env.get("DBUS_SESSION_BUS_ADDRESS"):
        return env["DBUS_SESSION_BUS_ADDRESS"]
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.exists(os.path.join(runtime, "bus")):
        return f"unix:path={os.path.join(runtime, 'bus')}"
    return None


def choose_hotkey_backend(configured: str, key: str | None, env: Mapping[str, str] | None = None) -> HotkeyBackend:
    """Which backend runs the hotkey, and why (for the log and `privacycam doctor`)."""
    env = os.environ if env is None else env
    if not key:
        return HotkeyBackend("none", "privacy.hotkey is null")
    if configured != "auto":
        return HotkeyBackend(configured, f"privacy.hotkey_backend: {configured}")
    if env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland":
        return HotkeyBackend("portal", "a Wayland session (X11 clients get no global keys there)")
    if env.get("DISPLAY"):
        return HotkeyBackend("x11", f"an X11 session (DISPLAY={env['DISPLAY']})")
    if session_bus_address(env):
        return HotkeyBackend("portal", "no display in the environment, but a D-Bus session bus")
    return HotkeyBackend("none", "no Wayland or X display and no D-Bus session bus")
