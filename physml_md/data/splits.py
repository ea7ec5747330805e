"""Split a dataset into training, validation and test indices (modelforge's strategy names and semantics):
``first_come_first_serve_strategy`` (in order), ``random_splitting_strategy``, ``random_record_splitting_strategy``
(a record, e.g. all conformations of one molecule, is drawn as a whole; the fractions apply to records).

Random strategies draw the test set first, from all items, with ``test_seed``; ``seed`` then splits the rest, so
changing ``seed`` never changes the test set. Sizes: ``floor(fraction * n)`` each, the left-over items one each to
training, validation, test (``torch.utils.data.random_split``'s rule), adding up to ``n``.
"""

from __future__ import annotations

import math
import numbers
from typing import Dict, Hashable, List, Sequence, Tuple, Union

import numpy as np

FIRST_COME_FIRST_SERVE = "first_come_first_serve_strategy"
RANDOM = "random_splitting_strategy"
RANDOM_RECORD = "random_record_splitting_strategy"
STRATEGIES = (FIRST_COME_FIRST_SERVE, RANDOM, RANDOM_RECORD)

DEFAULT_DATA_SPLIT = (0.8, 0.1, 0.1)
_NAMES = ("train", "validation", "test")


def _check_data_split(data_split: Sequence[float]) -> Tuple[float, float, float]:
    values = list(data_split) if isinstance(data_split, (list, tuple)) else None
    if (
        values is None
        or len(values) != 3
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
        or not all(math.isfinite(float(v)) and float(v) >= 0.0 for v in values)
    ):
        raise ValueError(
            f"data_split must be three non-negative fractions (train, validation, test), got {data_split!r}; "
            "for example [0.8, 0.1, 0.1]"
        )
    total = float(sum(values))
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"data_split {list(data_split)} sums to {total:g}; the three fractions must add up to 1")
    return float(values[0]), float(values[1]), float(values[2])


def split_sizes(n: int, data_split: Sequence[float] = DEFAULT_DATA_SPLIT) -> Tuple[int, int, int]:
    """Sizes (train, validation, test) of ``n`` items for ``data_split``; they add up to ``n``."""
    fractions = _check_data_split(data_split)
    sizes = [int(math.floor(f * n + 1e-9)) for f in fractions]
    for i in range(n - sum(sizes)):
        sizes[i % 3] += 1
    return sizes[0], sizes[1], sizes[2]


def _check_seed(seed: int, name: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


def _random_split(n: int, sizes: Tuple[int, int, int], seed: int, test_seed: int) -> List[List[int]]:
    """Groups 0..n-1 into (train, validation, test): test drawn with test_seed first, the rest with seed."""
    n_train, _, n_test = sizes
    test = np.random.default_rng(test_seed).permutation(n)[:n_test]
    rest = np.setdiff1d(np.arange(n), test)  # sorted: depends on the test set only
    order = rest[np.random.default_rng(seed).permutation(len(rest))]
    return [order[:n_train].tolist(), order[n_train:].tolist(), test.tolist()]


def record_label(atoms, key: str, index: int) -> Union[str, int]:
    """The record of one structure for ``random_record_splitting_strategy``: ``atoms.info[key]`` (a string or an
    integer), else its chemical formula. ``index`` names the structure in the error."""
    record = atoms.info.get(key)
    if record is None:
        record = atoms.get_chemical_formula()
    if not isinstance(record, (str, numbers.Integral)) or isinstance(record, bool):
        raise ValueError(
            f"source structure {index}: info[{key!r}] is {record!r}; record labels must be strings or integers"
        )
    return record if isinstance(record, str) else int(record)


def check_strategy(name: str, data_split: Sequence[float], seed: int, test_seed: int) -> None:
    """Raise the ValueError ``split_indices`` would raise for these arguments whatever the data."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown splitting strategy {name!r}; valid names: {', '.join(STRATEGIES)}")
    _check_data_split(data_split)
    _check_seed(seed, "seed")
    _check_seed(test_seed, "test_seed")


def split_indices(
    n_or_records: Union[int, Sequence[Hashable]],
    name: str,
    data_split: Sequence[float] = DEFAULT_DATA_SPLIT,
    seed: int = 42,
    test_seed: int = 42,
) -> Tuple[List[int], List[int], List[int]]:
    """Indices (train, validation, test) of the structures, each list sorted ascending.

    ``n_or_records`` is the number of structures, or one hashable record label per structure (required by
    ``random_record_splitting_strategy``; the other strategies only use its length). ``name`` is one of
    ``STRATEGIES``; ``data_split`` the fractions (train, validation, test), of structures or of records.
    An empty training split is a ValueError.
    """
    check_strategy(name, data_split, seed, test_seed)
    seed, test_seed = int(seed), int(test_seed)
    if isinstance(n_or_records, numbers.Integral) and not isinstance(n_or_records, bool):
        if name == RANDOM_RECORD:
            raise ValueError(
                f"{RANDOM_RECORD} needs the record label of every structure, not just their number "
                f"({n_or_records}); pass a list of labels, or use {RANDOM}"
            )
        n, records = int(n_or_records), None
        if n < 0:
            raise ValueError(f"the number of structures must be >= 0, got {n}")
    else:
        records = list(n_or_records)
        n = len(records)

    if name == RANDOM_RECORD:
        groups: Dict[Hashable, List[int]] = {}
        for index, record in enumerate(records):
            groups.setdefault(record, []).append(index)
        labels = list(groups)  # in order of first appearance
        sizes = split_sizes(len(labels), data_split)
        what = f"{len(labels)} records ({n} structures)"
        parts = _random_split(len(labels), sizes, seed, test_seed)
        result = [sorted(i for r in part for i in groups[labels[r]]) for part in parts]
    else:
        sizes = split_sizes(n, data_split)
        what = f"{n} structures"
        if name == FIRST_COME_FIRST_SERVE:
            n_train, n_val, _ = sizes
            result = [list(range(n_train)), list(range(n_train, n_train + n_val)), list(range(n_train + n_val, n))]
        else:
            result = [sorted(part) for part in _random_split(n, sizes, seed, test_seed)]

    if not result[0]:
        counts = ", ".join(f"{label} {size}" for label, size in zip(_NAMES, sizes))
        raise ValueError(
            f"{name} with data_split {list(data_split)} leaves the training split empty: {what} give {counts}; "
            "give more data or a larger training fraction"
        )
    return result[0], result[1], result[2]
