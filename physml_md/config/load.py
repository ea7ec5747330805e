"""Training configuration: ``load_config`` (TOML or YAML, overrides, relative paths), ``config_from_dict`` (validate
once with ``physml_md.config.schema``), ``config_to_dict`` (plain types for ``torch.load(weights_only=True)``;
``config_from_dict(config_to_dict(c)) == c``)."""

from __future__ import annotations

import copy
import difflib
import importlib
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Union

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # python 3.10
    import tomli as tomllib

from physml_md.config.schema import Config
from physml_md.config.types import ConfigError, validate
from physml_md.data.readers import SUPPORTED_SUFFIXES

CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")
_TRAINER_SPECIAL = ("callbacks", "checkpoint")  # [trainer] keys that are ours, not lightning.Trainer arguments


def config_from_dict(raw: Mapping, *, require_files: bool = True) -> Config:
    """Validate a mapping into a ``Config``; ``require_files=False`` skips ``validate_sources`` (data passed as
    objects through the Python API)."""
    config = validate(Config, raw)
    if require_files:
        validate_sources(config)
    return config


def validate_sources(config: Config) -> None:
    """Check that the training data come from existing files of a supported type (``data.source`` or
    ``data.train.path``). ``config_from_dict`` calls it unless ``require_files=False``."""
    data = config.data
    if not data.has_files():
        raise ConfigError(
            "no training data: set data.source (one file split by data.splitting_strategy) or data.train.path"
        )
    for key, path in [("data.source", data.source)] + [
        (f"data.{name}.path", getattr(data, name).path) for name in ("train", "validation", "test", "predict")
    ]:
        if path is None or Path(path).is_dir():  # a folder: AtomsDataModule checks that it is a packed folder
            continue
        if Path(path).suffix.lower() not in SUPPORTED_SUFFIXES:
            raise ConfigError(
                f"{key} = {path!r}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)} or a packed "
                "folder (physml-md pack)"
            )
        if not Path(path).is_file():
            raise ConfigError(
                f"{key} = {path!r}: no such file; fix the path (a relative path written in the config file starts at "
                "its folder, one given with --set at the working directory)"
            )


def _plain(value: Any, key: str) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    raise ConfigError(
        f"{key} = {value!r} ({type(value).__name__}) cannot be stored in a checkpoint; use plain values "
        "(str, int, float, bool, list, table) or pass objects to the runner directly"
    )


def config_to_dict(config: Config) -> Dict[str, Any]:
    """The configuration as plain built-in types (str/int/float/bool/None/list/dict), keys as in a file."""
    return {name: _plain(value, name) for name, value in config.model_dump(by_alias=True).items()}


def trainer_kwargs(config: Config) -> Dict[str, Any]:
    """Keyword arguments for ``lightning.Trainer``: ``config.trainer`` without ``callbacks``/``checkpoint``,
    with ``inference_mode=False``."""
    kwargs = {k: copy.deepcopy(v) for k, v in config.trainer.items() if k not in _TRAINER_SPECIAL}
    kwargs["inference_mode"] = False
    return kwargs


def instantiate_callbacks(specs: List[Dict[str, Any]]) -> list:
    """Build Lightning callbacks from validated ``trainer.callbacks`` specs ``[{class_path, init_args}, ...]``."""
    import lightning.pytorch as pl

    callbacks = []
    for i, spec in enumerate(specs):
        item = f"trainer.callbacks[{i}]"
        module_name, _, class_name = spec["class_path"].rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"{item}.class_path = {spec['class_path']!r}: cannot import module {module_name!r} ({exc}); "
                "check the spelling or install the package"
            ) from None
        cls = getattr(module, class_name, None)
        if cls is None:
            close = difflib.get_close_matches(class_name, [n for n in dir(module) if not n.startswith("_")], n=1)
            hint = f"; did you mean '{module_name}.{close[0]}'?" if close else ""
            raise ConfigError(f"{item}.class_path: module {module_name!r} has no attribute {class_name!r}{hint}")
        if not (isinstance(cls, type) and issubclass(cls, pl.Callback)):
            raise ConfigError(f"{item}.class_path = {spec['class_path']!r} is not a lightning Callback class")
        try:
            callbacks.append(cls(**copy.deepcopy(spec.get("init_args", {}))))
        except Exception as exc:  # whatever the class raises, report it against the config key
            raise ConfigError(f"{item}: {class_name}(**init_args) failed: {exc}; check {item}.init_args") from exc
    return callbacks


