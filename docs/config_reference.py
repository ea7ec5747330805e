"""The configuration reference (Markdown), generated from the schema (``physml_md.config.schema``).

``config_reference()`` writes one section per TOML table with a row per key: its type, limits and allowed values
(read from the field's annotation and constraints), its default (from a default ``Config()``, so a sub-table's own
defaults show, e.g. ``data.train.batch_size``) and its description (``Field(description=...)``). Section texts are
the models' docstrings. Nothing is retyped here, so the reference cannot drift from the code:
``docs/generate.py`` writes it to ``docs/configuration.md`` and ``tests/test_docs.py`` checks the committed file.
"""

from __future__ import annotations

import inspect
import json
import re
import types
from typing import Annotated, Any, Iterator, List, Literal, Tuple, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

import physml_md.config.learning as schema_learning
from physml_md.config.load import CONFIG_SUFFIXES, Config
from physml_md.config.trainer import CallbackSpec, CheckpointConfig, TrainerConfig, lightning_parameters
from physml_md.config.types import LOSS_COMPONENTS, Doc, section_class
from physml_md.units import INTERNAL_UNITS

__all__ = ["config_reference", "config_sections", "config_keys", "is_config_key"]

# the [trainer] tables: a dict in Config, described by these models
TRAINER_SECTIONS = (
    ("trainer", TrainerConfig),
    ("trainer.checkpoint", CheckpointConfig),
    ("trainer.callbacks", CallbackSpec),
)


# ---------------------------------------------------------------------------------------------- sections
def _is_section(annotation: Any) -> bool:
    return section_class(annotation) is not None


def _key(name: str, info: FieldInfo) -> str:
    return info.alias or name


def _default_of(info: FieldInfo) -> Any:
    return info.get_default(call_default_factory=True)


def _table_default(info: FieldInfo) -> BaseModel:
    """A sub-table's default instance; an optional or required table's (``[learning]``) unvalidated defaults."""
    default = None if info.is_required() else _default_of(info)
    return default if isinstance(default, BaseModel) else section_class(info.annotation).model_construct()


def config_sections() -> List[Tuple[str, type, Any]]:
    """``(dotted table name, model class, its default instance)`` of every table, parents before children, [learning]
    last; the default instance of a sub-table is its parent's default (``data.train`` has its own batch size)."""
    out: List[Tuple[str, type, Any]] = []

    def walk(prefix: str, instance: BaseModel) -> None:
        out.append((prefix, type(instance), instance))
        for name, info in type(instance).model_fields.items():
            if _is_section(info.annotation):
                walk(f"{prefix}.{_key(name, info)}", _table_default(info))

    for name, info in Config.model_fields.items():
        if _is_section(info.annotation):
            walk(name, _table_default(info))
    out += [(name, cls, cls.model_construct()) for name, cls in TRAINER_SECTIONS]
    return sorted(out, key=lambda section: section[0].split(".")[0] == "learning")  # physml-md learn's tables last


def default_value(instance: BaseModel, field: str) -> Any:
    """The default of a key as a user sees it: set by the table's default instance, else the field's default
    (not what validation resolves it to, e.g. a monitor that follows training.monitor)."""
    if field in instance.model_fields_set:
        return getattr(instance, field)
    info = type(instance).model_fields[field]
    return None if info.is_required() else _default_of(info)


def leaf_fields(cls: type) -> Iterator[Tuple[str, FieldInfo]]:
    """``(attribute name, field)`` of the keys of a table that are not tables themselves."""
    for name, info in cls.model_fields.items():
        if not _is_section(info.annotation):
            yield name, info


def config_keys() -> List[str]:
    """Every dotted key (``model.name``, ``data.train.batch_size``, ...) and every table name (``data.train``)."""
    keys: List[str] = []
    for section, cls, _ in config_sections():
        keys.append(section)
        keys += [f"{section}.{_key(name, info)}" for name, info in leaf_fields(cls)]
    return keys


def is_config_key(key: str) -> bool:
    """True when ``key`` (dotted) names a key or table that a configuration may set: a schema field or table,
    a ``lightning.Trainer`` argument under ``trainer``, a ``ModelCheckpoint`` argument under
    ``trainer.checkpoint``."""
    if key in config_keys():
        return True
    parts = key.split(".")
    if parts[0] != "trainer" or len(parts) < 2:
        return False
    if len(parts) == 2:
        return parts[1] in lightning_parameters("trainer")
    return len(parts) == 3 and parts[1] == "checkpoint" and parts[2] in lightning_parameters("checkpoint")


# ---------------------------------------------------------------------------------------------- types
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


