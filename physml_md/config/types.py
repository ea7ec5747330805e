"""The ground of the configuration schema: ``Section`` (the base of every table), value types pydantic lacks
(quantities with units, pbc, cells, ASE indices, paths, data splits; each with a ``Doc`` for the reference), and
``validate``: one ``ConfigError`` naming the dotted keys. A validator writes ``{key}`` where the dotted key goes
(``validate`` fills it in); a ``ConfigError`` raised inside one is a complete message, passed on unchanged.
"""

from __future__ import annotations

import difflib
import math
import os
import types
from dataclasses import dataclass
from typing import Annotated, Any, List, Mapping, Sequence, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

KEY = "{key}"  # stands for the dotted key in a validator's message
# what a loss may compare (modelforge's names) -> the data label it needs (data.<field>) and whether it needs
# model.charges; physml_md.training.losses defines how each is compared
LOSS_COMPONENT_NEEDS = {
    "per_system_energy": ("y_energy", False),
    "per_atom_force": ("y_forces", False),
    "per_system_stress": ("y_stress", False),
    "per_system_dipole_moment": ("y_dipole", True),
    "per_system_total_charge": (None, True),
    "per_atom_charge": ("y_charges", True),
}
LOSS_COMPONENTS = tuple(LOSS_COMPONENT_NEEDS)


class ConfigError(ValueError):
    """A configuration problem; the message names the key, the problem and the fix."""


@dataclass(frozen=True)
class Doc:
    """How the configuration reference describes a type; ``kind``: a quantity's kind, whose internal unit
    (``physml_md.units.INTERNAL_UNITS``) the reference writes after the text."""

    text: str
    kind: str | None = None


