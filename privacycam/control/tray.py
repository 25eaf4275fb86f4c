"""A tray icon (StatusNotifierItem, with a com.canonical.dbusmenu menu) that shows the privacy state.

Icon and tooltip say whether privacy is on, whether the camera is live and
which processes read the virtual camera; clicking it toggles privacy, its menu
toggles or quits. KDE Plasma, Xfce, Cinnamon, Budgie and GNOME with the
AppIndicator extension host these items through org.kde.StatusNotifierWatcher;
without a watcher this stays silent and registers when one appears.

Imported on the session-bus thread only (dbus-fast is imported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Annotated, Any

from dbus_fast import Variant
from dbus_fast.annotations import (
    DBusBool,
    DBusInt32,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
)
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from privacycam.control.dbus_session import call, error_text, is_error, name_owner_change, watch_name
from privacycam.sinks.reader_watch import holder_pids

log = logging.getLogger(__name__)

WATCHER_NAME = "org.kde.StatusNotifierWatcher"
WATCHER_PATH = "/StatusNotifierWatcher"
ITEM_PATH = "/StatusNotifierItem"
MENU_PATH = "/MenuBar"
STATUS_POLL_S = 1.0
READER_RESCAN_POLLS = 5
MENU_TOGGLE, MENU_QUIT = 1, 2

ToolTip = Annotated[list, DBusSignature("(sa(iiay)ss)")]
Pixmaps = Annotated[list, DBusSignature("a(iiay)")]
Layout = Annotated[list, DBusSignature("u(ia{sv}av)")]
GroupProperties = Annotated[list, DBusSignature("a(ia{sv})")]
Properties = Annotated[dict, DBusSignature("a{sv}")]
StringList = Annotated[list, DBusSignature("as")]
IntList = Annotated[list, DBusSignature("ai")]
AnyVariant = Annotated[Any, DBusSignature("v")]


def reader_names(device: str | None, exclude_pid: int) -> list[str]:
    """Names (comm) of the processes that hold `device` open, sorted."""
    if not device:
        return []
    names = set()
    for pid in holder_pids(device, exclude_pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as comm:
            names.add(f"{comm.read().strip()} ({pid})")
    return sorted(names)


def tray_look(status: dict, readers: list[str]) -> tuple[str, str, str]:
    """(icon name, tooltip title, tooltip body) for a daemon status."""
    on = bool(status.get("privacy"))
    icon = "security-high" if on else "camera-web"
    title = "PrivacyCam: privacy on" if on else "PrivacyCam: privacy OFF"
    camera = "camera live" if status.get("camera_open") else "camera off"
    watching = (
        f"watched by {', '.join(readers)}"
        if readers
        else ("someone is watching" if status.get("consumer_watching") else "nobody is watching")
    )
    return icon, title, f"{camera}; {watching}"


class StatusNotifierItem(ServiceInterface):
    def __init__(self, on_activate: Callable[[], None]) -> None:
        super().__init__("org.kde.StatusNotifierItem")
        self._on_activate = on_activate
        self.icon, self.title, self.body = "camera-web", "PrivacyCam", ""

    @dbus_property(access=PropertyAccess.READ)
    def Category(self) -> DBusStr:  # noqa: N802 - D-Bus names
        return "Hardware"

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> DBusStr:  # noqa: N802
        return "privacycam"

    @dbus_property(access=PropertyAccess.READ)
    def Title(self) -> DBusStr:  # noqa: N802
        return "PrivacyCam"

    @dbus_property(access=PropertyAccess.READ)
    def Status(self) -> DBusStr:  # noqa: N802
        return "Active"

    @dbus_property(access=PropertyAccess.READ)
    def IconName(self) -> DBusStr:  # noqa: N802
        return self.icon

    @dbus_property(access=PropertyAccess.READ)
    def IconPixmap(self) -> Pixmaps:  # noqa: N802
        return []

    @dbus_property(access=PropertyAccess.READ)
    def ToolTip(self) -> ToolTip:  # noqa: N802
        return [self.icon, [], self.title, self.body]

    @dbus_property(access=PropertyAccess.READ)
    def ItemIsMenu(self) -> DBusBool:  # noqa: N802
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Menu(self) -> DBusObjectPath:  # noqa: N802
        return MENU_PATH

    @dbus_method()
    def Activate(self, x: DBusInt32, y: DBusInt32):  # noqa: N802
        self._on_activate()

    @dbus_method()
    def SecondaryActivate(self, x: DBusInt32, y: DBusInt32):  # noqa: N802
        return None

    @dbus_method()
    def ContextMenu(self, x: DBusInt32, y: DBusInt32):  # noqa: N802
        return None

    @dbus_method()
    def Scroll(self, delta: DBusInt32, orientation: DBusStr):  # noqa: N802
        return None

    @dbus_signal()
    def NewIcon(self):  # noqa: N802
        return None

    @dbus_signal()
    def NewToolTip(self):  # noqa: N802
        return None

    @dbus_signal()
    def NewTitle(self):  # noqa: N802
        return None


class DBusMenu(ServiceInterface):
    """The item's menu: a privacy checkbox and Quit."""

    def __init__(self, on_toggle: Callable[[], None], on_quit: Callable[[], None]) -> None:
        super().__init__("com.canonical.dbusmenu")
        self._on_toggle = on_toggle
        self._on_quit = on_quit
        self.privacy_on = True
        self.revision = 1

    def _items(self) -> dict[int, dict[str, Variant]]:
        return {
            MENU_TOGGLE: {
                "label": Variant("s", "Privacy (blurred background)"),
                "toggle-type": Variant("s", "checkmark"),
                "toggle-state": Variant("i", 1 if self.privacy_on else 0),
            },
            MENU_QUIT: {"label": Variant("s", "Quit PrivacyCam")},
        }

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> DBusUInt32:  # noqa: N802
        return 3

    @dbus_property(access=PropertyAccess.READ)
    def TextDirection(self) -> DBusStr:  # noqa: N802
        return "ltr"

    @dbus_property(access=PropertyAccess.READ)
    def Status(self) -> DBusStr:  # noqa: N802
        return "normal"

    @dbus_property(access=PropertyAccess.READ)
    def IconThemePath(self) -> StringList:  # noqa: N802
        return []

    @dbus_method()
    def GetLayout(self, parent_id: DBusInt32, depth: DBusInt32, names: StringList) -> Layout:  # noqa: N802
        children = [Variant("(ia{sv}av)", [i, props, []]) for i, props in self._items().items()]
        if parent_id in self._items():
            return [self.revision, [parent_id, self._items()[parent_id], []]]
        return [self.revision, [0, {"children-display": Variant("s", "submenu")}, children]]

    @dbus_method()
    def GetGroupProperties(self, ids: IntList, names: StringList) -> GroupProperties:  # noqa: N802
        items = self._items()
        return [[i, items[i]] for i in (ids or list(items)) if i in items]

    @dbus_method()
    def GetProperty(self, item_id: DBusInt32, name: DBusStr) -> AnyVariant:  # noqa: N802
        return self._items().get(item_id, {}).get(name, Variant("s", ""))

    @dbus_method()
    def Event(self, item_id: DBusInt32, event_id: DBusStr, data: AnyVariant, timestamp: DBusUInt32):  # noqa: N802
        if event_id != "clicked":
            return
        if item_id == MENU_TOGGLE:
            self._on_toggle()
        elif item_id == MENU_QUIT:
            self._on_quit()

    @dbus_method()
    def AboutToShow(self, item_id: DBusInt32) -> DBusBool:  # noqa: N802
        return False

    @dbus_signal()
    def LayoutUpdated(self) -> Annotated[list, DBusSignature("ui")]:  # noqa: N802
        return [self.revision, 0]


