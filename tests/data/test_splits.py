import warnings

import pytest
import torch
from torch.utils.data import random_split

from physml_md.data.splits import STRATEGIES, split_indices, split_sizes


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 7, 10, 11, 99, 1000])
@pytest.mark.parametrize("data_split", [(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (1 / 3, 1 / 3, 1 / 3), (0.5, 0.5, 0.0)])
def test_sizes_add_up_and_follow_torch_random_split(n, data_split):
    sizes = split_sizes(n, data_split)
    assert sum(sizes) == n
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Length of split at index", UserWarning)  # torch's empty-split note
        parts = random_split(range(n), list(data_split), torch.Generator().manual_seed(0))
    reference = [len(part) for part in parts]
    assert list(sizes) == reference


def _check_partition(parts, n):
    flat = [i for part in parts for i in part]
    assert sorted(flat) == list(range(n)), "the three splits must partition the structures"
    for part in parts:
        assert part == sorted(part)


def test_first_come_first_serve_keeps_the_order():
    train, val, test = split_indices(10, "first_come_first_serve_strategy", (0.6, 0.3, 0.1), seed=1, test_seed=2)
    assert (train, val, test) == (list(range(6)), [6, 7, 8], [9])


def test_random_split_is_a_reproducible_partition():
    parts = split_indices(50, "random_splitting_strategy", (0.8, 0.1, 0.1), seed=3, test_seed=4)
    _check_partition(parts, 50)
    assert [len(p) for p in parts] == [40, 5, 5]
    assert parts != (list(range(40)), list(range(40, 45)), list(range(45, 50))), "not random"
    assert split_indices(50, "random_splitting_strategy", (0.8, 0.1, 0.1), seed=3, test_seed=4) == parts
    # a list of labels is only counted by this strategy
    assert split_indices(["a"] * 50, "random_splitting_strategy", (0.8, 0.1, 0.1), seed=3, test_seed=4) == parts


@pytest.mark.parametrize("records", [False, True])
def test_changing_seed_keeps_the_test_set(records):
    name = "random_record_splitting_strategy" if records else "random_splitting_strategy"
    items = [f"mol{i // 3}" for i in range(90)] if records else 90
    train1, val1, test1 = split_indices(items, name, (0.6, 0.2, 0.2), seed=1, test_seed=7)
    train2, val2, test2 = split_indices(items, name, (0.6, 0.2, 0.2), seed=2, test_seed=7)
    assert test1 == test2
    assert train1 != train2 and val1 != val2
    assert sorted(train1 + val1) == sorted(train2 + val2)
    _, _, test3 = split_indices(items, name, (0.6, 0.2, 0.2), seed=1, test_seed=8)
    assert test3 != test1


def test_record_split_keeps_records_together_and_splits_records():
    # 20 records of 1..4 conformations each, interleaved
    sizes = [1 + r % 4 for r in range(20)]
    records = [r for r in range(20) for _ in range(sizes[r])]
    records = records[::2] + records[1::2]
    parts = split_indices(records, "random_record_splitting_strategy", (0.7, 0.2, 0.1), seed=0, test_seed=1)
    _check_partition(parts, len(records))
    owners = [{records[i] for i in part} for part in parts]
    assert not (owners[0] & owners[1]) and not (owners[0] & owners[2]) and not (owners[1] & owners[2])
    assert [len(o) for o in owners] == [14, 4, 2], "fractions apply to records"


def test_formula_labels_work_as_records():
    records = ["H2O", "CH4", "H2O", "NH3", "CH4", "H2O", "C2H6", "CO2", "N2", "O2"]
    train, val, test = split_indices(records, "random_record_splitting_strategy", (0.5, 0.25, 0.25))
    _check_partition((train, val, test), len(records))
    # 7 distinct formulas: floor gives 3, 1, 1 records, the 2 left over go to train and validation
    assert [len({records[i] for i in part}) for part in (train, val, test)] == [4, 2, 1]


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown splitting strategy 'random'") as info:
        split_indices(10, "random")
    for name in STRATEGIES:
        assert name in str(info.value)


def test_empty_training_split_names_the_numbers():
    with pytest.raises(ValueError, match=r"training split empty: 4 structures give train 0, validation 2, test 2"):
        split_indices(4, "random_splitting_strategy", (0.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="training split empty: 0 structures"):
        split_indices(0, "first_come_first_serve_strategy")


@pytest.mark.parametrize(
    "data_split, message",
    [((0.8, 0.1), "three non-negative"), ((0.8, 0.3, 0.1), "sums to 1.2"), ((1.1, -0.1, 0.0), "non-negative")],
)
def test_bad_data_split(data_split, message):
    with pytest.raises(ValueError, match=message):
        split_indices(10, "random_splitting_strategy", data_split)


def test_record_strategy_needs_labels():
    with pytest.raises(ValueError, match="needs the record label of every structure"):
        split_indices(10, "random_record_splitting_strategy")
