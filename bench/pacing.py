"""Why paced runs cost more CPU per frame than unpaced ones: the same work, timed three ways.

    .venv/bin/python bench/pacing.py [--width 1280 --height 720] [--frames 120] [--fps 30]

Decodes the benchmark's real-footage MJPEG clip (to I420, as the pipeline does)
frame by frame, each frame's decode timed on the thread's own CPU clock:

- back-to-back: the next frame at once (as `privacycam bench` unpaced);
- sleep: the next frame at its 1/fps slot, the thread asleep in between (a camera);
- spin: the same slots, the thread busy-waiting in between (the core never idles).

If sleep costs more than back-to-back while spin does not, the extra is the
idle gap itself (caches refilled, the core clocked down, the thread woken on
another core), not more work. Run it under `valgrind --tool=callgrind` with
`--instr-atstart=no` and the same --frames per mode to check that the
instruction count is the same in every mode (it is repeatable under load).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from privacycam.bench import real_footage_clip  # noqa: E402
from privacycam.sources.mjpeg import MjpegFileSource  # noqa: E402

MODES = ("back-to-back", "sleep", "spin")


def run_mode(mode: str, clip: Path, frames: int, fps: float) -> dict:
    source = MjpegFileSource(clip, fps, loop=True)
    for _ in range(10):  # warm-up: decoder tables, page cache
        source.read()
    cpu_ms: list[float] = []
    usage0 = resource.getrusage(resource.RUSAGE_THREAD)
    next_due = time.perf_counter()
    for _ in range(frames):
        if mode != "back-to-back":
            next_due += 1.0 / fps
            if mode == "sleep":
                time.sleep(max(0.0, next_due - time.perf_counter()))
            else:
                while time.perf_counter() < next_due:
                    pass
        started = time.thread_time_ns()
        source.read()
        cpu_ms.append((time.thread_time_ns() - started) / 1e6)
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    source.close()
    return {
        "decode_cpu_ms_median": round(statistics.median(cpu_ms), 3),
        "decode_cpu_ms_mean": round(statistics.fmean(cpu_ms), 3),
        "voluntary_switches_per_frame": round((usage.ru_nvcsw - usage0.ru_nvcsw) / frames, 2),
        "involuntary_switches_per_frame": round((usage.ru_nivcsw - usage0.ru_nivcsw) / frames, 2),
        "minor_faults_per_frame": round((usage.ru_minflt - usage0.ru_minflt) / frames, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3, help="modes alternate, round after round")
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    clip = real_footage_clip(args.width, args.height)
    modes = args.modes.split(",")
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            results[mode].append(run_mode(mode, clip, args.frames, args.fps))
    summary = {
        mode: {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
        for mode, runs in results.items()
    }
    print(json.dumps({"width": args.width, "height": args.height, "frames": args.frames, "modes": summary}, indent=1))


if __name__ == "__main__":
    main()