class Tray:
    """The DesktopService: exports the item and keeps it registered and up to date."""

    def __init__(
        self,
        status: Callable[[], dict],
        device: Callable[[], str | None],
        on_toggle: Callable[[], None],
        on_quit: Callable[[], None],
    ) -> None:
        self._status = status
        self._device = device
        self.item = StatusNotifierItem(on_toggle)
        self.menu = DBusMenu(on_toggle, on_quit)
        self._bus = None
        self._name = f"org.kde.StatusNotifierItem-{os.getpid()}-1"
        self._poll: asyncio.Task | None = None
        self._look: tuple | None = None
        self._readers: list[str] = []
        self._watching = False
        self._polls = 0

    async def start(self, bus) -> None:
        self._bus = bus
        bus.export(ITEM_PATH, self.item)
        bus.export(MENU_PATH, self.menu)
        await bus.request_name(self._name)
        bus.add_message_handler(self._on_message)
        await watch_name(bus, WATCHER_NAME)
        self.refresh()
        await self._register()
        self._poll = asyncio.ensure_future(self._follow_status())

    def bus_unavailable(self, reason: str) -> None:
        log.debug("tray icon off: %s", reason)

    async def privacy_changed(self, on: bool, cause: str) -> None:
        self.refresh()

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()

    async def _register(self) -> None:
        reply = await call(
            self._bus, WATCHER_NAME, WATCHER_PATH, WATCHER_NAME, "RegisterStatusNotifierItem", "s", [self._name]
        )
        if is_error(reply):
            log.debug("no tray host yet (%s); the tray icon appears when one starts", error_text(reply))
        else:
            log.info("tray icon registered with the desktop (%s)", self._name)

    def _on_message(self, message) -> None:
        owner = name_owner_change(message, WATCHER_NAME)
        if owner:
            asyncio.ensure_future(self._register())

    async def _follow_status(self) -> None:
        # The camera and its readers change without a privacy change: look once a second.
        while True:
            await asyncio.sleep(STATUS_POLL_S)
            self.refresh()

    def refresh(self) -> None:
        """Update icon, tooltip and menu from the daemon's status; signal only what changed."""
        status = self._status()
        watching = bool(status.get("consumer_watching"))
        self._polls += 1
        # /proc is scanned when watching starts, and now and then while it lasts (a second app may join).
        if watching != self._watching or (watching and self._polls % READER_RESCAN_POLLS == 0):
            self._watching = watching
            self._readers = reader_names(self._device(), os.getpid()) if watching else []
        icon, title, body = look = tray_look(status, self._readers)
        if look == self._look:
            return
        old, self._look = self._look, look
        self.item.icon, self.item.title, self.item.body = icon, title, body
        if old is None or old[0] != icon:
            self.item.NewIcon()
        self.item.NewToolTip()
        on = bool(status.get("privacy"))
        if on != self.menu.privacy_on:
            self.menu.privacy_on = on
            self.menu.revision += 1
            self.menu.LayoutUpdated()
