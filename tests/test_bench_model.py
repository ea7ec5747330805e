"""benchmarks/bench_model.py on a tiny budget: what it measures and reports (timings themselves are not tested)."""

import sys
from pathlib import Path

import pytest

from physml_md.models import MODEL_NAMES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_model  # noqa: E402


def test_every_architecture_then_the_reference():
    assert bench_model.architectures() == [*MODEL_NAMES, bench_model.REFERENCE]
    assert bench_model.architectures(["painn"], reference=False) == ["painn"]
    with pytest.raises(ValueError, match="unknown architecture"):
        bench_model.architectures(["painn", "schnet"])


def test_small_run_measures_painn_beside_its_reference():
    rows = bench_model.run(sizes=(32,), dtypes=("float64",), archs=["painn"], repeats=1, threads=1)
    assert [row["arch"] for row in rows] == ["painn", bench_model.REFERENCE]
    for row in rows:
        assert (row["atoms"], row["dtype"], row["threads"], row["oom"]) == (32, "float64", 1, False)
        assert row["edges"] > 32 and row["ms"] > 0 and row["cpu_ms"] > 0 and row["peak_mb"] > 0
    optimised, reference = rows
    ((atoms, dtype, time_ratio, memory_ratio),) = bench_model.reference_ratios(rows)
    assert (atoms, dtype) == (32, "float64")
    assert time_ratio == optimised["ms"] / reference["ms"]
    assert memory_ratio == optimised["peak_mb"] / reference["peak_mb"]
    table = bench_model.format_table(rows).splitlines()
    assert table[-4].split()[-2:] == [f"{time_ratio:.3f}", f"{memory_ratio:.3f}"]
    assert bench_model.REFERENCE in table[-3] and "load average" in table[-1]


def test_a_configuration_that_does_not_fit_reports_out_of_memory():
    (row,) = bench_model.run(
        sizes=(32,), dtypes=("float32",), archs=["painn"], reference=False, repeats=1, threads=1, memory_limit_gb=1e-3
    )
    assert row["oom"] and row["ms"] is None
    assert "out of memory" in bench_model.format_table([row])
