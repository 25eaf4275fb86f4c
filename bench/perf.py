"""Speed table for the closing note: `privacycam bench` at several sizes, median of several runs,
against the straightforward approach (bench/naive_reference.py). Prints one JSON object.

    .venv/bin/python bench/perf.py [--runs 3] [--frames 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.naive_reference import measure  # noqa: E402

CASES = [
    ("640x480 paced 30", 640, 480, 30),
    ("1280x720 paced 30", 1280, 720, 30),
    ("1920x1080 paced 30", 1920, 1080, 30),
    ("3840x2160 paced 30", 3840, 2160, 30),
    ("1280x720 unpaced", 1280, 720, None),
]


def bench_once(width: int, height: int, fps: float | None, frames: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "privacycam",
        "bench",
        "--width",
        str(width),
        "--height",
        str(height),
        "--frames",
        str(frames),
    ] + (["--fps", str(fps)] if fps else [])
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def median_of(runs: list[dict]) -> dict:
    def med(get):
        return round(statistics.median(get(r) for r in runs), 2)

    return {
        "fps": med(lambda r: r["fps"]),
        "cpu_ms_per_frame": med(lambda r: r["cpu_ms_per_frame"]),
        "latency_p50_ms": med(lambda r: r["latency_ms"]["p50"]),
        "latency_p95_ms": med(lambda r: r["latency_ms"]["p95"]),
        "dropped_frames": med(lambda r: r["dropped_frames"]),
        "dropped_share": med(lambda r: r["dropped_frames"] / max(1, r["frames"] + r["dropped_frames"])),
        "startup_ms": med(lambda r: r["startup_ms"]),
        "peak_rss_mb": med(lambda r: r["peak_rss_mb"]),
        "stage_ms": {k: med(lambda r, k=k: r["stage_ms"][k]) for k in runs[0]["stage_ms"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    table = {}
    for name, width, height, fps in CASES:
        print(f"perf: {name}", file=sys.stderr)
        table[name] = median_of([bench_once(width, height, fps, args.frames) for _ in range(args.runs)])
    naive = [measure(1280, 720, min(args.frames, 150)) for _ in range(args.runs)]
    naive_cpu = statistics.median(n["cpu_ms_per_frame"] for n in naive)
    ours = table["1280x720 unpaced"]["cpu_ms_per_frame"]
    table["naive 1280x720 unpaced"] = {"cpu_ms_per_frame": naive_cpu, "fps": statistics.median(n["fps"] for n in naive)}
    table["naive_over_privacycam_cpu_ratio"] = round(naive_cpu / ours, 2)
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
