"""The desktop session bus: one connection, on its own thread, for the portal hotkey, notifications and the tray.

dbus-fast (asyncio) rather than jeepney: both install from wheels with no
dependencies, but only dbus-fast exports objects (the tray's
StatusNotifierItem and its menu need methods, properties and signals served
to the desktop), and it costs less CPU per message (measured on a private
dbus-daemon, 2000 GetNameOwner round trips: 28-95 us of CPU per call against
86-194 us for jeepney). Its price is ~60 ms of import and ~13 MB of memory,
paid on this thread, never before the first frame.

The bus can be missing (no desktop session, a systemd unit without one) or die
at any time: nothing here may block the daemon's start or its shutdown, so the
connection lives on a daemon thread and `stop()` waits for it a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

# The reverse-DNS id the portal and the notification server know PrivacyCam by;
# it names the systemd unit (app-<APP_ID>.service) and the desktop entry.
APP_ID = "io.github.privacycam.PrivacyCam"
CONNECT_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 2.0

DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"


class DesktopService(Protocol):
    async def start(self, bus) -> None: ...

    def bus_unavailable(self, reason: str) -> None: ...

    async def privacy_changed(self, on: bool, cause: str) -> None: ...

    async def close(self) -> None: ...


async def call(bus, destination: str, path: str, interface: str, member: str, signature: str = "", body=()):
    """One method call; returns the reply Message (check `message_type` for an error)."""
    from dbus_fast import Message

    return await bus.call(
        Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=list(body),
        )
    )


def is_error(reply) -> bool:
    from dbus_fast import MessageType

    return reply is None or reply.message_type == MessageType.ERROR


def error_text(reply) -> str:
    if reply is None:
        return "no reply"
    detail = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
    return f"{reply.error_name}: {detail}" if detail else str(reply.error_name)


async def add_match(bus, rule: str) -> None:
    await call(bus, DBUS_NAME, DBUS_PATH, DBUS_NAME, "AddMatch", "s", [rule])


async def watch_name(bus, name: str) -> None:
    """Deliver NameOwnerChanged for `name` to the bus's message handlers."""
    await add_match(
        bus, f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',member='NameOwnerChanged',arg0='{name}'"
    )


def name_owner_change(message, name: str) -> str | None:
    """The new owner ('' when the name went away) if `message` is NameOwnerChanged for `name`, else None."""
    if message.member != "NameOwnerChanged" or message.interface != DBUS_NAME or message.sender != DBUS_NAME:
        return None
    if not message.body or message.body[0] != name:
        return None
    return message.body[2]


class SessionBusThread:
    """Connects to the session bus on a daemon thread and runs the desktop services there."""

    def __init__(self, build_services: Callable[[], list[DesktopService]], address: str | None = None) -> None:
        self._build_services = build_services  # called on the thread: their imports cost the thread, not start-up
        self._services: list[DesktopService] = []
        self._address = address
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="session-bus", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def privacy_changed(self, on: bool, cause: str) -> None:
        """Thread-safe and non-blocking (also called from signal handlers)."""
        loop = self._loop
        if loop is None or self._stopping:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._dispatch, on, cause)

    def stop(self) -> None:
        self._stopping = True
        loop, main = self._loop, self._main
        if loop is not None and main is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(main.cancel)
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                log.debug("the session bus thread did not end within %.0f s; leaving it", STOP_TIMEOUT_S)

    def _dispatch(self, on: bool, cause: str) -> None:
        for service in self._services:
            asyncio.ensure_future(self._guarded(service.privacy_changed(on, cause), service))

    async def _guarded(self, coroutine, service) -> None:
        try:
            await coroutine
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a desktop service must never take the daemon down
            log.debug("%s: %s", type(service).__name__, exc, exc_info=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        # A bus that dies leaves dbus-fast futures with an EOFError nobody awaits: not worth a traceback.
        loop.set_exception_handler(lambda _loop, context: log.debug("session bus: %s", context.get("message")))
        try:
            self._services = self._build_services()
            self._main = loop.create_task(self._serve())
            self._loop = loop
            if self._stopping:
                self._main.cancel()
            loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001
            log.info("desktop integration stopped: %s", exc)
        finally:
            self._loop = None
            loop.close()

    async def _serve(self) -> None:
        try:
            from dbus_fast.aio import MessageBus
        except ImportError as exc:
            self._unavailable(f"the dbus-fast package is missing ({exc}; pip install dbus-fast)")
            return
        try:
            bus = await asyncio.wait_for(MessageBus(bus_address=self._address).connect(), CONNECT_TIMEOUT_S)
        except asyncio.TimeoutError:
            self._unavailable(f"the session bus did not answer within {CONNECT_TIMEOUT_S:.0f} s")
            return
        except Exception as exc:  # noqa: BLE001 - no bus, refused, bad address: all mean "no desktop"
            self._unavailable(f"no D-Bus session bus ({str(exc) or type(exc).__name__})")
            return
        try:
            for service in self._services:
                await self._guarded(service.start(bus), service)
            await bus.wait_for_disconnect()
            if not self._stopping:
                log.info("the D-Bus session bus went away: the portal hotkey, notifications and tray are off")
        finally:
            for service in self._services:
                with contextlib.suppress(Exception, asyncio.CancelledError):  # best effort on the way out
                    await asyncio.wait_for(service.close(), 0.5)
            bus.disconnect()

    def _unavailable(self, reason: str) -> None:
        for service in self._services:
            service.bus_unavailable(reason)
