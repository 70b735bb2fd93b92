"""Configuration: defaults from conf/defaults/*.yaml, a profile on top, then --set overrides.

Every key a stage reads exists in conf/defaults, so a typo in a profile or in `--set` is an
error naming the key instead of a setting that silently does nothing. Every numeric key has a
range, declared in the `ranges:` table of the defaults file that defines it, and the loaded
values are checked against it: a count of 0 is a one-line error, not a stage that divides by it.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from udfs.errors import VidlakeError

# Read through importlib.resources, so the conf travels inside spark-submit's --py-files zip too
# (cluster deploy mode has no checkout on the driver).
CONF_DIR = resources.files("conf")
DEFAULTS_DIR = CONF_DIR / "defaults"

# Sections whose keys are free-form (Spark confs, the generic format's column mapping, per-model
# entries): any key below them is accepted.
OPEN_SECTIONS = ("spark.conf", "models")
# Sections whose keys contain dots themselves.
FLAT_SECTIONS = ("spark.conf",)
# The top-level mapping of a defaults file that holds its numeric keys' ranges (not a section).
RANGES = "ranges"
_MISSING = object()


class ConfigError(VidlakeError):
    """A configuration key or value that vidlake cannot use."""


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric key: `min`/`max` are inclusive bounds, `above`/`below`
    exclusive ones, None no bound. A list value (a grid's [rows, cols]) has each number checked."""

    min: int | float | None = None
    max: int | float | None = None
    above: int | float | None = None
    below: int | float | None = None

    @classmethod
    def parse(cls, key: str, spec: Any, where: str) -> Range:
        """From a `ranges:` entry such as `{min: 1}` or `{above: 0, max: 1}`."""
        bounds = tuple(cls.__dataclass_fields__)
        if not isinstance(spec, Mapping) or not spec or set(spec) - set(bounds):
            raise ConfigError(f"{where}: the range of {key!r} must be a mapping of {', '.join(bounds)}, got {spec!r}")
        for bound, value in spec.items():
            if value is not None and not _is_number(value):
                raise ConfigError(f"{where}: the range of {key!r} has {bound} {value!r}, not a number")
        return cls(**spec)

    def holds(self, number: int | float) -> bool:
        return ((self.min is None or number >= self.min) and (self.max is None or number <= self.max)
                and (self.above is None or number > self.above) and (self.below is None or number < self.below))

    def __str__(self) -> str:
        words = {"min": "at least", "max": "at most", "above": "above", "below": "below"}
        return " and ".join(f"{words[b]} {getattr(self, b)}" for b in words if getattr(self, b) is not None)

    def check(self, key: str, value: Any) -> None:
        """ConfigError unless `value` is null, a number in range, or a list whose numbers are."""
        if value is None:
            return
        if isinstance(value, list):
            numbers = [v for v in value if _is_number(v)]
        elif _is_number(value):
            numbers = [value]
        else:
            raise ConfigError(f"configuration key {key!r} expects a number, got {value!r}")
        if not all(self.holds(n) for n in numbers):
            raise ConfigError(f"configuration key {key!r} must be {self}, got {value!r}")


class Config:
    """Nested settings with dotted access: `cfg.get("download.timeout_s")`."""

    def __init__(self, data: dict, profile: str, ranges: Mapping[str, Range] | None = None):
        self.data = data
        self.profile = profile
        self.ranges = dict(ranges or {})

    def get(self, key: str, default: Any = ...) -> Any:
        node: Any = self.data
        for part in _split_key(key):
            if not isinstance(node, Mapping) or part not in node:
                if default is not ...:
                    return default
                raise ConfigError(f"unknown configuration key {key!r}")
            node = node[part]
        return node

    def section(self, name: str) -> dict:
        """A plain copy of one section, to hand to udfs (which never see this class)."""
        value = self.get(name)
        if not isinstance(value, Mapping):
            raise ConfigError(f"configuration key {name!r} is a value, not a section")
        return copy.deepcopy(dict(value))

    def set(self, key: str, value: Any) -> None:
        """Override one key, checked like `--set`; a value out of range leaves the settings as they were."""
        before = copy.deepcopy(self.data)
        _set_checked(self.data, key, value)
        try:
            self.check_ranges()
        except ConfigError:
            self.data = before
            raise

    def check_ranges(self) -> None:
        """ConfigError naming the first key whose value is out of its declared range."""
        for key, valid in self.ranges.items():
            valid.check(key, self.get(key))


def load_config(profile: str = "local", overrides: Iterable[str] = ()) -> Config:
    """Defaults, then the profile (a name under conf/ or a YAML file path), then `key=value` overrides."""
    data: dict = {}
    ranges: dict[str, Range] = {}
    for path in defaults_files():
        defaults, declared = read_defaults(path)
        _merge(data, defaults, strict=False, where=str(path))
        ranges.update(declared)
    profile_path = _profile_path(profile)
    _merge(data, _read_yaml(profile_path), strict=True, where=str(profile_path))
    for item in overrides:
        key, value = parse_override(item)
        _set_checked(data, key, value)
    cfg = Config(data, profile, ranges)
    cfg.check_ranges()
    return cfg


