"""scripts/install.sh's decisions: which torch build it asks pip for, and what it says about PATH.

The script runs for real, in a copy of the repository whose .venv holds
recording stand-ins for pip and privacycam: the real install takes minutes and
gigabytes (README, "Torch backends", says what it gives on this machine).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
RECORDING_PIP = """#!/usr/bin/env bash
echo "$*" >> "$PIP_CALLS"
if [ -n "${PIP_INDEX_UNREACHABLE:-}" ]; then
  for arg in "$@"; do [ "$arg" = --index-url ] && { echo "ERROR: No matching distribution found" >&2; exit 1; }; done
fi
exit 0
"""

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the pinned torch versions are x86_64's")
no_real_gpu = pytest.mark.skipif(
    Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None,
    reason="this machine has an NVIDIA GPU",
)


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _install(tmp_path: Path, gpu: bool = False, path_has_venv: bool = False, **env: str):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "install.sh", repo / "scripts" / "install.sh")
    venv_bin = repo / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    _executable(venv_bin / "python", "#!/bin/sh\nexit 0\n")
    _executable(venv_bin / "pip", RECORDING_PIP)
    _executable(venv_bin / "privacycam", "#!/bin/sh\nexit 0\n")  # `models install`
    tools = tmp_path / "tools"
    tools.mkdir()
    if gpu:
        _executable(tools / "nvidia-smi", "#!/bin/sh\necho 'GPU 0: NVIDIA (fake)'\n")
    calls = tmp_path / "pip-calls"
    calls.touch()
    search_path = [str(tools), *([str(venv_bin)] if path_has_venv else []), "/usr/local/bin", "/usr/bin", "/bin"]
    full_env = {"PATH": os.pathsep.join(search_path), "HOME": str(tmp_path), "PIP_CALLS": str(calls), **env}
    result = subprocess.run(
        ["bash", str(repo / "scripts" / "install.sh"), "--dev"],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )
    return result, calls.read_text().splitlines(), repo


def _torch_calls(calls: list[str]) -> list[str]:
    return [call for call in calls if "torch==" in call]


@no_real_gpu
def test_without_a_gpu_the_cpu_build_comes_from_the_cpu_index(tmp_path):
    result, calls, _ = _install(tmp_path)
    assert result.returncode == 0, result.stderr
    assert _torch_calls(calls) == [
        f"install -q --retries 1 --index-url {CPU_INDEX} torch==2.14.1+cpu torchvision==0.29.1+cpu"
    ]
    assert "CPU build" in result.stdout


@no_real_gpu
def test_an_unreachable_cpu_index_falls_back_to_pypi_and_says_so(tmp_path):
    result, calls, _ = _install(tmp_path, PIP_INDEX_UNREACHABLE="1")
    assert result.returncode == 0, result.stderr
    torch_calls = _torch_calls(calls)
    assert len(torch_calls) == 2 and "--index-url" in torch_calls[0]
    assert torch_calls[1] == "install -q torch==2.14.1 torchvision==0.29.1"
    assert f"{CPU_INDEX} is out of reach" in result.stdout and "CUDA build" in result.stdout
    assert "No matching distribution" not in result.stderr  # pip's words for it mislead; the line above says it


def test_asking_for_the_cpu_build_fails_clearly_when_it_cannot_be_had(tmp_path):
    result, calls, _ = _install(tmp_path, PIP_INDEX_UNREACHABLE="1", PRIVACYCAM_TORCH="cpu")
    assert result.returncode == 1
    assert len(_torch_calls(calls)) == 1  # no quiet fallback to the big build
    assert "PRIVACYCAM_TORCH_CPU_INDEX" in result.stderr and "PRIVACYCAM_TORCH=cuda" in result.stderr
    assert "No matching distribution" in result.stderr  # asked for it explicitly: pip's own reason too
    assert "Traceback" not in result.stderr


def test_with_a_gpu_or_when_asked_the_cuda_build_comes_from_pypi(tmp_path):
    for name, options in {"gpu": {"gpu": True}, "asked": {"PRIVACYCAM_TORCH": "cuda"}}.items():
        result, calls, _ = _install(tmp_path / name, **options)
        assert result.returncode == 0, result.stderr
        assert _torch_calls(calls) == ["install -q torch==2.14.1 torchvision==0.29.1"], name


def test_a_wrong_torch_choice_is_named(tmp_path):
    result, calls, _ = _install(tmp_path, PRIVACYCAM_TORCH="rocm")
    assert result.returncode == 2
    assert "PRIVACYCAM_TORCH=rocm is not one of auto, cpu, cuda" in result.stderr
    assert _torch_calls(calls) == []


def test_it_says_where_the_command_is_when_it_is_not_on_path(tmp_path):
    result, _, repo = _install(tmp_path, PRIVACYCAM_TORCH="cuda")
    command = repo / ".venv" / "bin" / "privacycam"
    assert f"the command is {command}, which is not on your PATH" in result.stdout
    assert f"ln -s {command} ~/.local/bin/privacycam" in result.stdout
    assert f"pipx install {repo}" in result.stdout
    assert not (tmp_path / ".local" / "bin" / "privacycam").exists()  # offered, not done


def test_it_says_when_the_command_is_on_path(tmp_path):
    result, _, repo = _install(tmp_path, path_has_venv=True, PRIVACYCAM_TORCH="cuda")
    assert f"privacycam is {repo / '.venv' / 'bin' / 'privacycam'} (on your PATH)" in result.stdout
    assert "ln -s" not in result.stdout
