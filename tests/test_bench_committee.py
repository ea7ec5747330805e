"""benchmarks/bench_committee.py on a tiny budget: it times a committee file against one member (the timings
themselves are not tested)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_committee  # noqa: E402


def test_tiny_run_gives_one_row_per_architecture_and_format():
    rows = bench_committee.run(("painn",), members=2, steps=2, warmup=1, rounds=1,
                               sizes={"features": 8, "n_interactions": 1, "n_rbf": 4})  # fmt: skip
    (row,) = rows
    assert (row["architecture"], row["format"], row["members"]) == ("painn", "torchscript", 2)
    assert row["member_ms"] > 0 and row["ratio"] == row["committee_ms"] / row["member_ms"]
    assert "2 members" in bench_committee.format_rows(rows, 1)


def test_with_loop_adds_the_unstacked_committee():
    rows = bench_committee.run(("tensornet",), members=2, steps=2, warmup=1, rounds=1, with_loop=True,
                               sizes={"features": 8, "n_interactions": 1, "n_rbf": 4})  # fmt: skip
    (row,) = rows
    assert row["loop_ms"] > 0 and row["loop_ratio"] == row["loop_ms"] / row["member_ms"]
    assert "members in a loop" in bench_committee.format_rows(rows, 1)
