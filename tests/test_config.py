from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privacycam.config import Config, changes_for_next_start, load_config, parse_config_text
from privacycam.errors import ConfigError


def test_documented_config_equals_built_in_defaults():
    documented = parse_config_text((REPO / "config" / "privacycam.yaml").read_text())
    assert documented == Config()


def test_every_default_key_is_documented():
    documented = yaml.safe_load((REPO / "config" / "privacycam.yaml").read_text())
    for section, values in Config().model_dump().items():
        if isinstance(values, dict):
            assert set(values) == set(documented[section]), section
        else:
            assert section in documented


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("camera: {widht: 640}", "camera.widht: unknown key"),
        ("camera: {width: big}", "camera.width"),
        ("camera: {width: 5}", "camera.width: Input should be greater than or equal to 16"),
        ("segmenter: {model: huge}", "segmenter.model"),
        ("segmenter: {backend: yolo}", "segmenter.backend"),
        ("background: {mode: image}", "needs background.image"),
        ("background: {mode: image, image: /nonexistent.png}", "does not exist"),
        ("mask: {smoothing: 2}", "mask.smoothing"),
        ("camera: [1, 2", "broken YAML at line 1"),
        ("- just a list", "top level must be a mapping"),
        # PyYAML alone keeps the last of two blocks and drops the first without a word
        (
            "mask: {smoothing: 0.5}\nbackground: {mode: color}\nmask: {feather: 0.01}",
            "line 3, column 1: 'mask' is given twice",
        ),
        ("mask: {smoothing: 0.5, smoothing: 0.6}", "'smoothing' is given twice"),
    ],
)
def test_bad_config_gives_one_clear_line(text, expected):
    with pytest.raises(ConfigError) as info:
        parse_config_text(text)
    assert expected in info.value.message
    assert "\n" not in info.value.message
    assert info.value.exit_code == 2


def test_relative_background_path_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "bg.png").write_bytes(b"")
    config, _ = load_config(write_config(tmp_path / "c.yaml", "background: {mode: image, image: bg.png}"))
    assert config.background.image == tmp_path / "bg.png"


def test_a_merged_key_may_be_overridden():
    text = "background: &base {mode: color, color: [1, 2, 3]}\nmask: {smoothing: 0.5}\n"
    assert parse_config_text(text).background.color == (1, 2, 3)
    config = parse_config_text("background:\n  <<: {mode: color, blur_strength: 5}\n  blur_strength: 9\n")
    assert (config.background.mode, config.background.blur_strength) == ("color", 9)


def test_on_off_words_for_privacy_start():
    assert parse_config_text("privacy: {start: off}").privacy.start is False
    assert parse_config_text("privacy: {start: 'on'}").privacy.start is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("camera: [1, 2", "broken YAML"),
        ("segmenter: {model: huge}", "segmenter.model"),
        ("background: {mode: image, image: missing.png}", "does not exist"),
    ],
)
def test_cli_reports_config_errors_without_traceback(tmp_path, text, expected):
    config = write_config(tmp_path / "bad.yaml", text)
    result = run_cli("run", "--config", str(config), "--input", "synthetic", "--output", "null", "--frames", "1")
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10_000), st.floats(allow_nan=True), st.text(max_size=12)
)


def _lists_and_mappings_of(children: st.SearchStrategy) -> st.SearchStrategy:
    # a named function: hypothesis misreads this multi-line lambda as not using its argument
    return st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4))


yaml_values = st.recursive(yaml_scalars, _lists_and_mappings_of, max_leaves=12)
section_names = st.sampled_from([*Config.model_fields, "unknown"])
field_names = st.sampled_from(
    sorted(
        {name for section in Config.model_fields.values() for name in getattr(section.annotation, "model_fields", {})}
    )
    + ["nope"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(section_names, st.one_of(yaml_values, st.dictionaries(field_names, yaml_values)), max_size=5))
def test_fuzzed_documents_load_or_raise_the_config_error(document):
    text = yaml.safe_dump(document)
    try:
        config = parse_config_text(text)
    except ConfigError as exc:
        assert exc.message and "\n" not in exc.message
    else:
        assert isinstance(config, Config)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzzed_text_loads_or_raises_the_config_error(text):
    with contextlib.suppress(ConfigError):
        parse_config_text(text)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Path(tmp_path / "nope.yaml"))


def test_changes_a_reload_cannot_apply_are_named():
    before = Config()
    after = before.with_overrides(
        camera={"device": "/dev/video2"},
        output={"preview": True},
        privacy={"hotkey": "q", "placeholder_color": (1, 2, 3), "start": False},
        mask={"smoothing": 0.5},
        segmenter={"model": "general"},
        background={"mode": "color"},
    )
    assert changes_for_next_start(before, after) == ["camera.device", "output.preview", "privacy.hotkey"]
    assert changes_for_next_start(before, before) == []
    assert changes_for_next_start(before, Config(log_level="debug")) == ["log_level"]


