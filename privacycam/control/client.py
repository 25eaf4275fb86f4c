"""`privacycam toggle | on | off | status`: talk to the running daemon."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from privacycam.config import load_config
from privacycam.control.socket_server import (
    MAX_REQUEST_BYTES,
    default_socket_path,
    folder_problem,
    peer_uid,
    socket_path_problem,
)
from privacycam.errors import PrivacyCamError

# Long enough for `on` to be confirmed at the device (see PublishGate.wait_private).
TIMEOUT_S = 10.0


def socket_path_for(config_file: str | None) -> Path:
    config, _ = load_config(config_file)
    return config.control.socket or default_socket_path()


def send_command(path: Path, command: str) -> dict:
    """Send one request; only to a socket in a folder of ours, served by a process of ours."""
    problem = socket_path_problem(path) or folder_problem(path.parent)
    if problem:
        raise PrivacyCamError(f"{problem}; not talking to a daemon there", "set PRIVACYCAM_SOCKET to a path you own")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT_S)
    try:
        _connect(sock, path)
        if (server_uid := peer_uid(sock)) != os.getuid():
            raise PrivacyCamError(
                f"the control socket {path} is served by another user (uid {server_uid}), not by your daemon",
                "stop that process, or set PRIVACYCAM_SOCKET to a path you own",
            )
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(MAX_REQUEST_BYTES * 4)
            if not chunk:
                break
            data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        raise PrivacyCamError(
            f"no PrivacyCam daemon is running (no answer on {path})",
            "start it with `privacycam run` or `systemctl --user start privacycam`",
        ) from None
    except OSError as exc:
        raise PrivacyCamError(f"control socket {path} failed: {exc}", "check that the daemon is healthy") from None
    finally:
        sock.close()
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        raise PrivacyCamError(f"the daemon sent an unreadable answer on {path}", "restart the daemon") from None


def _connect(sock: socket.socket, path: Path) -> None:
    """connect(), waiting while the daemon's queue of new connections is full.

    With a timeout set, a Unix socket's connect() fails with EAGAIN at once when
    the listen backlog is full (a burst of other clients) instead of waiting.
    """
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            sock.connect(str(path))
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError("the daemon accepts no connections") from None
            time.sleep(0.01)


def control_command(args: argparse.Namespace) -> int:
    as_json = args.command == "status" and getattr(args, "json", False)
    try:
        answer = send_command(socket_path_for(args.config), args.command)
    except PrivacyCamError as exc:
        if not as_json:
            raise
        # Whoever reads `status --json` parses stdout: the problem is a JSON object too.
        print(json.dumps({"ok": False, "error": exc.message}))
        return exc.exit_code
    if as_json:
        print(json.dumps(answer, indent=None))
        return 0 if answer.get("ok") else 1
    if not answer.get("ok"):
        print(f"privacycam: error: {answer.get('error', 'request failed')}", file=sys.stderr)
        return 1
    if args.command == "status":
        for key, value in answer.items():
            if key != "ok":
                print(f"{key:18s} {value}")
    else:
        print(f"privacy {'on' if answer['privacy'] else 'off'}")
    return 0
