"""Speed table for the README and closing notes: `privacycam bench` and the two references
(bench/naive_reference.py, bench/lfbw_reference.py) on the same real-footage MJPEG frames, in
alternating rounds of one run, medians per case. Prints one JSON object.

    .venv/bin/python bench/perf.py [--runs 5] [--frames 150] [--cases 1280x720,1920x1080]
                                   [--reference-frames 60] [--baseline /path/to/other/checkout]

Every round runs every job once, the order rotated from round to round, so
load from others sharing the machine falls on all of them alike. `--baseline`
adds `privacycam bench` of another checkout (e.g. main before a change) on the
same clip, for before/after figures from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from privacycam.bench import real_footage_clip  # noqa: E402

# (width, height, fps): fps None is unpaced (as fast as it goes)
SIZES = {
    "640x480": (640, 480),
    "1280x720": (1280, 720),
    "1920x1080": (1920, 1080),
    "3840x2160": (3840, 2160),
}
DEFAULT_CASES = "640x480,1280x720,1920x1080,3840x2160"
# The references cost 4-9x more: measured at the sizes the targets name only.
REFERENCE_SIZES = ("1280x720", "1920x1080")
REFERENCES = {"naive": "bench.naive_reference", "lfbw-like": "bench.lfbw_reference"}


@dataclass(frozen=True)
class Job:
    name: str
    command: list[str]
    pythonpath: str


def _clip_args(source: str, width: int, height: int, frames: int, fps: float | None) -> list[str]:
    """The options PrivacyCam's bench and the references share."""
    args = ["--input", source, "--width", str(width), "--height", str(height), "--frames", str(frames)]
    return args + (["--fps", str(fps)] if fps else [])


def privacycam_job(name: str, repo: Path, width: int, height: int, fps: float | None, frames: int, source: str) -> Job:
    command = [sys.executable, "-m", "privacycam", "bench", *_clip_args(source, width, height, frames, fps)]
    return Job(name, command, str(repo))


def reference_job(name: str, module: str, width: int, height: int, fps: float, frames: int, source: str) -> Job:
    command = [sys.executable, "-m", module, *_clip_args(source, width, height, frames, fps)]
    return Job(name, command, str(REPO))


def run(job: Job) -> dict:
    env = dict(os.environ, PYTHONPATH=job.pythonpath)
    result = subprocess.run(job.command, capture_output=True, text=True, env=env, cwd=job.pythonpath)
    if result.returncode != 0:
        raise SystemExit(f"perf: {job.name} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict]) -> dict:
    def med(get):
        return round(statistics.median(get(r) for r in runs), 2)

    table = {
        "runs": len(runs),
        "fps": med(lambda r: r["fps"]),
        "cpu_ms_per_frame": med(lambda r: r["cpu_ms_per_frame"]),
        "cpu_ms_per_frame_all": [r["cpu_ms_per_frame"] for r in runs],
    }
    if "latency_ms" in runs[0]:
        table |= {
            "latency_p50_ms": med(lambda r: r["latency_ms"]["p50"]),
            "latency_p95_ms": med(lambda r: r["latency_ms"]["p95"]),
            "dropped_frames": med(lambda r: r["dropped_frames"]),
            "startup_ms": med(lambda r: r["startup_ms"]),
            "peak_rss_mb": med(lambda r: r["peak_rss_mb"]),
            "stage_ms": {k: med(lambda r, k=k: r["stage_ms"][k]) for k in runs[0]["stage_ms"]},
        }
    return table


def build_jobs(args: argparse.Namespace) -> list[Job]:
    jobs = []
    for size in args.cases.split(","):
        width, height = SIZES[size]
        clip = str(real_footage_clip(width, height))  # made once, before any timing
        jobs.append(privacycam_job(f"privacycam {size} paced 30", REPO, width, height, 30, args.frames, "real"))
        if args.baseline:
            jobs.append(
                privacycam_job(f"baseline {size} paced 30", args.baseline, width, height, 30, args.frames, clip)
            )
        if size in REFERENCE_SIZES:
            for name, module in REFERENCES.items():
                jobs.append(
                    reference_job(f"{name} {size} paced 30", module, width, height, 30, args.reference_frames, "real")
                )
    if "1280x720" in args.cases:
        jobs.append(privacycam_job("privacycam 1280x720 unpaced", REPO, 1280, 720, None, args.frames, "real"))
        jobs.append(
            privacycam_job("privacycam 1280x720 paced 30 synthetic", REPO, 1280, 720, 30, args.frames, "synthetic")
        )
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--reference-frames", type=int, default=60, help="frames per reference run (they are slow)")
    parser.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated sizes among {', '.join(SIZES)}")
    parser.add_argument("--baseline", type=Path, help="another checkout whose `privacycam bench` runs beside ours")
    args = parser.parse_args()
    jobs = build_jobs(args)
    results: dict[str, list[dict]] = {job.name: [] for job in jobs}
    for round_index in range(args.runs):
        shift = round_index % len(jobs)
        for job in jobs[shift:] + jobs[:shift]:
            print(f"perf: round {round_index + 1}/{args.runs}: {job.name}", file=sys.stderr)
            results[job.name].append(run(job))
    table: dict[str, object] = {name: median_of(runs) for name, runs in results.items()}
    for size in REFERENCE_SIZES:
        ours = table.get(f"privacycam {size} paced 30")
        for name in REFERENCES:
            reference = table.get(f"{name} {size} paced 30")
            if ours and reference:
                table[f"{name}_over_privacycam_cpu {size}"] = round(
                    reference["cpu_ms_per_frame"] / ours["cpu_ms_per_frame"], 2
                )
    table["load_average_at_end"] = os.getloadavg()
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