# -- hostile configs (issue 18, items 3 and 6): refused at once, in one line -----------------------
def _alias_bomb(levels: int, width: int = 9) -> str:
    """'Billion laughs': each level repeats the one before `width` times; a few hundred bytes."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    lines.append("camera: [" + ", ".join([f"*l{levels - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


HOSTILE_CONFIGS = {
    "alias bomb, 9^6 values": (_alias_bomb(5), "expands to more than 10000 values"),
    "alias bomb, 9^10 values": (_alias_bomb(9), "expands to more than 10000 values"),
    "alias bomb in a mapping": (
        "a: &a {x: 1, y: 2, z: 3}\n"
        + "".join(f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}" + ", *a" * 40 + "]\n" for i in range(3)),
        "more than 64 aliases",
    ),
    "an alias to its own block": ("camera: &c [1, *c]\n", "refers to the block it is in"),
    "5000 nested lists": ("camera: " + "[" * 5000 + "]" * 5000, "nested deeper than 16 levels"),
    "3000 nested mappings": ("camera: " + "{a: " * 3000 + "1" + "}" * 3000, "nested deeper than 16 levels"),
    "block-style nesting": ("camera:\n" + "".join("  " * i + "- \n" for i in range(1, 40)), "nested deeper"),
    "5000-digit integer as a value": ("camera: {width: " + "9" * 5000 + "}", "a number with more than 32 digits"),
    "5000-digit integer at top level": ("x: " + "9" * 5000, "a number with more than 32 digits"),
    "5000-digit hex integer": ("mask: {resolution: 0x" + "f" * 5000 + "}", "a number with more than 32 digits"),
    "camera.fps 1e-300": ("camera: {fps: 1e-300}", "camera.fps: Input should be greater than or equal to 1"),
    "camera.fps 1.0e-300": ("camera: {fps: 1.0e-300}", "camera.fps: Input should be greater than or equal to 1"),
    "camera.fps 0.5": ("camera: {fps: 0.5}", "camera.fps"),
    "output.fps 1e-9": ("output: {fps: 0.000000001}", "output.fps"),
    "camera.fps .nan": ("camera: {fps: .nan}", "camera.fps"),
    "camera.fps .inf": ("camera: {fps: .inf}", "camera.fps"),
    "control.socket of 120 bytes": (
        "control: {socket: /tmp/" + "s" * 115 + "}",
        "control.socket: path is 120 bytes long; a Unix socket path is at most 107 bytes",
    ),
    "control.socket of 108 bytes": ("control: {socket: /tmp/" + "s" * 103 + "}", "control.socket"),
    "1 MB of YAML": ("# " + "x" * 1_000_000, "larger than 64 KiB"),
    "3000 unknown keys": ("\n".join(f"k{i}: 1" for i in range(3000)), "more problems"),
    "a 60 kB key": ("camera:\n  ? " + "k" * 60_000 + "\n  : 1\n", "unknown key"),
}


@pytest.mark.parametrize("name", HOSTILE_CONFIGS)
def test_hostile_config_is_refused_in_one_short_line(name):
    text, expected = HOSTILE_CONFIGS[name]
    with pytest.raises(ConfigError) as info:
        parse_config_text(text)
    assert expected in info.value.message
    assert "\n" not in info.value.message
    assert len(info.value.message) < 1000  # the bad value is shown cut short, never whole
    assert info.value.exit_code == 2


def test_limits_leave_room_for_real_configs():
    assert parse_config_text("control: {socket: /tmp/" + "s" * 102 + "}").control.socket is not None
    text = "background: {mode: color, color: &c [10, 20, 30]}\n"
    text += "privacy: {placeholder_color: *c}\ncamera: {width: 0x280, height: 480, fps: 1}\n"
    config = parse_config_text(text)
    assert config.privacy.placeholder_color == (10, 20, 30) and config.camera.width == 640


def test_config_file_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config(fifo)


def test_huge_config_file_is_refused_before_it_is_read_whole(tmp_path):
    big = tmp_path / "config.yaml"
    with big.open("wb") as file:
        file.truncate(1 << 30)  # a sparse GiB
    with pytest.raises(ConfigError, match="larger than 64 KiB"):
        load_config(big)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_alias_bomb(7), "expands to more than 10000 values"),
        ("camera: " + "[" * 3000 + "]" * 3000, "nested deeper than 16 levels"),
        ("camera: {width: " + "7" * 4400 + "}", "more than 32 digits"),
        ("control: {socket: /run/user/" + "x" * 110 + "/control.sock}", "control.socket"),
        ("camera: {fps: 1e-300}", "camera.fps"),
    ],
)
def test_cli_refuses_hostile_config_in_one_line(tmp_path, text, expected):
    config = write_config(tmp_path / "bad.yaml", text)
    result = run_cli(
        "run", "--config", str(config), "--input", "synthetic", "--output", "null", "--frames", "1", timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert expected in result.stderr
