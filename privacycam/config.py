"""Configuration: a YAML file validated into typed, immutable settings.

Lookup order: `--config FILE`, then `$XDG_CONFIG_HOME/privacycam/config.yaml`,
then the built-in defaults (which `config/privacycam.yaml` documents key by key;
a test keeps the two equal). Every problem becomes one `ConfigError` line that
names the key and the fix.
"""

from __future__ import annotations

import os
import reprlib
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from privacycam.errors import ConfigError

TORCH_BACKENDS = (
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_resnet101",
    "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2",
)
SEGMENTER_BACKENDS = ("mediapipe", *TORCH_BACKENDS)

Size = Annotated[int, Field(ge=16, le=7680)]
# At least one frame a second: pacing waits 1/fps, and a rate like 1e-300 overflows every timer.
Fps = Annotated[float, Field(ge=1, le=240)]
Rgb = tuple[
    Annotated[int, Field(ge=0, le=255)],
    Annotated[int, Field(ge=0, le=255)],
    Annotated[int, Field(ge=0, le=255)],
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _on_off(value: Any) -> Any:
    """YAML 1.1 reads `on`/`off` as booleans but quoted ones stay strings."""
    if isinstance(value, str) and value.lower() in ("on", "off"):
        return value.lower() == "on"
    return value


class CameraConfig(_Section):
    device: int | str = 0
    width: Size = 1280
    height: Size = 720
    fps: Fps = 30.0
    fourcc: str = "MJPG"
    on_demand: bool = True
    loop: bool = True

    @field_validator("fourcc")
    @classmethod
    def _four_chars(cls, value: str) -> str:
        if len(value) != 4:
            raise ValueError("must be exactly 4 characters, e.g. MJPG or YUYV")
        return value.upper()


class OutputConfig(_Section):
    card_label: str = "PrivacyCam"
    device: str | None = None
    width: Size | None = None
    height: Size | None = None
    fps: Fps | None = None
    backend: str | None = None
    preview: bool = False


class SegmenterConfig(_Section):
    backend: Literal[SEGMENTER_BACKENDS] = "mediapipe"  # type: ignore[valid-type]
    # auto: landscape for whole frames, general for crops (segmenters/frame_and_crop.py)
    model: Literal["auto", "general", "landscape", "pose"] = "auto"
    model_path: Path | None = None
    # What runs the MediaPipe model: litert (the TensorFlow Lite interpreter, direct)
    # or mediapipe (its Tasks API). Same masks; litert is ~1.5 ms/frame cheaper.
    runtime: Literal["litert", "mediapipe"] = "litert"
    threads: Annotated[int, Field(ge=1, le=64)] = 1
    device: Literal["cpu", "cuda", "auto"] = "auto"
    weights_path: Path | None = None
    people: Literal["all", "user"] = "all"
    every_nth_frame: Annotated[int, Field(ge=1, le=10)] = 1

    @field_validator("model_path", "weights_path")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_file():
            raise ValueError(f"file {value} does not exist")
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _pose_runs_on_litert(self) -> SegmenterConfig:
        if self.backend == "mediapipe" and self.model == "pose":
            if self.runtime != "litert":
                raise ValueError("model pose runs only with runtime litert (MediaPipe's Tasks API cannot run it)")
            if self.model_path is not None:
                raise ValueError("model_path replaces the selfie model; leave it unset with model pose")
        return self


class MaskConfig(_Section):
    """How the segmenter's raw confidence becomes the matte (see privacycam/mask.py)."""

    # Temporal smoothing: weight of the previous matte where the new one roughly agrees (0 = none).
    smoothing: Annotated[float, Field(ge=0.0, le=0.95)] = 0.7
    # Change in alpha (0..1) at which the matte follows the new mask at once (moving person: no afterimage).
    motion_threshold: Annotated[float, Field(ge=0.05, le=1.0)] = 0.5
    # Edge softness: Gaussian sigma as a fraction of the frame height (0 = none).
    feather: Annotated[float, Field(ge=0.0, le=0.1)] = 0.002
    # Lines of the working matte (the compositor upsamples it); more costs time, rarely looks better.
    # On the DAVIS clips J is flat from 180 to 360 lines (.778/.774/.778) and .772 at 120;
    # 180 costs ~0.75 ms less per 720p frame than 240 (an exact quarter of 720).
    resolution: Annotated[int, Field(ge=64, le=1080)] = 180
    # Segment a crop around the people (far, small people get the model's full resolution).
    region_of_interest: bool = True
    # Context around the people in that crop, as a fraction of their larger side.
    roi_margin: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    # Frames between whole-frame looks for people entering while cropping.
    roi_full_frame_every: Annotated[int, Field(ge=1, le=300)] = 15
    # People whose bounding box covers this share of the frame are segmented on the whole frame.
    # Below it a square crop gives the general model more lines of them: with webcam framing
    # (bench/quality.py --framing webcam) J .784 at 0.25, .804 at 0.4, .806 at 0.5 to 1.0.
    roi_whole_frame_above: Annotated[float, Field(ge=0.05, le=1.0)] = 0.5
    # Pull uncertain edges onto image edges (guided filter). Off: no gain measured on the dev set, +0.6 ms.
    refine_edges: bool = False
    # Guided-filter radius as a fraction of the frame height.
    refine_radius: Annotated[float, Field(ge=0.002, le=0.05)] = 0.01
    # Guided-filter regularisation, in (grey level / 255) squared: edges weaker than ~sqrt(eps) are smoothed over.
    refine_eps: Annotated[float, Field(ge=1e-6, le=0.1)] = 0.001


class BackgroundConfig(_Section):
    mode: Literal["blur", "image", "color"] = "blur"
    blur_strength: Annotated[float, Field(ge=1, le=100)] = 24
    image: Path | None = None
    color: Rgb = (40, 44, 52)

    @model_validator(mode="after")
    def _image_given(self) -> BackgroundConfig:
        if self.mode == "image":
            if self.image is None:
                raise ValueError("mode 'image' needs background.image: path to a picture")
            if not self.image.expanduser().is_file():
                raise ValueError(f"background.image: file {self.image} does not exist")
        return self


class PrivacyConfig(_Section):
    start: bool = True
    hotkey: str | None = "p"
    hotkey_modifiers: tuple[Literal["ctrl", "shift", "alt", "cmd"], ...] = ()
    # auto: the GlobalShortcuts portal on Wayland, pynput on X11 (control/hotkey.py).
    hotkey_backend: Literal["auto", "portal", "x11", "none"] = "auto"
    # A desktop notification on each privacy change, and a tray icon; silent without a session bus.
    notifications: bool = True
    tray: bool = True
    placeholder_color: Rgb = (40, 44, 52)

    _start_on_off = field_validator("start", mode="before")(lambda cls, v: _on_off(v))


# sun_path holds 108 bytes, the terminating NUL included (man 7 unix).
MAX_SOCKET_PATH_BYTES = 107


class ControlConfig(_Section):
    socket: Path | None = None

    @field_validator("socket")
    @classmethod
    def _fits_a_unix_socket(cls, value: Path | None) -> Path | None:
        if value is not None and len(os.fsencode(value)) > MAX_SOCKET_PATH_BYTES:
            raise ValueError(
                f"path is {len(os.fsencode(value))} bytes long; a Unix socket path is at most "
                f"{MAX_SOCKET_PATH_BYTES} bytes, choose a shorter one"
            )
        return value


class Config(_Section):
    camera: CameraConfig = CameraConfig()
    output: OutputConfig = OutputConfig()
    segmenter: SegmenterConfig = SegmenterConfig()
    mask: MaskConfig = MaskConfig()
    background: BackgroundConfig = BackgroundConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    control: ControlConfig = ControlConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    def with_overrides(self, **sections: dict[str, Any]) -> Config:
        """A copy with some keys replaced, validated like the file was."""
        data = self.model_dump()
        for section, values in sections.items():
            data[section].update(values)
        return _validate(data, "command line")


# Keys a reload (SIGHUP) needs no restart for: the daemon applies these sections
# and the placeholder colour at once, and privacy.start only picks the state at
# start (--privacy overrides it; the running state is toggled live). The rest
# (camera, virtual camera, control socket, hotkey, log level) is set up once.
NO_RESTART_NEEDED = ("segmenter", "mask", "background", "privacy.placeholder_color", "privacy.start")


def changes_for_next_start(old: Config, new: Config) -> list[str]:
    """Keys (section.key) that differ between two configs and a running daemon does not apply."""
    changed = []
    for section in Config.model_fields:
        if section in NO_RESTART_NEEDED:
            continue
        before, after = getattr(old, section), getattr(new, section)
        if not isinstance(before, BaseModel):  # a top-level key such as log_level
            if before != after:
                changed.append(section)
            continue
        for key in type(before).model_fields:
            name = f"{section}.{key}"
            if name not in NO_RESTART_NEEDED and getattr(before, key) != getattr(after, key):
                changed.append(name)
    return changed


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "privacycam" / "config.yaml"


def find_config_path(explicit: str | os.PathLike | None) -> Path | None:
    if explicit is not None:
        return Path(explicit)
    user = user_config_path()
    return user if user.is_file() else None


def load_config(explicit: str | os.PathLike | None = None) -> tuple[Config, Path | None]:
    """Load and validate; returns the config and the file it came from (None: defaults)."""
    path = find_config_path(explicit)
    if path is None:
        return Config(), None
    return parse_config_text(_read_text(path), str(path), base_dir=path.parent), path


# Bounds on what a config file may make the parser do. The documented file is ~6 KB,
# 3 levels deep, with no aliases; these leave room for any real config while a
# hostile one (an alias "billion laughs", 5000 nested brackets, a 5000-digit number)
# is refused in milliseconds instead of hanging the CLI or a reload for minutes.
MAX_CONFIG_BYTES = 64 * 1024
MAX_YAML_DEPTH = 16
MAX_YAML_ALIASES = 64
MAX_YAML_VALUES = 10_000  # scalars, lists and mappings, counting each alias as the block it repeats
MAX_INT_DIGITS = 32


class _YamlLimitError(yaml.composer.ComposerError):
    """YAML that is well formed but beyond what a config file needs (see the limits above)."""


def _read_text(path: Path) -> str:
    try:
        # O_NONBLOCK: a FIFO in place of the file must not block until someone writes to it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", "give an existing file to --config") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc.strerror})", "check the file") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"config file {path} is not a regular file", "give a YAML file to --config")
        try:
            data = file.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read ({exc.strerror})", "check the file") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB", "give the PrivacyCam config file"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason})", "save it as UTF-8") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping.

    PyYAML keeps the last value without a word (no option changes that), so a
    second `mask:` block added at the end of the file would silently drop the
    first one's settings.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            # plain keys only: a merge key (<<) may be overridden on purpose
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_scalar(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice in the same section", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


class _BoundedLoader(_UniqueKeyLoader):
    """Refuses, while composing, YAML that nests too deep or expands too far through aliases.

    PyYAML has no such limits (its composer recurses per level, and an alias is a
    reference, so 9 aliases of 9 aliases of ... are a tiny file that validates and
    prints as billions of values). Counting here, before anything is constructed,
    keeps every later step (construction, validation, error messages) small.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._expanded: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _YamlLimitError(None, None, f"more than {MAX_YAML_ALIASES} aliases (*name)", mark)
            node = super().compose_node(parent, index)
            if id(node) not in self._expanded:
                raise _YamlLimitError(None, None, "an alias (*name) refers to the block it is in", mark)
            return node
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlLimitError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        expanded = 1 + sum(self._expanded[id(child)] for child in _children(node))
        if expanded > MAX_YAML_VALUES:
            raise _YamlLimitError(
                None, None, f"expands to more than {MAX_YAML_VALUES} values through aliases (*name)", mark
            )
        self._expanded[id(node)] = expanded
        return node

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        # Python refuses to convert more than 4300 digits (ValueError); no setting needs 32.
        if len(node.value) > MAX_INT_DIGITS:
            raise _YamlLimitError(None, None, f"a number with more than {MAX_INT_DIGITS} digits", node.start_mark)
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def parse_config_text(text: str, origin: str = "config", base_dir: Path | None = None) -> Config:
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{origin}: larger than {MAX_CONFIG_BYTES // 1024} KiB", "give the PrivacyCam config file")
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        if isinstance(exc, _YamlLimitError):
            raise ConfigError(
                f"{origin}: YAML refused{where}: {problem}",
                "write the settings out plainly, as in config/privacycam.yaml",
            ) from None
        raise ConfigError(f"{origin}: broken YAML{where}: {problem}", "fix the YAML syntax there") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin}: the top level must be a mapping of sections (camera:, background:, ...)",
            "see config/privacycam.yaml for the layout",
        )
    if base_dir is not None:
        _resolve_relative_paths(data, base_dir)
    return _validate(data, origin)


# Paths in a config file are relative to the file's folder, not to the daemon's cwd.
_PATH_KEYS = (("background", "image"), ("segmenter", "model_path"), ("segmenter", "weights_path"))


def _resolve_relative_paths(data: dict, base_dir: Path) -> None:
    for section, key in _PATH_KEYS:
        values = data.get(section)
        if isinstance(values, dict) and isinstance(values.get(key), str):
            path = Path(values[key]).expanduser()
            values[key] = str(path if path.is_absolute() else base_dir / path)


def _validate(data: dict, origin: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin), "see config/privacycam.yaml for every key") from None
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. unhashable YAML keys
        raise ConfigError(f"{origin}: {exc}", "see config/privacycam.yaml for every key") from None


# Error messages show a bad value cut short, built only as far as shown.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 2, 4, 4, 4
_SHORT.maxstring, _SHORT.maxother = 60, 60
MAX_ERRORS_SHOWN = 5


def _printable(part: object) -> str:
    text = _SHORT.repr(part) if isinstance(part, str) and len(part) > 60 else str(part)
    return text if text.isprintable() and text else repr(text)


def _describe(exc: ValidationError, origin: str) -> str:
    errors = exc.errors(include_url=False)
    parts = []
    for error in errors[:MAX_ERRORS_SHOWN]:
        key = ".".join(_printable(p) for p in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown key")
            continue
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        shown = "" if isinstance(value, dict) or value is None else f" (got {_SHORT.repr(value)})"
        parts.append(f"{key}: {message}{shown}")
    if len(errors) > MAX_ERRORS_SHOWN:
        parts.append(f"and {len(errors) - MAX_ERRORS_SHOWN} more problems")
    return f"{origin}: " + "; ".join(parts)
