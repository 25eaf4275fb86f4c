"""Whether an X server is reachable: for the preview window and the hotkey, which both need one."""

from __future__ import annotations

import os


def x_display_problem() -> str | None:
    """Why no X client can work here (no DISPLAY, or none that answers), or None.

    Probed by connecting once with python-xlib (which pynput brings on Linux),
    because the clients themselves fail badly: OpenCV's wheel draws windows with
    Qt's xcb plugin only, and Qt aborts the whole process (no exception) when
    it cannot reach an X server; pynput raises a paragraph that blames the platform.
    """
    name = os.environ.get("DISPLAY")
    if not name:
        wayland = " (Wayland without XWayland)" if os.environ.get("WAYLAND_DISPLAY") else ""
        return f"there is no X display{wayland}: DISPLAY is not set"
    try:
        from Xlib.display import Display

        Display(name).close()
    except Exception as exc:  # noqa: BLE001 - python-xlib raises several kinds for an unreachable display
        return f"X display {name} cannot be reached ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return None
