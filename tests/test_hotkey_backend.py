"""Which hotkey backend runs, and the trigger the portal is asked for."""

from __future__ import annotations

import pytest

from privacycam.control.hotkey import choose_hotkey_backend
from privacycam.control.portal_hotkey import preferred_trigger, request_path


@pytest.mark.parametrize(
    ("configured", "env", "backend"),
    [
        ("auto", {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, "portal"),  # XWayland's DISPLAY is no X11 session
        ("auto", {"XDG_SESSION_TYPE": "wayland"}, "portal"),
        ("auto", {"DISPLAY": ":0", "XDG_SESSION_TYPE": "x11"}, "x11"),
        ("auto", {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus"}, "portal"),  # a systemd user service
        ("auto", {}, "none"),
        ("x11", {"WAYLAND_DISPLAY": "wayland-0"}, "x11"),
        ("portal", {"DISPLAY": ":0"}, "portal"),
        ("none", {"WAYLAND_DISPLAY": "wayland-0"}, "none"),
    ],
)
def test_backend_choice(configured, env, backend, tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path), **env}  # no $XDG_RUNTIME_DIR/bus there
    choice = choose_hotkey_backend(configured, "p", env)
    assert choice.name == backend
    assert choice.reason


def test_no_key_means_no_backend():
    assert choose_hotkey_backend("portal", None, {"WAYLAND_DISPLAY": "w"}).name == "none"


def test_the_session_bus_socket_counts_as_a_bus(tmp_path):
    (tmp_path / "bus").touch()
    assert choose_hotkey_backend("auto", "p", {"XDG_RUNTIME_DIR": str(tmp_path)}).name == "portal"


def test_preferred_trigger_uses_the_shortcuts_spec_names():
    assert preferred_trigger("p", ()) == "p"
    assert preferred_trigger("P", ("alt", "ctrl")) == "CTRL+ALT+p"
    assert preferred_trigger("b", ("cmd", "shift")) == "SHIFT+LOGO+b"


def test_request_path_is_the_portals():
    assert request_path(":1.42", "tok") == "/org/freedesktop/portal/desktop/request/1_42/tok"
