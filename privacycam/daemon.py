"""`privacycam run`: build source, sink and pipeline from config and CLI, then serve.

Owns process-level concerns: signals, the control socket, the hotkey and the
on-demand camera. The per-frame logic lives in `privacycam.pipeline`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from privacycam.config import Config, SegmenterConfig, changes_for_next_start, load_config
from privacycam.control.desktop import DesktopIntegration, ObservedPrivacyState
from privacycam.control.sd_notify import notify_ready_when
from privacycam.control.socket_server import ControlServer, default_socket_path
from privacycam.errors import ConfigError, SourceError
from privacycam.pipeline import Pipeline, PrivacyState
from privacycam.segmenters import Segmenter, create_segmenter
from privacycam.sinks import open_sink, publishable_size, sink_is_live
from privacycam.sources import LatestFrameFeed, SequentialFeed, is_camera, open_source
from privacycam.sources.camera import device_path
from privacycam.sources.video_file import VideoFileSource

log = logging.getLogger(__name__)

# After a stop is requested, how long the frame loop may take to end before the
# daemon leaves the placeholder on the device and exits without it (a stuck model
# must not hold up systemd's stop, which kills at 10 s).
STOP_BOUND_S = 3.0


def run_command(args: argparse.Namespace) -> int:
    config, config_path = load_config(args.config)
    if args.privacy:
        config = config.with_overrides(privacy={"start": args.privacy == "on"})
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else config.log_level.upper())
    input_spec = args.input if args.input is not None else config.camera.device
    output_spec = args.output or "vcam"
    daemon = Daemon(config, config_path, input_spec, output_spec)
    return daemon.serve(args.frames)


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        input_spec: int | str,
        output_spec: str,
        segmenter_factory: Callable[[SegmenterConfig], Segmenter] = create_segmenter,
    ) -> None:
        self.config = config
        self._segmenter_factory = segmenter_factory
        self._config_at_start = config  # what the camera, output, socket and hotkey were opened with
        self._desktop: DesktopIntegration | None = None  # live runs: hotkey, notifications, tray
        self.config_path = config_path
        self.input_spec = input_spec
        self.output_spec = output_spec
        self.privacy: PrivacyState = ObservedPrivacyState(config.privacy.start)  # tells the desktop services
        self.pipeline: Pipeline | None = None
        self._stop_requested = False
        # Before the socket exists: a SIGTERM during start-up still ends in a clean stop.
        self._previous_handlers = self._install_signal_handlers()
        try:
            # First, so a second daemon stops here before it touches camera or virtual device.
            self.control = ControlServer(config.control.socket or default_socket_path(), self.handle_command)
            try:
                self._open_stages()
            except BaseException:
                self.control.close()
                raise
        except BaseException:
            self._restore_signal_handlers()
            raise
        if self._stop_requested:
            self.pipeline.stop()
        log.info(
            "%s -> %s at %dx%d %.0f fps, privacy %s",
            self.input_spec,
            self.sink.description,
            *self.size,
            self.fps,
            "on" if self.privacy.on else "off",
        )

    def _open_stages(self) -> None:
        config, input_spec, output_spec = self.config, self.input_spec, self.output_spec
        live_sink = sink_is_live(output_spec)
        # The camera (and its LED) runs only while an app reads the virtual camera.
        self._on_demand = config.camera.on_demand and is_camera(input_spec) and output_spec.startswith("vcam")
        self.feed, size, fps, self.live = self._open_feed(input_spec, live_sink)
        out = config.output
        self.size = (out.width or size[0], out.height or size[1])
        if output_spec.startswith("vcam") and publishable_size(*self.size) != self.size:
            self.size = publishable_size(*self.size)
            log.info("the virtual camera needs even sizes (I420): publishing %dx%d", *self.size)
        self.fps = out.fps or fps
        try:
            self.sink = open_sink(output_spec, *self.size, self.fps, out)
        except BaseException:
            self.feed.close()
            raise
        try:
            self.pipeline = Pipeline(
                config,
                self.feed,
                self.sink,
                self.size,
                self.privacy,
                segmenter_factory=self._segmenter_factory,
                live=self.live,
                on_demand=self._on_demand,
            )
        except BaseException:
            self.sink.close()
            self.feed.close()
            raise

    def _open_feed(self, spec: int | str, live_sink: bool):
        camera = self.config.camera
        if is_camera(spec):
            path = device_path(spec)
            if not Path(path).exists():
                raise SourceError(
                    f"camera {path} does not exist",
                    "plug the camera in, or set camera.device / --input (`privacycam doctor` lists cameras)",
                )
            feed = LatestFrameFeed(lambda: open_source(spec, camera), start_paused=self._on_demand)
            return feed, (camera.width, camera.height), camera.fps, True
        source = open_source(spec, camera)
        if live_sink or source.live:
            # Played as if it were a camera: at its own rate, looping, newest frame wins.
            if isinstance(source, VideoFileSource):
                source.loop = camera.loop
            feed = LatestFrameFeed(lambda: open_source(spec, camera), pace_fps=source.fps, first_source=source)
            return feed, source.size, source.fps, True
        return SequentialFeed(source), source.size, source.fps, False

    # -- control actions (called from signal handlers, socket, hotkey) ---------------
    def reload(self, cause: str) -> str:
        try:
            config, _ = load_config(self.config_path)
            if config.background.mode == "image":
                from privacycam.compositing import load_background_image

                load_background_image(config.background.image)
        except ConfigError as exc:
            log.error("config reload (%s) rejected, keeping the running one: %s", cause, exc.message)
            if self.pipeline is not None:
                self.pipeline.status.reloads_rejected += 1
            return exc.message
        later = changes_for_next_start(self._config_at_start, config)
        self.config = config
        if self.pipeline is not None:
            self.pipeline.request_reload(config)
        if not later:
            return "reloaded"
        message = f"reloaded; {', '.join(later)} {'takes' if len(later) == 1 else 'take'} effect at the next start"
        log.warning("config reload (%s): %s (systemctl --user restart privacycam)", cause, message)
        return message

    def stop(self, cause: str) -> None:
        log.info("stopping (%s)", cause)
        self._stop_requested = True
        if self.pipeline is not None:
            self.pipeline.stop()

    def status(self) -> dict:
        pipeline = self.pipeline
        if pipeline is None:
            return {"privacy": self.privacy.on, "starting": True}
        return {
            "privacy": self.privacy.on,
            "source": str(self.input_spec),
            "sink": self.sink.description,
            "width": self.size[0],
            "height": self.size[1],
            "fps": round(pipeline.status.fps, 1),
            "target_fps": self.fps,
            "latency_ms": round(pipeline.status.latency_ms, 1),
            "segmenter": pipeline.status.segmenter,
            "consumer_watching": bool(self.sink.consumer_watching),
            "device_timeout_image": bool(getattr(self.sink, "timeout_image_active", False)),
            "hotkey": self._desktop.hotkey_state if self._desktop is not None else "off",
            "camera_open": bool(self.feed.source_open),
            "frames_out": pipeline.status.frames_out,
            "fail_closed_frames": pipeline.status.fail_closed_frames,
            "dropped_frames": self.feed.dropped,
            "last_error": pipeline.status.last_error or self.feed.error,
            "reloads_applied": pipeline.status.reloads_applied,
            "reloads_rejected": pipeline.status.reloads_rejected,
        }

    def handle_command(self, command: str) -> dict:
        """Control-socket requests."""
        if command == "toggle":
            self.privacy.toggle("control socket")
        elif command in ("on", "off"):
            self.privacy.set(command == "on", "control socket")
        elif command == "reload":
            return {"reload": self.reload("control socket"), **self.status()}
        if command in ("toggle", "on") and not self.private_at_device("control socket"):
            return {**self.status(), "ok": False, "error": self._not_private_message()}
        return self.status()

    def private_at_device(self, cause: str) -> bool:
        """After privacy came on: wait until a filtered frame (or the placeholder) is on the device."""
        if self.pipeline is None or not self.privacy.on:
            return True
        if self.pipeline.gate.wait_private():
            return True
        log.error("privacy on (%s), but %s", cause, self._not_private_message())
        return False

    def _not_private_message(self) -> str:
        return (
            f"no filtered frame could be written to {self.sink.description} "
            "(the output is stuck); stop PrivacyCam or close the meeting app"
        )

    def _toggle_in_background(self, cause: str) -> None:
        """Hotkey and SIGUSR1: toggle now, confirm at the device off the caller's thread."""
        if self.privacy.toggle(cause):
            threading.Thread(target=self.private_at_device, args=(cause,), daemon=True).start()

    def serve(self, max_frames: int | None = None) -> int:
        # Desktop integration: the hotkey (portal or X11), notifications, the tray icon.
        # Not for a file run: it ends on its own, with no key to toggle and no line about one.
        desktop = None
        if self.live:
            desktop = DesktopIntegration(
                self.config.privacy,
                self.privacy,
                status=self.status,
                device=lambda: getattr(self.sink, "device", None),
                toggle=self._toggle_in_background,
                on_quit=lambda: self.stop("tray menu"),
            )
            self._desktop = desktop
            desktop.start()
        notify_ready_when(lambda: self.pipeline.status.first_output_at is not None, lambda: self._stop_requested)
        try:
            finished = self._run_loop(max_frames)
        finally:
            self._restore_signal_handlers()
            if desktop is not None:
                desktop.stop()
            self.control.close()
        if not finished:
            log.error(
                "a stage did not stop within %.0f s of the stop request (a stuck model or camera); "
                "the placeholder is on the device, exiting without waiting for it",
                STOP_BOUND_S,
            )
            logging.shutdown()
            os._exit(0)  # the stuck thread cannot be joined, and interpreter exit would join it
        frames = self.pipeline.status.frames_out
        log.info("stopped after %d %s", frames, "frame" if frames == 1 else "frames")
        return 0

    def _run_loop(self, max_frames: int | None) -> bool:
        """The frame loop on its own thread, so that this (main) thread stays free for signals.

        A stage stuck in native code would otherwise keep Python's signal handlers
        from running at all. Returns False when a stop was requested and the loop
        did not end within STOP_BOUND_S (the pipeline is then abandoned).
        """
        errors: list[BaseException] = []

        def loop() -> None:
            try:
                self.pipeline.run(max_frames)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread below
                errors.append(exc)

        thread = threading.Thread(target=loop, name="privacycam-loop", daemon=True)
        thread.start()
        stop_seen_at = None
        while thread.is_alive():
            thread.join(0.2)
            if self._stop_requested and stop_seen_at is None:
                stop_seen_at = time.monotonic()
            if stop_seen_at is not None and time.monotonic() - stop_seen_at > STOP_BOUND_S and thread.is_alive():
                self.pipeline.abandon()
                return False
        if errors:
            raise errors[0]
        return True

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        handlers = {
            signal.SIGTERM: lambda *_: self.stop("SIGTERM"),
            signal.SIGINT: lambda *_: self.stop("SIGINT"),
            signal.SIGUSR1: lambda *_: self._toggle_in_background("signal SIGUSR1"),
            # Reloading reads files: do it off the signal handler's stack.
            signal.SIGHUP: lambda *_: threading.Thread(target=self.reload, args=("SIGHUP",), daemon=True).start(),
        }
        return {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
