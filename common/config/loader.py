"""Load YAML into typed, validated config objects; every error names the file and key path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message is meant for the user, not a traceback."""


class StrictModel(BaseModel):
    """Base of every config object: unknown keys are errors, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _printable(text: str) -> str:
    """`text` with control characters and line breaks escaped: one problem stays on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def key_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            text = str(item)
            shown = text if text and text == text.strip() else repr(text)  # an empty or space-padded key stays visible
            parts.append(("." if parts else "") + shown)
    return "".join(parts) or "<top level>"


def describe_error(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; allowed keys are listed in the documented example)"
    if kind == "missing":
        return "required value is missing"
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    got = error.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    return f"expected {error['msg'].removeprefix('Input should be ')}, got {shown}"


def format_validation_error(source: str, err: ValidationError) -> str:
    """One line per problem: `<file>: <key.path>: <what was expected>`."""
    lines = [_printable(f"{source}: {key_path(e['loc'])}: {describe_error(e)}") for e in err.errors()]
    return "invalid configuration\n  " + "\n  ".join(lines)


def parse_config(data: Any, model: type[ConfigT], source: str) -> ConfigT:
    """Validate already-parsed YAML data against `model`; `source` names the file in errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: <top level>: expected a mapping of keys, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err)) from None


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file, turning I/O and syntax errors into a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read configuration file ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save the file as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None


# Top-level keys naming a file that must exist when the YAML is read. Like every relative path in a
# YAML (root, cache_dir, outputs_dir, security, simulation.site_configs), a relative one is relative
# to the YAML's folder - never to the working directory, which differs between a real federation's
# processes and the simulation engine's.
REFERENCED_FILE_KEYS = ("schema_file",)


def absolute_file_paths(data: Any, config_path: str | Path) -> Any:
    """`data` with the relative paths of REFERENCED_FILE_KEYS made absolute against the folder of
    `config_path` (for loading, and for copies of the YAML written elsewhere); `data` itself when
    there is nothing to change."""
    if not isinstance(data, dict):
        return data
    folder = Path(config_path).resolve().parent
    fixed = {
        key: str(folder / data[key])
        for key in REFERENCED_FILE_KEYS
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute()
    }
    return {**data, **fixed} if fixed else data


def check_referenced_files(data: Any, config_path: str | Path) -> None:
    """Raise ConfigError naming the YAML, the key and the path tried for a referenced file that is
    not there (the file itself is read later, by whoever needs it)."""
    for key in REFERENCED_FILE_KEYS:
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, str) and not Path(value).is_file():
            raise ConfigError(
                _printable(
                    f"{config_path}: {key}: {value} is not a readable file (a relative path is relative to this YAML's folder)"
                )
            )


def load_config(path: str | Path, model: type[ConfigT]) -> ConfigT:
    """Read and validate one YAML file into `model`; its REFERENCED_FILE_KEYS come back absolute."""
    data = absolute_file_paths(read_yaml(path), path)
    check_referenced_files(data, path)
    return parse_config(data, model, str(path))


def bundled_path(name: str) -> Path:
    """Path of a YAML file shipped in configs/ (e.g. 'schema.yaml', 'presets/cpu-small.yaml')."""
    root = resources.files("stsfl.configs")
    path = Path(str(root.joinpath(name)))
    if not path.is_file():
        raise ConfigError(f"no bundled configuration named {name!r} under {root}")
    return path
