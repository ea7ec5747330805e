"""The configuration reference (Markdown), generated from the dataclasses of ``physml_md.training.config``.

``config_reference()`` writes one section per TOML table with a row per key: its type and allowed values (read
from the key's validator, or from module constants such as ``MODEL_NAMES`` and ``LR_SCHEDULERS`` that the
validators were built from), its default (from a default ``Config()``, so a sub-table's own defaults show, e.g.
``data.train.batch_size``) and its description (the ``help`` given to ``_spec`` beside the field; the
``[trainer]`` keys from ``_TRAINER_HELP``). Section texts are the dataclass docstrings. Nothing is retyped here,
so the reference cannot drift from the code: ``docs/generate.py`` writes it to ``docs/configuration.md`` and
``tests/test_docs.py`` checks the committed file against it.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from typing import Any, Callable, Iterator, List, Tuple

from physml_md.training import config as C
from physml_md.units import INTERNAL_UNITS

__all__ = ["config_reference", "config_sections", "config_keys", "is_config_key"]

TRAINER = "trainer"
_CHECKPOINT = "checkpoint"
_CALLBACKS = "callbacks"


# ---------------------------------------------------------------------------------------------- sections
def config_sections() -> List[Tuple[str, type, Any]]:
    """``(dotted table name, dataclass, its default instance)`` of every table, parents before children."""
    out: List[Tuple[str, type, Any]] = []

    def walk(prefix: str, instance: Any) -> None:
        out.append((prefix, type(instance), instance))
        for f in dataclasses.fields(instance):
            value = getattr(instance, f.name)
            if dataclasses.is_dataclass(value):
                walk(f"{prefix}.{f.name}", value)

    defaults = C.Config()
    for f in dataclasses.fields(defaults):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            walk(f.name, value)
    return out


def _leaf_fields(cls: type, instance: Any) -> Iterator[dataclasses.Field]:
    for f in dataclasses.fields(cls):
        if not dataclasses.is_dataclass(getattr(instance, f.name)):
            yield f


def config_keys() -> List[str]:
    """Every dotted key of the dataclass sections (``model.name``, ``data.train.batch_size``, ...) and every
    table name (``data.train``), plus the ``[trainer]`` keys we set or treat specially."""
    keys: List[str] = []
    for section, cls, instance in config_sections():
        keys.append(section)
        keys += [f"{section}.{f.name}" for f in _leaf_fields(cls, instance)]
    keys.append(TRAINER)
    keys += [f"{TRAINER}.{name}" for name in C._TRAINER_HELP]
    return keys


def is_config_key(key: str) -> bool:
    """True when ``key`` (dotted) names a key or table that a configuration may set: a dataclass field or table,
    a ``lightning.Trainer`` argument under ``trainer``, a ``ModelCheckpoint`` argument under
    ``trainer.checkpoint``, or ``trainer.callbacks`` and its ``class_path``/``init_args``."""
    if key in config_keys():
        return True
    parts = key.split(".")
    if parts[0] != TRAINER or len(parts) < 2:
        return False
    if len(parts) == 2:
        return parts[1] in C._parameters("trainer")
    return len(parts) == 3 and parts[1] == _CHECKPOINT and parts[2] in C._parameters("checkpoint")


# ---------------------------------------------------------------------------------------------- validators
def _toml(value: Any) -> str:
    """``value`` written as in a TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def _code(value: Any) -> str:
    return f"`{_toml(value)}`"


def _default(value: Any) -> str:
    return "unset" if value is None else _code(value)


def _closure(check: Callable) -> dict:
    return inspect.getclosurevars(check).nonlocals


def _number_limits(minimum: Any = None, positive: bool = False, below: Any = None) -> str:
    limits = []
    if positive:
        limits.append("> 0")
    elif minimum is not None:
        limits.append(f"≥ {minimum:g}")
    if below is not None:
        limits.append(f"< {below:g}")
    return " " + ", ".join(limits) if limits else ""


def describe_check(check: Callable) -> str:
    """The type, limits and allowed values that the validator ``check`` accepts, in words."""
    plain = {
        C._bool: "boolean",
        C._str: "string",
        C._path: "path",
        C._index: "ASE index (string or integer)",
        C._pbc: "boolean or 3 booleans",
        C._cell: f"3×3 numbers ({INTERNAL_UNITS['length']})",
        C._num_workers: f"integer ≥ 0 or {_code('all')}",
        C._data_split: "3 numbers ≥ 0 that sum to 1",
        C._components: "list of loss components",
        C._length: f"length > 0 ({INTERNAL_UNITS['length']})",
    }
    if check in plain:
        return plain[check]
    kind = check.__qualname__.split(".<locals>")[0]
    free = _closure(check)
    if kind == "_choice":
        return "one of " + ", ".join(_code(option) for option in free["options"])
    if kind == "_optional":
        return describe_check(free["inner"]) + ", or null"
    if kind == "_int":
        return "integer" + _number_limits(free.get("minimum"))
    if kind == "_float":
        return "number" + _number_limits(free.get("minimum"), free.get("positive", False), free.get("below"))
    if kind == "_quantity":
        return f"{free['kind']} ≥ 0 ({INTERNAL_UNITS[free['kind']]})"
    if kind == "_table_of":
        return "table: loss component → " + describe_check(free["inner"])
    raise ValueError(f"config_reference cannot describe the validator {check.__qualname__}; teach describe_check")