def _limits(constraints: List[Any]) -> str:
    signs = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    limits = []
    for constraint in constraints:
        if isinstance(constraint, annotated_types.BaseMetadata):
            limits += [
                f"{sign} {getattr(constraint, name):g}" for name, sign in signs.items() if hasattr(constraint, name)
            ]
    return " " + ", ".join(limits) if limits else ""


def describe(annotation: Any, constraints: List[Any] = ()) -> str:
    """The type, limits and allowed values of an annotation (with the field's constraints), in words."""
    constraints = list(constraints)
    if get_origin(annotation) is Annotated:
        for item in annotation.__metadata__:
            constraints += item.metadata if isinstance(item, FieldInfo) else [item]
        annotation = get_args(annotation)[0]
    docs = [item for item in constraints if isinstance(item, Doc)]
    if docs:
        return docs[0].text + (f" ({INTERNAL_UNITS[docs[0].kind]})" if docs[0].kind else "")
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return describe(inner[0] if len(inner) == 1 else Union[tuple(inner)], constraints) + ", or null"
    if origin is Literal:
        return "one of " + ", ".join(_code(option) for option in args)
    if origin in (list, List):
        if _is_section(args[0]):
            return "list of tables"
        return f"list of {describe(args[0])}s"
    if origin is dict:
        return f"table: {describe(args[0])} → {describe(args[1])}"
    named = {bool: "boolean", int: "integer", float: "number", str: "string", Any: "any value"}
    if annotation in named:
        return named[annotation] + _limits(constraints)
    raise ValueError(f"config_reference cannot describe {annotation!r}; teach describe()")


# ---------------------------------------------------------------------------------------------- markdown
def _markdown(text: str) -> str:
    """A docstring or description as one Markdown paragraph (RST ``code`` -> Markdown `code`)."""
    return re.sub(r"\s+", " ", inspect.cleandoc(text).replace("``", "`")).strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(info: FieldInfo, value: Any) -> str:
    if info.is_required():
        return "required"
    return "unset" if value is None else _code(value)


def _section(name: str, cls: type, instance: Any) -> List[str]:
    brackets = ("[[", "]]") if name == "trainer.callbacks" else ("[", "]")
    lines = [f"## `{brackets[0]}{name}{brackets[1]}`", "", _markdown(cls.__doc__ or ""), ""]
    lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    kinds = []
    for field, info in leaf_fields(cls):
        key = _key(field, info)
        if not info.description:
            raise ValueError(f"{name}.{key} has no description: give Field(..., description='...') in the schema")
        kinds.append(describe(info.annotation, info.metadata))
        row = (f"`{key}`", kinds[-1], _default(info, default_value(instance, field)), _markdown(info.description))
        lines.append("| " + " | ".join(_cell(part) for part in row) + " |")
    tables = [f"`[{name}.{_key(n, i)}]`" for n, i in cls.model_fields.items() if _is_section(i.annotation)]
    if name == "trainer":
        tables += ["`[[trainer.callbacks]]`"]
    if tables:
        lines += ["", "Sub-tables: " + ", ".join(tables) + "."]
    if any("loss component" in kind for kind in kinds):
        lines += ["", "Loss components: " + ", ".join(f"`{c}`" for c in LOSS_COMPONENTS) + "."]
    return lines + [""]


def config_reference() -> str:
    """The configuration reference as Markdown (what ``docs/configuration.md`` holds)."""
    units = ", ".join(f"{kind}: {INTERNAL_UNITS[kind]}" for kind in ("length", "time", "temperature"))
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by docs/generate.py from physml_md/training/schema*.py; do not edit by hand. -->",
        "",
        f"A configuration is a TOML or YAML file (`{'`, `'.join(CONFIG_SUFFIXES)}`) with the tables below; "
        "`physml-md train CONFIG --set section.key=value` overrides single keys. " + _markdown(Config.__doc__ or ""),
        "",
        f'Quantities are a number in the internal unit ({units}) or a string with a unit, e.g. `"4.5 angstrom"`. '
        "`null` (YAML, or `--set key=null`) leaves an optional key unset; in TOML, leave the key out. A relative path "
        "written in the config file starts at the file's folder, wherever the command runs; one given with `--set` "
        "starts at the working directory, as any path typed on a command line. An unknown key is an error that names "
        "the closest valid key.",
        "",
    ]
    for name, cls, instance in config_sections():
        if name == "learning":
            lines += ["# Active learning (`physml-md learn`)", "", _markdown(learning_doc()), ""]
        lines += _section(name, cls, instance)
    return "\n".join(lines).rstrip("\n") + "\n"


def learning_doc() -> str:
    """The paragraph that introduces the [learning] tables."""
    return " ".join(schema_learning.__doc__.split("\n\n")[1].split())
