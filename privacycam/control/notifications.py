"""A desktop notification (org.freedesktop.Notifications) on each change of the privacy state.

Each one replaces the previous, so toggling ten times leaves one bubble, not
ten. Without a notification server (or a session bus) this stays silent: the
log already records every change.
"""

from __future__ import annotations

import asyncio
import logging

from privacycam.control.dbus_session import APP_ID, call, error_text, is_error

log = logging.getLogger(__name__)

NOTIFICATIONS_NAME = "org.freedesktop.Notifications"
NOTIFICATIONS_PATH = "/org/freedesktop/Notifications"
EXPIRE_MS = 3000
ICON_PRIVACY_ON = "security-high"
ICON_PRIVACY_OFF = "camera-web"


def notification_text(on: bool) -> tuple[str, str]:
    if on:
        return "PrivacyCam: privacy on", "Your background is blurred in the virtual camera."
    return "PrivacyCam: privacy OFF", "The virtual camera now shows your unfiltered background."


class ToggleNotifier:
    def __init__(self) -> None:
        self._bus = None
        self._last_id = 0
        self._lock: asyncio.Lock | None = None
        self._warned = False

    async def start(self, bus) -> None:
        self._bus = bus
        self._lock = asyncio.Lock()

    def bus_unavailable(self, reason: str) -> None:
        log.debug("notifications off: %s", reason)

    async def privacy_changed(self, on: bool, cause: str) -> None:
        from dbus_fast import Variant

        if self._bus is None or self._lock is None:
            return
        summary, body = notification_text(on)
        hints = {
            "desktop-entry": Variant("s", APP_ID),
            "category": Variant("s", "device"),
            "transient": Variant("b", True),
            "urgency": Variant("y", 1 if on else 2),
        }
        async with self._lock:  # in order, each replacing the one before
            reply = await call(
                self._bus,
                NOTIFICATIONS_NAME,
                NOTIFICATIONS_PATH,
                NOTIFICATIONS_NAME,
                "Notify",
                "susssasa{sv}i",
                [
                    "PrivacyCam",
                    self._last_id,
                    ICON_PRIVACY_ON if on else ICON_PRIVACY_OFF,
                    summary,
                    f"{body} ({cause})",
                    [],
                    hints,
                    EXPIRE_MS,
                ],
            )
            if is_error(reply):
                if not self._warned:
                    self._warned = True
                    log.debug("no desktop notification for the privacy change: %s", error_text(reply))
                return
            self._last_id = int(reply.body[0])

    async def close(self) -> None:
        return None
