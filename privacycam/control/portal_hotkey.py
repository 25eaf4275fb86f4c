"""The privacy hotkey on Wayland, through xdg-desktop-portal's GlobalShortcuts interface.

The flow (xdg-desktop-portal >= 1.16): Registry.Register our app id (1.19+;
older portals derive it from the systemd unit), CreateSession, BindShortcuts
with one `toggle-privacy` shortcut whose preferred trigger comes from
`privacy.hotkey`/`hotkey_modifiers`, then toggle on every `Activated`. The
desktop may show a dialog to confirm or change the key, and the user may pick
another one: the key that fires is the desktop's choice.

Replies come as Request::Response signals on a path known in advance
(request/<sender>/<token>), so we listen there before calling. When the portal
leaves and comes back (a crash, a desktop restart) the session is gone with it
and we bind again. A missing portal, one without GlobalShortcuts, or a refusal
each give one log line that says what to do; the daemon goes on either way.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable

from privacycam.control.dbus_session import (
    APP_ID,
    add_match,
    call,
    error_text,
    is_error,
    name_owner_change,
    watch_name,
)

log = logging.getLogger(__name__)

PORTAL_NAME = "org.freedesktop.portal.Desktop"
PORTAL_PATH = "/org/freedesktop/portal/desktop"
SHORTCUTS_IFACE = "org.freedesktop.portal.GlobalShortcuts"
REQUEST_IFACE = "org.freedesktop.portal.Request"
REGISTRY_IFACE = "org.freedesktop.host.portal.Registry"
SHORTCUT_ID = "toggle-privacy"
SHORTCUT_DESCRIPTION = "Toggle PrivacyCam's privacy mode (blurred background)"

# xdg "shortcuts" spec names for our config's modifier names.
TRIGGER_MODIFIERS = {"ctrl": "CTRL", "alt": "ALT", "shift": "SHIFT", "cmd": "LOGO"}
FALLBACK_HINT = (
    "bind `privacycam toggle` to a desktop keyboard shortcut instead (GNOME/KDE settings > Keyboard > Shortcuts)"
)
APP_ID_HINT = (
    f"run PrivacyCam as the shipped user unit app-{APP_ID}.service with {APP_ID}.desktop installed "
    "(README, 'As a service'), or "
)


def preferred_trigger(key: str, modifiers: Iterable[str]) -> str:
    """`p` with (ctrl, alt) -> `CTRL+ALT+p`, as the xdg shortcuts spec writes triggers."""
    order = ("ctrl", "alt", "shift", "cmd")
    wanted = set(modifiers)
    return "+".join([TRIGGER_MODIFIERS[m] for m in order if m in wanted] + [key.lower()])


def request_path(unique_name: str, token: str) -> str:
    sender = unique_name.lstrip(":").replace(".", "_")
    return f"{PORTAL_PATH}/request/{sender}/{token}"


class PortalHotkey:
    def __init__(self, key: str, modifiers: Iterable[str], on_hotkey: Callable[[], None]) -> None:
        self.key = key
        self.trigger = preferred_trigger(key, modifiers)
        self._on_hotkey = on_hotkey
        self._bus = None
        self._session: str | None = None
        self._responses: dict[str, asyncio.Future] = {}
        self._binding: asyncio.Task | None = None
        self._tokens = itertools.count(1)

    # -- DesktopService --------------------------------------------------------
    async def start(self, bus) -> None:
        self._bus = bus
        bus.add_message_handler(self._on_message)
        await add_match(bus, f"type='signal',interface='{REQUEST_IFACE}',member='Response'")
        await add_match(bus, f"type='signal',sender='{PORTAL_NAME}',interface='{SHORTCUTS_IFACE}'")
        await watch_name(bus, PORTAL_NAME)
        self._rebind()

    def bus_unavailable(self, reason: str) -> None:
        log.info("hotkey %r (portal) is off: %s; %s", self.key, reason, FALLBACK_HINT)

    async def privacy_changed(self, on: bool, cause: str) -> None:
        return None

    async def close(self) -> None:
        if self._binding is not None:
            self._binding.cancel()
        session, self._session = self._session, None
        if session and self._bus is not None and self._bus.connected:
            await call(self._bus, PORTAL_NAME, session, "org.freedesktop.portal.Session", "Close")

    # -- binding ---------------------------------------------------------------
    def _rebind(self) -> None:
        if self._binding is not None:
            self._binding.cancel()
        self._session = None
        for future in self._responses.values():
            future.cancel()
        self._responses.clear()
        self._binding = asyncio.ensure_future(self._bind())

    async def _bind(self) -> None:
        try:
            await self._register_app_id()
            session = await self._create_session()
            if session is None:
                return
            # From here on: an Activated can come in the same read as the bind's Response.
            self._session = session
            shortcuts = await self._bind_shortcuts(session)
            if shortcuts is None:
                self._session = None
                return
            triggers = [info.get("trigger_description") for sid, info in shortcuts if sid == SHORTCUT_ID]
            trigger = triggers[0].value if triggers and triggers[0] is not None else self.trigger
            log.info(
                "hotkey (portal): %r toggles privacy (asked for %s; change it in the desktop's keyboard settings)",
                trigger,
                self.trigger,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken reply must not end the daemon
            log.info("hotkey %r (portal) is off: %s; %s", self.key, exc, FALLBACK_HINT)

    async def _register_app_id(self) -> None:
        # Only xdg-desktop-portal >= 1.19 has the registry; older ones, and a
        # connection the portal already knows (the app-<id>.service unit), refuse:
        # both are fine.
        reply = await call(self._bus, PORTAL_NAME, PORTAL_PATH, REGISTRY_IFACE, "Register", "sa{sv}", [APP_ID, {}])
        if is_error(reply):
            log.debug("portal Registry.Register(%s): %s", APP_ID, error_text(reply))

    async def _request(self, member: str, signature: str, body: list, token: str) -> tuple[int, dict] | None:
        """Call a portal method that answers through a Request; (response, results), or None after one log line."""
        path = request_path(self._bus.unique_name, token)
        future = asyncio.get_running_loop().create_future()
        self._responses[path] = future
        try:
            reply = await call(self._bus, PORTAL_NAME, PORTAL_PATH, SHORTCUTS_IFACE, member, signature, body)
            if is_error(reply):
                self._log_refusal(reply)
                return None
            handle = reply.body[0]
            if handle != path:  # portals before 0.9 chose their own path
                self._responses[handle] = future
            return await future
        finally:
            self._responses.pop(path, None)

    async def _create_session(self) -> str | None:
        from dbus_fast import Variant

        n = next(self._tokens)
        token = f"privacycam_create_{n}"
        options = {
            "handle_token": Variant("s", token),
            "session_handle_token": Variant("s", f"privacycam_{n}"),
        }
        answer = await self._request("CreateSession", "a{sv}", [options], token)
        if answer is None:
            return None
        response, results = answer
        if response != 0 or "session_handle" not in results:
            log.info(
                "hotkey %r (portal) is off: the desktop refused a shortcut session (response %d); %s",
                self.key,
                response,
                FALLBACK_HINT,
            )
            return None
        return str(results["session_handle"].value)

    async def _bind_shortcuts(self, session: str) -> list | None:
        from dbus_fast import Variant

        token = f"privacycam_bind_{next(self._tokens)}"
        shortcut = {
            "description": Variant("s", SHORTCUT_DESCRIPTION),
            "preferred_trigger": Variant("s", self.trigger),
        }
        answer = await self._request(
            "BindShortcuts",
            "oa(sa{sv})sa{sv}",
            [session, [[SHORTCUT_ID, shortcut]], "", {"handle_token": Variant("s", token)}],
            token,
        )
        if answer is None:
            return None
        response, results = answer
        if response != 0:
            what = "the shortcut dialog was dismissed" if response == 1 else "the desktop refused the shortcut"
            log.info(
                "hotkey %r (portal) is off: %s (response %d); restart PrivacyCam to be asked again, or %s",
                self.key,
                what,
                response,
                FALLBACK_HINT,
            )
            return None
        shortcuts = results.get("shortcuts")
        return list(shortcuts.value) if shortcuts is not None else []

    def _log_refusal(self, reply) -> None:
        name, text = reply.error_name or "", error_text(reply)
        if name in ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"):
            log.info(
                "hotkey %r (portal) waits for xdg-desktop-portal, which is not running on the session bus; %s",
                self.key,
                FALLBACK_HINT,
            )
        elif name.startswith("org.freedesktop.DBus.Error.Unknown"):  # UnknownMethod/Interface/Object
            log.info(
                "hotkey %r (portal) is off: this desktop's portal has no GlobalShortcuts (%s; it needs "
                "xdg-desktop-portal 1.16+ with KDE Plasma, GNOME 48+ or Hyprland); set privacy.hotkey_backend: x11 "
                "on X11, or %s",
                self.key,
                text,
                FALLBACK_HINT,
            )
        elif "app id" in text.lower() or "application id" in text.lower():
            log.info(
                "hotkey %r (portal) is off: the portal refused it (%s); %s%s",
                self.key,
                text,
                APP_ID_HINT,
                FALLBACK_HINT,
            )
        else:
            log.info("hotkey %r (portal) is off: the portal refused it (%s); %s", self.key, text, FALLBACK_HINT)

    # -- signals ---------------------------------------------------------------
    def _on_message(self, message) -> None:
        owner = name_owner_change(message, PORTAL_NAME)
        if owner is not None:
            if owner and self._binding is not None and not self._binding.done():
                pass  # our own call D-Bus-activated it: that bind goes on, to the new owner
            elif owner:
                log.info("hotkey (portal): xdg-desktop-portal (re)started, binding the privacy shortcut again")
                self._rebind()
            else:
                log.info("hotkey (portal): xdg-desktop-portal went away; the hotkey is off until it is back")
                self._session = None
            return None
        if message.interface == REQUEST_IFACE and message.member == "Response":
            future = self._responses.get(message.path)
            if future is not None and not future.done():
                future.set_result((int(message.body[0]), dict(message.body[1])))
            return None
        if (
            message.interface == SHORTCUTS_IFACE
            and message.member == "Activated"
            and self._session is not None
            and message.body[:2] == [self._session, SHORTCUT_ID]
        ):
            self._on_hotkey()
        return None