def got(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def closest(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate most like ``name``; a dotted one is compared by whole and last part, and ranks a little
    below a direct key of the section (so 'modle' suggests 'model', not 'training.early_stopping.mode')."""
    best, best_score = None, 0.0
    lowered = str(name).lower()
    for candidate in candidates:
        leaf = candidate.rsplit(".", 1)[-1]
        score = max(
            difflib.SequenceMatcher(None, lowered, candidate.lower()).ratio(),
            difflib.SequenceMatcher(None, lowered, leaf.lower()).ratio(),
        )
        if "." in candidate:
            score *= 0.9
        if score > best_score:
            best, best_score = candidate, score
    return best if best_score >= 0.6 else None


def unknown_key(name: Any, candidates: Sequence[str], prefix: str = KEY) -> str:
    """ "unknown key 'prefix.name'; did you mean 'prefix.closest'?" (or the list of valid keys)."""

    def join(key: str) -> str:
        return f"{prefix}.{key}" if prefix else key

    shown = f"unknown key {join(str(name))!r}"
    suggestion = closest(name, candidates)
    if suggestion is not None:
        return f"{shown}; did you mean {join(suggestion)!r}?"
    where = f" in [{prefix}]" if prefix else ""
    return f"{shown}; valid keys{where}: {', '.join(c for c in candidates if '.' not in c)}"


def _quantity(kind: str, positive: bool):
    def check(value: Any) -> float:
        from physml_md.units import parse_quantity  # pint: not loaded by `physml-md --help` (cli/main.py's options)

        try:
            number = parse_quantity(value, kind, name=KEY)
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        if positive and not number > 0:
            raise ValueError(f"{KEY} must be a positive {kind}, got {value!r}")
        if not positive and not number >= 0:
            raise ValueError(f"{KEY} must not be negative, got {value!r}")
        return number

    return check


def _kind(kind: str, positive: bool):
    """A float that may carry units of ``kind`` ("0.5 fs"), in the internal unit; > 0 or ≥ 0."""
    text = f"{kind} {'>' if positive else '≥'} 0"
    return Annotated[float, BeforeValidator(_quantity(kind, positive)), Doc(text, kind)]


Length = _kind("length", True)
Temperature = _kind("temperature", False)
Time = _kind("time", False)
Force = _kind("force", True)
Frequency = _kind("frequency", True)


def _path(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{KEY} must be a file path (string), got {got(value)}")
    return value


Path = Annotated[str, BeforeValidator(_path), Doc("path")]
Name = Annotated[str, Field(min_length=1)]  # a metric or class name: not empty


def _index(value: Any) -> Union[str, int]:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{KEY} must be an ASE index string such as ':' or '-10:', got {got(value)}")
    if isinstance(value, str):
        from ase.io.formats import string2index

        try:
            selection = string2index(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{KEY}: {value!r} is not an index ({exc}); use a string like ':' or '-10:'") from None
        if not isinstance(selection, (int, slice)):
            raise ValueError(f"{KEY}: {value!r} is not an index; use a string like ':', '5' or '-10:'")
    return value


Index = Annotated[Union[str, int], BeforeValidator(_index), Doc("ASE index (string or integer)")]


def _pbc(value: Any) -> List[bool]:
    if isinstance(value, bool):
        return [value] * 3
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(isinstance(v, bool) for v in value):
        raise ValueError(f"{KEY} must be a list of 3 booleans such as [true, true, false], got {got(value)}")
    return list(value)


Pbc = Annotated[List[bool], BeforeValidator(_pbc), Doc("boolean or 3 booleans")]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cell(value: Any) -> List[List[float]]:
    rows = list(value) if isinstance(value, (list, tuple)) else None
    if rows is not None and len(rows) == 3 and all(_number(v) for v in rows):  # 3 lengths: an orthorhombic cell
        rows = [[float(v) if i == j else 0.0 for j in range(3)] for i, v in enumerate(rows)]
    shape_ok = rows is not None and len(rows) == 3 and all(isinstance(r, (list, tuple)) and len(r) == 3 for r in rows)
    if not (shape_ok and all(_number(v) for r in rows for v in r)):
        raise ValueError(
            f"{KEY} must be a 3x3 list of numbers (cell vectors as rows, angstrom) or 3 lengths, got {value!r}"
        )
    return [[float(v) for v in row] for row in rows]


Cell = Annotated[List[List[float]], BeforeValidator(_cell), Doc("3×3 numbers or 3 lengths", "length")]


def _num_workers(value: Any) -> int:
    if value == "all":
        return os.cpu_count() or 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{KEY} must be an integer >= 0 or the string 'all', got {got(value)}")
    return value


NumWorkers = Annotated[int, BeforeValidator(_num_workers), Doc('integer ≥ 0 or `"all"`')]


def _data_split(value: Any) -> List[float]:
    valid = isinstance(value, (list, tuple)) and len(value) == 3 and all(_number(v) and v >= 0 for v in value)
    if not valid:
        raise ValueError(f"{KEY} must be three non-negative fractions [train, validation, test], got {value!r}")
    if abs(sum(value) - 1.0) > 1e-6:
        raise ValueError(f"{KEY} = {list(value)} sums to {sum(value):.6g}; the three fractions must sum to 1")
    return [float(v) for v in value]


DataSplit = Annotated[List[float], BeforeValidator(_data_split), Doc("3 numbers ≥ 0 that sum to 1")]


# ---------------------------------------------------------------------------------------------- errors
class Section(BaseModel):
    """A table of the configuration: strict types (no "8" for 8), unknown keys refused, finite numbers; a table
    left empty in YAML (None) counts as empty."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=False)

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, raw: Any) -> Any:
        return {} if raw is None else raw


def section_keys(cls: type) -> List[str]:
    """Keys of a section as written in a file: its fields first, then the dotted keys of its sub-sections."""
    names, nested = [], []
    for name, info in cls.model_fields.items():
        key = info.alias or name
        names.append(key)
        sub = section_class(info.annotation)
        if sub is not None:
            nested += [f"{key}.{item}" for item in section_keys(sub)]
    return names + nested


def section_class(annotation: Any) -> type | None:
    """The section (model class) a field holds, optional (``Section | None``) or not; None for a plain value."""
    optional = get_origin(annotation) in (Union, types.UnionType)
    options = [a for a in get_args(annotation) if a is not type(None)] if optional else [annotation]
    single = options[0] if len(options) == 1 else None
    return single if isinstance(single, type) and issubclass(single, BaseModel) else None


def _section_at(cls: type, loc: Sequence[Any]) -> type | None:
    """The section class reached from ``cls`` along ``loc`` (field names and list indices), if any."""
    for part in loc:
        if isinstance(part, int):
            args = get_args(cls)
            cls = args[0] if args else None
            continue
        fields = {info.alias or name: info for name, info in cls.model_fields.items()} if section_class(cls) else {}
        if part not in fields:
            return None
        cls = section_class(fields[part].annotation) or fields[part].annotation
    return section_class(cls)


def _key(prefix: str, loc: Sequence[Any]) -> str:
    key = prefix
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _yaml_hint(value: Any) -> str:
    """A hint for numbers that YAML 1.1 reads as strings ("1e-3" needs a dot: "1.0e-3")."""
    try:
        float(value)
    except (TypeError, ValueError):
        return ""
    hint = "; write it as a number without quotes (YAML reads 1e-3 as a string: write 1.0e-3)"
    return hint if isinstance(value, str) else ""


_MESSAGES = {
    "int_type": "{key} must be an integer, got {got}",
    "float_type": "{key} must be a number, got {got}{hint}",
    "finite_number": "{key} must be finite, got {input}",
    "bool_type": "{key} must be true or false, got {got}",
    "string_type": "{key} must be a non-empty string, got {got}",
    "string_too_short": "{key} must be a non-empty string, got {got}",
    "greater_than_equal": "{key} must be >= {ge}, got {input}",
    "greater_than": "{key} must be > {gt}, got {input}",
    "less_than": "{key} must be < {lt}, got {input}",
    "less_than_equal": "{key} must be <= {le}, got {input}",
    "literal_error": "{key} must be one of {expected}, got {got}",
    "model_type": "{key} must be a table (mapping), got {got}",
    "dict_type": "{key} must be a table (mapping), got {got}",
    "list_type": "{key} must be a list, got {got}",
    "missing": "{key} is required",
}


def _message(error: dict, cls: type, prefix: str) -> str:
    loc = [part for part in error["loc"] if part != "[key]"]
    key = _key(prefix, loc)
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        return str(cause).replace(KEY, key) if isinstance(cause, Exception) else f"{key}: {error['msg']}"
    if kind == "extra_forbidden":
        section = _section_at(cls, loc[:-1])
        return unknown_key(loc[-1], section_keys(section) if section else [], _key(prefix, loc[:-1]))
    if kind in _MESSAGES:
        words = {**ctx, "key": key, "got": got(value), "input": value, "hint": _yaml_hint(value)}
        words["expected"] = str(ctx.get("expected", "")).replace(" or ", ", ")
        return _MESSAGES[kind].format(**words)
    return f"{key}: {error['msg']}"


def validate(cls: type, raw: Any, prefix: str = "") -> Any:
    """``cls.model_validate(raw)``, every problem reported in one ``ConfigError`` with a line per problem that
    names its dotted key (``prefix``: the dotted name of the section ``cls``)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix or 'the configuration'} must be a table (mapping), got {got(raw)}")
    try:
        return cls.model_validate(dict(raw))
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            message = _message(error, cls, prefix)
            if message not in messages:
                messages.append(message)
        raise ConfigError("\n".join(messages)) from None
