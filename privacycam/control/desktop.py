"""Desktop integration for the daemon: the hotkey backend, notifications and the tray, started and stopped as one.

The daemon owns a `DesktopIntegration`; it calls `privacy_changed` through the
`ObservedPrivacyState` on every change, whatever caused it (socket, signal,
hotkey, tray), and `stop()` on the way out. All D-Bus work runs on the
session-bus thread; nothing here blocks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from privacycam.config import PrivacyConfig
from privacycam.control.dbus_session import SessionBusThread
from privacycam.control.hotkey import choose_hotkey_backend, session_bus_address, start_hotkey
from privacycam.pipeline import PrivacyState

log = logging.getLogger(__name__)


class ObservedPrivacyState(PrivacyState):
    """A PrivacyState that also tells listeners about each change (listeners must not block)."""

    def __init__(self, on: bool) -> None:
        super().__init__(on)
        self.listeners: list[Callable[[bool, str], None]] = []

    def set(self, on: bool, cause: str) -> bool:
        changed = super().set(on, cause)
        if changed:
            self._tell(on, cause)
        return changed

    def toggle(self, cause: str) -> bool:
        on = super().toggle(cause)
        self._tell(on, cause)
        return on

    def _tell(self, on: bool, cause: str) -> None:
        for listener in self.listeners:
            listener(on, cause)


class DesktopIntegration:
    def __init__(
        self,
        config: PrivacyConfig,
        privacy: ObservedPrivacyState,
        status: Callable[[], dict],
        device: Callable[[], str | None],
        toggle: Callable[[str], object],
        on_quit: Callable[[], None],
    ) -> None:
        self._config = config
        self._privacy = privacy
        self._status = status
        self._device = device
        self._toggle = toggle  # the daemon's toggle(cause): hotkey and tray clicks go through it
        self._on_quit = on_quit
        self._x11 = None
        self._bus: SessionBusThread | None = None
        self.backend = choose_hotkey_backend(config.hotkey_backend, config.hotkey)

    def start(self) -> None:
        config, backend = self._config, self.backend
        log.debug("hotkey backend: %s (%s)", backend.name, backend.reason)
        if backend.name == "x11":
            self._x11 = start_hotkey(config.hotkey, config.hotkey_modifiers, self._hotkey)
        elif backend.name == "none" and config.hotkey and config.hotkey_backend == "auto":
            log.info(
                "hotkey %r is off: %s; bind `privacycam toggle` to a desktop keyboard shortcut",
                config.hotkey,
                backend.reason,
            )
        address = session_bus_address(os.environ)
        wants_bus = backend.name == "portal" or config.notifications or config.tray
        if not wants_bus:
            return
        if address is None:
            if backend.name == "portal":
                log.info(
                    "hotkey %r (portal) is off: no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS unset); "
                    "bind `privacycam toggle` to a desktop keyboard shortcut",
                    config.hotkey,
                )
            return
        self._bus = SessionBusThread(self._build_services, address)
        self._privacy.listeners.append(self._bus.privacy_changed)
        self._bus.start()

    @property
    def hotkey_state(self) -> str:
        """For `status`: "ready" (X11, listening), "starting" (X11, not yet), "portal" (the desktop
        delivers it), or "off"."""
        if self._x11 is not None:
            return "ready" if self._x11.ready else "starting" if self._x11.alive else "off"
        return "portal" if self.backend.name == "portal" and self._bus is not None else "off"

    def _hotkey(self) -> None:
        self._toggle("hotkey")

    def _build_services(self) -> list:
        """Runs on the session-bus thread: the imports of dbus-fast and the tray happen there."""
        config, services = self._config, []
        if self.backend.name == "portal":
            from privacycam.control.portal_hotkey import PortalHotkey

            services.append(PortalHotkey(config.hotkey, config.hotkey_modifiers, self._hotkey))
        if config.notifications:
            from privacycam.control.notifications import ToggleNotifier

            services.append(ToggleNotifier())
        if config.tray:
            from privacycam.control.tray import Tray

            services.append(Tray(self._status, self._device, lambda: self._toggle("tray icon"), self._on_quit))
        return services

    def stop(self) -> None:
        if self._x11 is not None:
            self._x11.stop()
        if self._bus is not None:
            self._bus.stop()
