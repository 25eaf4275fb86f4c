"""Every bad input: one clear line, a non-zero exit, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli_env, first_frames, run_cli

from privacycam import doctor
from privacycam.errors import PrivacyCamError
from privacycam.models import model_path


def _assert_one_clear_line(result, code: int, *phrases: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    assert "Fix:" in errors[0]


def test_missing_camera():
    result = run_cli("run", "--input", "/dev/video97", "--output", "null")
    _assert_one_clear_line(result, 1, "camera /dev/video97 does not exist")


def test_unreadable_video(tmp_path):
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"this is not a video")
    result = run_cli("run", "--input", str(video), "--output", "null")
    _assert_one_clear_line(result, 1, "cannot be read")


def test_input_that_does_not_exist(tmp_path):
    result = run_cli("run", "--input", str(tmp_path / "nothing"), "--output", "null")
    _assert_one_clear_line(result, 1, "does not exist")


def test_unknown_model_name(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("segmenter: {model: enormous}\n")
    result = run_cli("run", "--config", str(config), "--input", "synthetic", "--output", "null", "--frames", "1")
    _assert_one_clear_line(result, 2, "segmenter.model")


def test_missing_model_file(tmp_path):
    # Frames flow (fully hidden) while the model loads; the failed load then ends the run.
    result = run_cli(
        "run",
        "--input",
        "synthetic",
        "--output",
        str(tmp_path / "out"),
        "--frames",
        "900",
        env=cli_env(PRIVACYCAM_MODEL_DIR=str(tmp_path / "no-models")),
    )
    _assert_one_clear_line(result, 2, "is missing", "privacycam models install")
    # the failed load ends the run early; how many hidden frames went out before it is a race
    # (a missing file fails at once), so only the end is checked
    assert len(list((tmp_path / "out").iterdir())) < 900


def test_background_image_that_is_not_an_image(tmp_path):
    (tmp_path / "bg.png").write_text("not a picture")
    config = tmp_path / "c.yaml"
    config.write_text("background: {mode: image, image: bg.png}\n")
    frames = first_frames("davis2016_lucia", 1, tmp_path / "in")
    result = run_cli("run", "--config", str(config), "--input", str(frames), "--output", "null")
    _assert_one_clear_line(result, 2, "cannot be read as a picture")


@pytest.mark.parametrize("output", ["/proc/privacycam-test/out.mp4", "/proc/privacycam-test-frames"])
def test_unwritable_output(tmp_path, output):
    frames = first_frames("davis2016_lucia", 1, tmp_path / "in")
    result = run_cli("run", "--input", str(frames), "--output", output)
    assert result.returncode != 0
    _assert_one_clear_line(result, result.returncode)


def test_output_with_unknown_suffix(tmp_path):
    frames = first_frames("davis2016_lucia", 1, tmp_path / "in")
    result = run_cli("run", "--input", str(frames), "--output", str(tmp_path / "out.avi"))
    _assert_one_clear_line(result, 1, "neither .mp4/.mkv nor a folder")


def test_control_commands_without_daemon(runtime_dir):
    for command in ("toggle", "on", "off", "status"):
        result = run_cli(command)
        _assert_one_clear_line(result, 1, "no PrivacyCam daemon is running")


def test_version_and_help():
    assert run_cli("--version").stdout.startswith("privacycam ")
    for command in ("run", "matte", "bench", "toggle", "status", "doctor", "models"):
        result = run_cli(command, "-h")
        assert result.returncode == 0 and "usage:" in result.stdout


def test_doctor_on_a_machine_without_camera_or_loopback():
    result = run_cli("doctor")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "FAIL  no camera found" in result.stdout
    assert "FAIL  v4l2loopback is not loaded" in result.stdout
    assert "OK    model general" in result.stdout
    assert "problem(s) found" in result.stdout


def test_readme_opens_with_the_two_commands():
    lines = (REPO / "README.md").read_text().splitlines()[:12]
    text = "\n".join(lines)
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text


def test_doctor_fails_only_for_a_model_file_the_config_uses(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "selfie_segmentation.tflite").symlink_to(model_path("general"))  # only the default model
    env = cli_env(PRIVACYCAM_MODEL_DIR=str(models))
    lines = run_cli("doctor", env=env).stdout.splitlines()
    assert any(line.startswith("OK    model general") for line in lines)
    pose = [line for line in lines if line.startswith("WARN  model pose")]
    assert pose and "only needed for segmenter.model: pose" in pose[0]
    config = tmp_path / "c.yaml"
    config.write_text("segmenter: {model: pose}\n")
    lines = run_cli("doctor", "--config", str(config), env=env).stdout.splitlines()
    assert any(line.startswith("FAIL  model pose") for line in lines)


def test_output_cut_short_by_the_reader_is_no_traceback():
    command = f"{sys.executable} -m privacycam models list | head -1"
    result = subprocess.run(command, shell=True, capture_output=True, text=True, env=cli_env())
    assert result.stdout.startswith("general")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("bench", "--frames", "0"),
        ("bench", "--fps", "-5"),
        ("bench", "--fps", "nan"),
        ("bench", "--width", "0"),
        ("run", "--frames", "-1"),
        ("bench", "--frames", "1.5"),
    ],
)
def test_counts_and_rates_must_be_above_zero(command, option, value):
    # `bench --fps -5` used to pace a camera backwards and drop thousands of frames
    result = run_cli(command, option, value)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"argument {option}: must be a" in errors[0] and "above 0" in errors[0], result.stderr


@pytest.mark.parametrize("display_name", [None, ":251"])
def test_preview_output_without_an_x_server(display_name):
    # OpenCV's Qt aborted the whole process (SIGABRT, core dump) when it found no X server
    env = cli_env(DISPLAY=display_name) if display_name else cli_env()
    result = run_cli("run", "--input", "synthetic", "--output", "preview", "--frames", "5", env=env)
    _assert_one_clear_line(result, 1, "the preview window cannot open")


def test_hotkey_and_doctor_name_an_unreachable_x_display():
    # pynput's own error blamed the platform over several lines
    env = cli_env(DISPLAY=":251")
    result = run_cli("run", "--input", "synthetic", "--output", "null", "--frames", "3", env=env)
    assert result.returncode == 0, result.stderr
    assert "hotkey 'p' is off: X display :251 cannot be reached" in result.stderr
    assert "not supported" not in result.stderr
    report = run_cli("doctor", env=env).stdout
    assert "WARN  the hotkey is off: X display :251 cannot be reached" in report


def _doctor_lines(cwd, env: dict) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "privacycam", "doctor"], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout.splitlines()


def _fix(lines: list[str], start: str) -> str:
    line = next(line for line in lines if line.startswith(start))
    return line.split("  -> ", 1)[1]


def test_doctor_fixes_work_from_any_folder_and_survive_a_reboot(tmp_path):
    lines = _doctor_lines(tmp_path, cli_env(XDG_CONFIG_HOME=str(tmp_path / "config")))
    loopback = _fix(lines, "FAIL  v4l2loopback is not loaded")
    assert "/etc/modules-load.d/privacycam.conf" in loopback  # else the device is gone after a reboot
    copied = [word for word in loopback.split() if word.endswith(".conf") and not word.startswith("/etc/")]
    assert len(copied) == 2, loopback
    for source in copied:
        assert Path(source).is_absolute() and Path(source).is_file(), source
    unit_fix = _fix(lines, "WARN  systemd user unit not installed")
    unit_source = unit_fix.split()[2]
    assert Path(unit_source).is_absolute() and Path(unit_source).name == doctor.UNIT_FILE, unit_fix


def test_doctor_says_the_unit_is_missing_before_it_suggests_starting_it(tmp_path):
    config_home = tmp_path / "config"
    lines = _doctor_lines(tmp_path, cli_env(XDG_CONFIG_HOME=str(config_home)))
    unit = next(i for i, line in enumerate(lines) if "systemd user unit" in line)
    daemon = next(i for i, line in enumerate(lines) if "no daemon answers" in line)
    assert unit < daemon
    assert "systemctl --user start" not in lines[daemon]
    assert "privacycam run" in lines[daemon]
    (config_home / "systemd" / "user").mkdir(parents=True)
    (config_home / "systemd" / "user" / doctor.UNIT_FILE).write_text("[Service]\n")
    lines = _doctor_lines(tmp_path, cli_env(XDG_CONFIG_HOME=str(config_home)))
    assert "systemctl --user start privacycam" in _fix(lines, "WARN  no daemon answers")


def test_doctor_without_the_source_folder_prints_the_file_contents(tmp_path, monkeypatch):

    shipped = {
        name: [line for line in (REPO / "systemd" / name).read_text().splitlines() if not line.startswith("#")]
        for name in (doctor.MODPROBE_FILE, doctor.MODULES_LOAD_FILE)
    }
    assert shipped == {doctor.MODPROBE_FILE: [doctor.MODPROBE_OPTIONS], doctor.MODULES_LOAD_FILE: ["v4l2loopback"]}
    monkeypatch.setattr(doctor, "SHIPPED_FILES", tmp_path / "not-installed")
    monkeypatch.setattr(doctor, "INSTALLED_FILES", "share/not-installed")
    fix = doctor.loopback_fix()
    assert f"echo '{doctor.MODPROBE_OPTIONS}' | sudo tee /etc/modprobe.d/privacycam.conf" in fix
    assert "echo 'v4l2loopback' | sudo tee /etc/modules-load.d/privacycam.conf" in fix


def test_status_json_without_a_daemon_is_a_json_error(runtime_dir):
    result = run_cli("status", "--json", env=cli_env(XDG_RUNTIME_DIR=str(runtime_dir)))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    answer = json.loads(result.stdout)
    assert answer["ok"] is False
    assert "no PrivacyCam daemon is running" in answer["error"] and "Fix:" in answer["error"]


def test_a_problem_quoting_a_sentence_gets_one_full_stop():
    # pyvirtualcam's own text ends in "."; joined with ". Fix:" it read "does not exist.. Fix"
    result = run_cli("run", "--input", "synthetic", "--output", "vcam:/dev/video97", "--frames", "1")
    _assert_one_clear_line(result, 1, "/dev/video97 does not exist. Fix:")
    assert ".." not in result.stderr
    assert PrivacyCamError("it broke. ", "mend it").message == "it broke. Fix: mend it"


def test_a_file_run_counts_in_words_and_says_nothing_of_the_hotkey(tmp_path):
    frames = first_frames("davis2016_lucia", 1, tmp_path / "in")
    result = run_cli("run", "--input", str(frames), "--output", "null")
    assert result.returncode == 0, result.stderr
    assert "stopped after 1 frame\n" in result.stderr
    assert "hotkey" not in result.stderr  # only a live input has a key to toggle it


def test_an_installed_privacycam_carries_the_files_doctor_names():
    tomllib = pytest.importorskip("tomllib")

    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = sorted(f"systemd/{path.name}" for path in (REPO / "systemd").iterdir())
    assert sorted(data_files[doctor.INSTALLED_FILES]) == shipped  # every file in systemd/ is installed
    assert {f"systemd/{doctor.UNIT_FILE}", f"systemd/{doctor.MODPROBE_FILE}"} <= set(shipped)


@pytest.mark.parametrize("command", [("run", "--input", "synthetic", "--output", "null", "--frames", "1"), ("status",)])
def test_a_socket_path_too_long_for_unix_sockets_is_one_line(tmp_path, command):
    too_long = str(tmp_path / ("s" * 120) / "control.sock")
    result = run_cli(*command, env=cli_env(PRIVACYCAM_SOCKET=too_long))
    _assert_one_clear_line(result, 1, "a Unix socket path is at most 107")