def defaults_files() -> list[Traversable]:
    """conf/defaults/*.yaml, in the order they are merged."""
    return sorted(_yaml_files(DEFAULTS_DIR), key=lambda p: p.name)


def read_defaults(path: Path | Traversable) -> tuple[dict, dict[str, Range]]:
    """A defaults file's keys, and the ranges its `ranges:` table declares for them (each naming a
    value the same file defines, so a range sits beside its key's definition and documentation)."""
    data = _read_yaml(path)
    ranges = {}
    declared = data.pop(RANGES, None) or {}
    if not isinstance(declared, Mapping):
        raise ConfigError(f"{path}: {RANGES} must map dotted keys to ranges")
    for key, spec in declared.items():
        value = Config(data, "defaults").get(key, default=_MISSING)
        if value is _MISSING or isinstance(value, Mapping):
            raise ConfigError(f"{path}: a range is declared for {key!r}, which is not a value this file defines")
        ranges[key] = Range.parse(key, spec, str(path))
    return data, ranges


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` with the value parsed as YAML (`[127.0.0.1]` is a list, `5` an int)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key.strip()}: value {raw!r} is not valid YAML ({err})") from None
    return key.strip(), value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _yaml_files(folder: Traversable) -> list[Traversable]:
    return [p for p in folder.iterdir() if p.name.endswith(".yaml") and p.is_file()]


def _profile_path(profile: str) -> Path | Traversable:
    candidate = Path(profile)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ConfigError(f"conf file {profile!r} does not exist")
        return candidate
    named = CONF_DIR / f"{profile}.yaml"
    if not named.is_file():
        known = sorted(p.name.removesuffix(".yaml") for p in _yaml_files(CONF_DIR))
        raise ConfigError(f"unknown conf profile {profile!r}; profiles: {', '.join(known)}, or a .yaml path")
    return named


def _read_yaml(path: Path | Traversable) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded


def _is_open(key: str) -> bool:
    return any(key == s or key.startswith(s + ".") for s in OPEN_SECTIONS)


def _merge(base: dict, update: Mapping, strict: bool, where: str, prefix: str = "") -> None:
    for name, value in update.items():
        key = f"{prefix}{name}"
        if strict and name not in base and not _is_open(key) and not _is_open(prefix.rstrip(".")):
            raise ConfigError(f"{where}: unknown configuration key {key!r}")
        if isinstance(value, Mapping) and isinstance(base.get(name), Mapping):
            _merge(base[name], value, strict, where, prefix=f"{key}.")
        elif strict and name in base:
            base[name] = _checked_value(key, base[name], value)
        else:
            base[name] = copy.deepcopy(value)


def _split_key(key: str) -> list[str]:
    """Dotted key to path; below spark.conf the rest is one Spark conf name (`spark.executor.memory`)."""
    parts = key.split(".")
    for flat in FLAT_SECTIONS:
        depth = flat.count(".") + 1
        if parts[:depth] == flat.split(".") and len(parts) > depth:
            return [*parts[:depth], ".".join(parts[depth:])]
    return parts


def _set_checked(data: dict, key: str, value: Any) -> None:
    parts = _split_key(key)
    node = data
    for i, part in enumerate(parts[:-1]):
        here = ".".join(parts[: i + 1])
        if part not in node:
            if not _is_open(here) and not _is_open(".".join(parts[:i])):
                raise ConfigError(f"unknown configuration key {key!r} (no section {here!r})")
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"configuration key {here!r} is a value, so {key!r} cannot be set")
        node = node[part]
    leaf = parts[-1]
    if leaf in node:
        node[leaf] = _checked_value(key, node[leaf], value)
    elif _is_open(key.rpartition(".")[0]) or _is_open(key):
        node[leaf] = value
    else:
        raise ConfigError(f"unknown configuration key {key!r}")


def _checked_value(key: str, default: Any, value: Any) -> Any:
    """The value, if it has the default's kind; ints are accepted where floats are."""
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(value, bool) and (isinstance(default, bool) or default == "auto"):
            return value  # an auto|true|false switch (lake.delta_packages) takes YAML's true/false
    elif isinstance(default, float) and isinstance(value, (int, float)):
        return float(value)
    elif isinstance(default, str) and isinstance(value, (int, float)):
        return str(value)  # YAML reads `--set lake.root=2024` or a Spark conf of `4` as a number
    elif isinstance(default, (int, str, list, dict)) and isinstance(value, type(default)):
        return value
    expected = type(default).__name__
    raise ConfigError(f"configuration key {key!r} expects a {expected}, got {value!r}")
