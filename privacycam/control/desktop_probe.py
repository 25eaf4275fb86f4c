"""What the desktop's session bus offers PrivacyCam, for `privacycam doctor` (one short, bounded look)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from privacycam.control.dbus_session import DBUS_NAME, DBUS_PATH, call, error_text, is_error
from privacycam.control.hotkey import session_bus_address
from privacycam.control.notifications import NOTIFICATIONS_NAME
from privacycam.control.portal_hotkey import PORTAL_NAME, PORTAL_PATH, SHORTCUTS_IFACE

PROBE_TIMEOUT_S = 3.0
WATCHER_NAME = "org.kde.StatusNotifierWatcher"


@dataclass
class DesktopFound:
    error: str = ""  # no bus, or it did not answer
    portal: str = ""  # why GlobalShortcuts is missing
    shortcuts_version: int = 0
    tray_host: bool = False
    notifications: bool = False


def probe_desktop(address: str | None = None) -> DesktopFound:
    address = address or session_bus_address(os.environ)
    if address is None:
        return DesktopFound(error="there is no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is unset)")
    try:
        return asyncio.run(asyncio.wait_for(_probe(address), PROBE_TIMEOUT_S))
    except asyncio.TimeoutError:
        return DesktopFound(error=f"the session bus did not answer within {PROBE_TIMEOUT_S:.0f} s")
    except Exception as exc:  # noqa: BLE001 - any failure to connect means the same to the user
        return DesktopFound(error=f"the session bus cannot be reached ({str(exc) or type(exc).__name__})")


async def _probe(address: str) -> DesktopFound:
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_address=address).connect()
    try:
        found = DesktopFound()
        names = set()
        for member in ("ListNames", "ListActivatableNames"):
            reply = await call(bus, DBUS_NAME, DBUS_PATH, DBUS_NAME, member)
            if not is_error(reply):
                names.update(reply.body[0])
        found.notifications = NOTIFICATIONS_NAME in names
        found.tray_host = WATCHER_NAME in names
        if PORTAL_NAME not in names:
            found.portal = "no xdg-desktop-portal on the session bus"
            return found
        reply = await call(
            bus, PORTAL_NAME, PORTAL_PATH, "org.freedesktop.DBus.Properties", "Get", "ss", [SHORTCUTS_IFACE, "version"]
        )
        if is_error(reply):
            found.portal = error_text(reply)
        else:
            found.shortcuts_version = int(reply.body[0].value)
        return found
    finally:
        bus.disconnect()
