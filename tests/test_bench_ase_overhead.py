"""The ASE-overhead benchmark runs and its table adds up (tiny budget; timings themselves are not tested)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_ase_overhead  # noqa: E402


def test_small_run_reports_ratios_and_md_speed():
    result = bench_ase_overhead.run(sizes=(8,), repeats=2, md_steps=5, threads=1)
    (row,) = result["overhead"]
    assert row["atoms"] == 8 and row["ratio"] == row["ase"] / row["bare"] > 0
    for md in result["md"].values():
        assert md["ns_per_day"] == pytest.approx(0.5e-6 / (md["ms_per_step"] / 1e3 / 86400)) and md["ns_per_day"] > 0
    table = bench_ase_overhead.format_table(result)
    assert "ase/bare" in table and "ns/day" in table