def _nested(raw: Mapping, *keys: str) -> Any:
    for key in keys:
        if not isinstance(raw, Mapping):
            return None
        raw = raw.get(key)
    return raw


def _set_dotted(raw: Dict[str, Any], dotted: str, value: Any, override: str) -> None:
    parts = dotted.split(".")
    if not all(part.strip() for part in parts):
        raise ConfigError(f"override {override!r}: {dotted!r} is not a dotted key such as 'training.lr'")
    table = raw
    for depth, part in enumerate(parts[:-1]):
        part = part.strip()
        if part not in table:
            table[part] = {}
        elif not isinstance(table[part], dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"override {override!r}: {where!r} is a value, not a table")
        table = table[part]
    table[parts[-1].strip()] = value


def _parse_value(text: str) -> Any:
    """A TOML value when ``text`` is one ("3", "true", "[1, 2]", "'x'"), ``null`` -> None, else the string."""
    if text.strip() == "null":
        return None
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """Return a copy of ``raw`` with ``"section.key=value"`` overrides applied (``value`` read as a TOML value
    when possible, ``null`` as None, else kept as a string); missing tables on the way are created."""
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of 'section.key=value' strings, got the string {overrides!r}")
    result = copy.deepcopy(dict(raw))
    for override in overrides:
        if not isinstance(override, str) or "=" not in override:
            raise ConfigError(f"malformed override {override!r}: write 'section.key=value', e.g. 'training.lr=1e-4'")
        dotted, _, text = override.partition("=")
        _set_dotted(result, dotted.strip(), _parse_value(text.strip()), override)
    return result


def _read_file(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ConfigError(f"config file {str(path)!r}: unsupported suffix {suffix!r}; use .toml, .yaml or .yml")
    try:
        if suffix == ".toml":
            with open(path, "rb") as stream:
                raw = tomllib.load(stream)
        else:
            with open(path, encoding="utf-8") as stream:
                raw = yaml.safe_load(stream)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid {suffix[1:].upper()}: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table of sections, got {type(raw).__name__}")
    return raw


# (section, key) chains of the path-valued settings resolved by load_config
_PATH_KEYS = (
    ("data", "source"),
    ("data", "cache_dir"),
    ("data", "train", "path"),
    ("data", "validation", "path"),
    ("data", "test", "path"),
    ("data", "predict", "path"),
    ("trainer", "default_root_dir"),
    ("trainer", "checkpoint", "dirpath"),
    ("training", "md_validation", "structures"),
    ("learning", "structures"),
    ("learning", "test_data"),
)


def _resolve_paths(raw: Dict[str, Any], base: Path) -> None:
    for chain in _PATH_KEYS:
        table = _nested(raw, *chain[:-1])
        if isinstance(table, dict) and isinstance(table.get(chain[-1]), str):
            path = Path(table[chain[-1]]).expanduser()
            table[chain[-1]] = str(path if path.is_absolute() else (base / path).resolve())


def load_config(path: Union[str, os.PathLike], overrides: Sequence[str] = (), *, require_files: bool = True) -> Config:
    """Read a ``.toml``/``.yaml``/``.yml`` configuration, apply ``overrides`` and validate it. Relative paths
    (``_PATH_KEYS``) written in the file start at its directory, those in ``overrides`` at the working directory."""
    path = Path(path)
    raw = _read_file(path)
    _resolve_paths(raw, path.resolve().parent)
    raw = apply_overrides(raw, overrides)
    _resolve_paths(raw, Path.cwd())
    return config_from_dict(raw, require_files=require_files)
