"""A fake xdg-desktop-portal with GlobalShortcuts, for tests: `python fake_portal.py [--require-app-id|--refuse]`.

It follows the xdg-desktop-portal frontend (1.18-1.20 sources) as KDE Plasma's
and GNOME 48's backends drive it: Request::Response signals come after the
method reply, on request/<sender>/<handle_token>; CreateSession answers a
`session_handle` string; BindShortcuts answers the bound shortcuts with a
`trigger_description`, at once (as KDE does for a free preferred trigger; GNOME
asks in a dialog first, which a test cannot click); an unsandboxed caller
without an app id gets org.freedesktop.portal.Error.NotAllowed "An app id is
required" (xdg-desktop-portal >= 1.21, or any version whose host app info has
no id), unless it called org.freedesktop.host.portal.Registry.Register first.

The test drives it on the same bus through org.privacycam.test.FakePortal at
/test: Press(id) emits Activated and Deactivated to the session that bound
`id`; Calls() returns a JSON list of [member, sender, app id] for every portal
call (BindShortcuts adds the preferred triggers). It prints "ready" once it owns its name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

PORTAL = "org.freedesktop.portal.Desktop"
PATH = "/org/freedesktop/portal/desktop"
SHORTCUTS = "org.freedesktop.portal.GlobalShortcuts"
REGISTRY = "org.freedesktop.host.portal.Registry"
REQUEST = "org.freedesktop.portal.Request"
TEST_IFACE = "org.privacycam.test.FakePortal"


class FakePortal:
    def __init__(self, bus: MessageBus, mode: str) -> None:
        self.bus = bus
        self.mode = mode
        self.app_ids: dict[str, str] = {}
        self.calls: list[list[str]] = []
        self.sessions: dict[str, tuple[str, list[str]]] = {}  # session path -> (owner, shortcut ids)
        self.pending: list[Message] = []

    def request_path(self, sender: str, options: dict) -> str:
        token = options["handle_token"].value
        return f"{PATH}/request/{sender.lstrip(':').replace('.', '_')}/{token}"

    def handle(self, msg: Message):
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        if msg.path == "/test" and msg.interface == TEST_IFACE:
            return self.handle_test(msg)
        if msg.path == PATH and msg.interface == "org.freedesktop.DBus.Properties" and msg.member == "Get":
            if list(msg.body) == [SHORTCUTS, "version"]:
                return Message.new_method_return(msg, "v", [Variant("u", 1)])
            return Message.new_error(msg, "org.freedesktop.DBus.Error.InvalidArgs", "no such property")
        if msg.path != PATH or msg.interface not in (SHORTCUTS, REGISTRY):
            return None
        call = [msg.member, msg.sender, self.app_ids.get(msg.sender, "")]
        if msg.member == "BindShortcuts":
            call += [info["preferred_trigger"].value for _id, info in msg.body[1] if "preferred_trigger" in info]
        self.calls.append(call)
        if msg.interface == REGISTRY and msg.member == "Register":
            self.app_ids[msg.sender] = msg.body[0]
            return Message.new_method_return(msg)
        if msg.member == "CreateSession":
            if self.mode == "refuse" or (self.mode == "require-app-id" and not self.app_ids.get(msg.sender)):
                return Message.new_error(msg, "org.freedesktop.portal.Error.NotAllowed", "An app id is required")
            options = msg.body[0]
            handle = self.request_path(msg.sender, options)
            token = options["session_handle_token"].value
            session = f"{PATH}/session/{msg.sender.lstrip(':').replace('.', '_')}/{token}"
            self.sessions[session] = (msg.sender, [])
            self.respond_later(msg.sender, handle, {"session_handle": Variant("s", session)})
            return Message.new_method_return(msg, "o", [handle])
        if msg.member == "BindShortcuts":
            session, shortcuts, _parent, options = msg.body
            if session not in self.sessions or self.sessions[session][0] != msg.sender:
                return Message.new_error(msg, "org.freedesktop.DBus.Error.AccessDenied", "Invalid session")
            handle = self.request_path(msg.sender, options)
            bound = []
            for shortcut_id, info in shortcuts:
                trigger = info["preferred_trigger"].value if "preferred_trigger" in info else ""
                bound.append(
                    [
                        shortcut_id,
                        {
                            "description": info["description"],
                            "trigger_description": Variant("s", f"Press {trigger}"),
                        },
                    ]
                )
            self.sessions[session] = (msg.sender, [s[0] for s in shortcuts])
            self.respond_later(msg.sender, handle, {"shortcuts": Variant("a(sa{sv})", bound)})
            return Message.new_method_return(msg, "o", [handle])
        return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", f"no method {msg.member}")

    def respond_later(self, destination: str, handle: str, results: dict) -> None:
        # After the method reply, like the real portal (the backend answers asynchronously).
        signal = Message.new_signal(handle, REQUEST, "Response", "ua{sv}", [0, results])
        signal.destination = destination
        asyncio.get_running_loop().call_soon(self.bus.send, signal)

    def handle_test(self, msg: Message):
        if msg.member == "Calls":
            return Message.new_method_return(msg, "s", [json.dumps(self.calls)])
        if msg.member == "Press":
            shortcut_id = msg.body[0]
            sent = 0
            for session, (owner, ids) in self.sessions.items():
                if shortcut_id in ids:
                    stamp = int(time.monotonic() * 1000)
                    for member in ("Activated", "Deactivated"):
                        signal = Message.new_signal(
                            PATH, SHORTCUTS, member, "osta{sv}", [session, shortcut_id, stamp, {}]
                        )
                        signal.destination = owner
                        self.bus.send(signal)
                    sent += 1
            return Message.new_method_return(msg, "u", [sent])
        return None


async def main(mode: str) -> None:
    # Started by D-Bus activation, the bus address comes as DBUS_STARTER_ADDRESS.
    bus = await MessageBus(bus_address=os.environ.get("DBUS_STARTER_ADDRESS")).connect()
    portal = FakePortal(bus, mode)
    bus.add_message_handler(portal.handle)
    await bus.request_name(PORTAL)
    with contextlib.suppress(OSError):  # D-Bus activated: stdout may be closed
        print("ready", flush=True)
    await bus.wait_for_disconnect()


if __name__ == "__main__":
    mode = sys.argv[1].lstrip("-") if len(sys.argv) > 1 else "normal"
    with contextlib.suppress(EOFError, ConnectionError):  # the test's bus went away first
        asyncio.run(main(mode))
