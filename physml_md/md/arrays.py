"""Input checks for the plain numpy arrays the MD analysis reads, and the JSON form of its result dataclasses.

Shared by ``metrics``, ``structure`` and ``geometry``: each check raises one ValueError that names the argument,
what was wrong and, where there is one, the fix. Imports numpy and the standard library only.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Dict, Sequence, Union

import numpy as np

ArrayLike = Union[np.ndarray, Sequence[Any]]
PbcLike = Union[bool, Sequence[bool], None]  # one flag for all axes or one per axis


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays, numpy scalars and tuples turned into lists and Python numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


class ToDict:
    """Mixin for result dataclasses: ``to_dict`` gives the fields as JSON-serialisable values."""

    def to_dict(self) -> Dict[str, Any]:
        """The fields as JSON-serialisable values (lists and Python numbers)."""
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def short_list(indices: Sequence[int], limit: int = 10) -> str:
    """``[3, 17]``, or the first ``limit`` indices and how many more."""
    items = [int(i) for i in indices]
    if len(items) <= limit:
        return str(items)
    return f"[{', '.join(str(i) for i in items[:limit])}, ... and {len(items) - limit} more]"


def atom_array(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a float64 [n_atoms, 3] array (finiteness is not checked here)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{name} must have shape [n_atoms, 3], got {array.shape}")
    return array


def non_finite_atoms(array: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``array`` [N, 3] that hold a nan or an inf."""
    return np.nonzero(~np.isfinite(array).all(axis=1))[0]


def require_finite_atoms(array: np.ndarray, name: str) -> None:
    bad = non_finite_atoms(array)
    if bad.size:
        raise ValueError(
            f"{name} are not finite (nan or inf) on atoms {short_list(bad)}; use check_frame to detect a "
            "blown-up frame before measuring it"
        )


def positive(value: float, name: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def index_array(values: ArrayLike, width: int, name: str, n_atoms: int) -> np.ndarray:
    """``values`` as an int64 [M, width] array of distinct atom indices within range."""
    array = np.asarray(values)
    if array.size == 0:
        return np.zeros((0, width), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != width or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integer atom indices of shape [M, {width}], got {array.dtype} {array.shape}")
    out_of_range = np.nonzero(((array < 0) | (array >= n_atoms)).any(axis=1))[0]
    if out_of_range.size:
        row = int(out_of_range[0])
        raise ValueError(f"{name}[{row}] = {array[row].tolist()} refers to atoms outside 0..{n_atoms - 1}")
    repeated = np.zeros(len(array), dtype=bool)
    for first, second in itertools.combinations(range(width), 2):
        repeated |= array[:, first] == array[:, second]
    if repeated.any():
        row = int(np.argmax(repeated))
        raise ValueError(f"{name}[{row}] = {array[row].tolist()} repeats an atom")
    return array.astype(np.int64)