# ---------------------------------------------------------------------------------------------- markdown
def _markdown(text: str) -> str:
    """A docstring or help text as one Markdown paragraph (RST ``code`` -> Markdown `code`)."""
    return re.sub(r"\s+", " ", inspect.cleandoc(text).replace("``", "`")).strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(rows: List[Tuple[str, str, str, str]]) -> List[str]:
    lines = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(_cell(part) for part in row) + " |" for row in rows]
    return lines


def _help(f: dataclasses.Field, where: str) -> str:
    text = f.metadata.get("help", "")
    if not text:
        raise ValueError(f"{where} has no help: give _spec(..., help='...') in physml_md/training/config.py")
    return _markdown(text)


def _section(name: str, cls: type, instance: Any) -> List[str]:
    lines = [f"## `[{name}]`", "", _markdown(cls.__doc__ or ""), ""]
    rows = []
    uses_components = False
    leaves = list(_leaf_fields(cls, instance))
    for f in leaves:
        check = f.metadata["check"]
        uses_components |= check is C._components or "_table_of" in check.__qualname__
        rows.append((f"`{f.name}`", describe_check(check), _default(getattr(instance, f.name)), _help(f, name)))
    lines += _table(rows)
    tables = [f"`[{name}.{f.name}]`" for f in dataclasses.fields(cls) if f not in leaves]
    if tables:
        lines += ["", "Sub-tables: " + ", ".join(tables) + "."]
    if uses_components:
        lines += ["", "Loss components: " + ", ".join(f"`{name}`" for name in C.LOSS_COMPONENTS) + "."]
    return lines + [""]


def _trainer_help(key: str) -> str:
    if key not in C._TRAINER_HELP:
        raise ValueError(f"trainer.{key} has no help: add it to _TRAINER_HELP in physml_md/training/config.py")
    return _markdown(C._TRAINER_HELP[key])


def _trainer_sections(defaults: C.Config) -> List[str]:
    argument = "`lightning.Trainer` argument"
    rows = [(f"`{key}`", argument, _default(value), _trainer_help(key)) for key, value in C._TRAINER_DEFAULTS.items()]
    precisions = ", ".join(_code(p) for p in C._PRECISIONS)
    precision = _code(C._PRECISION_OF_DTYPE[defaults.model.dtype])
    rows.append(("`precision`", f"one of {precisions}", precision, _trainer_help("precision")))
    rows.append(("`inference_mode`", _code(False), _code(False), _trainer_help("inference_mode")))
    rows.append((f"`{_CHECKPOINT}`", "table", f"see `[{TRAINER}.{_CHECKPOINT}]`", _trainer_help(_CHECKPOINT)))
    rows.append((f"`{_CALLBACKS}`", "list of tables", _code([]), _trainer_help(_CALLBACKS)))
    lines = [f"## `[{TRAINER}]`", "", _markdown(C.trainer_kwargs.__doc__ or ""), ""]
    lines += _table(rows)
    lines += [
        "",
        "Any other keyword argument of `lightning.Trainer` is passed through unchanged; the names are checked "
        "against the installed Lightning's signature.",
        "",
    ]

    rows = [("`monitor`", "string", "unset", _trainer_help(f"{_CHECKPOINT}.monitor"))]
    rows += [
        (f"`{key}`", "`ModelCheckpoint` argument", _default(value), _trainer_help(f"{_CHECKPOINT}.{key}"))
        for key, value in C._CHECKPOINT_DEFAULTS.items()
    ]
    lines += [f"## `[{TRAINER}.{_CHECKPOINT}]`", "", f"`[{TRAINER}.{_CHECKPOINT}]`: {_trainer_help(_CHECKPOINT)}.", ""]
    lines += _table(rows)
    lines += [
        "",
        "Any other argument of `lightning.pytorch.callbacks.ModelCheckpoint` is passed through unchanged.",
        "",
    ]

    rows = [
        ("`class_path`", "string", "required", _trainer_help(f"{_CALLBACKS}.class_path")),
        ("`init_args`", "table", _code({}), _trainer_help(f"{_CALLBACKS}.init_args")),
    ]
    lines += [f"## `[[{TRAINER}.{_CALLBACKS}]]`", "", f"`[[{TRAINER}.{_CALLBACKS}]]`: {_trainer_help(_CALLBACKS)}.", ""]
    lines += _table(rows)
    return lines + [""]


def config_reference() -> str:
    """The configuration reference as Markdown (what ``docs/configuration.md`` holds)."""
    defaults = C.Config()
    units = ", ".join(f"{kind}: {INTERNAL_UNITS[kind]}" for kind in ("length", "time", "temperature"))
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by docs/generate.py from physml_md/training/config.py; do not edit by hand. -->",
        "",
        f"A configuration is a TOML or YAML file (`{'`, `'.join(C.CONFIG_SUFFIXES)}`) with the tables below; "
        "`physml-md train CONFIG --set section.key=value` overrides single keys. " + _markdown(C.Config.__doc__ or ""),
        "",
        f'Quantities are a number in the internal unit ({units}) or a string with a unit, e.g. `"4.5 angstrom"`. '
        "`null` (YAML, or `--set key=null`) leaves an optional key unset; in TOML, leave the key out. Relative paths "
        "start at the config file. An unknown key is an error that names the closest valid key.",
        "",
    ]
    for name, cls, instance in config_sections():
        lines += _section(name, cls, instance)
    lines += _trainer_sections(defaults)
    return "\n".join(lines).rstrip("\n") + "\n"
