"""benchmarks/bench_data.py on a tiny budget: every variant runs in its own process and the table lists it."""

import importlib
from pathlib import Path

import pytest

from physml_md.data.packed.folder import PackedFolder

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench_data(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("bench_data")


def test_tiny_run_measures_every_variant(bench_data, tmp_path):
    result = bench_data.run(
        [40, 80], steps=2, warmup=1, batch_size=4, workers=[0, 1], in_memory_max=40, pack_max=40, work_dir=tmp_path
    )
    row, linked = result["rows"]
    assert row["structures"] == 40 and row["pack"]["pack_s"] > 0 and row["pack"]["disk_mb"] > 0
    assert len(PackedFolder(tmp_path / "cu32-40.packed")) == 40
    # the neighbour lists are stored at the model's cut-off (read, not computed, by the workers)
    assert PackedFolder(tmp_path / "cu32-40.packed").manifest["neighbor_cutoff"] == result["neighbor_cutoff"] == 4.0
    assert not (tmp_path / "cu32-40.extxyz").exists()  # the source is removed after use
    for variant in (row["packed"]["0"], row["packed"]["1"], row["in_memory"], linked["packed"]["0"]):
        assert variant["timed_structures"] == 8  # 2 steps of 4
        assert variant["structures_per_s"] > 0 and variant["rss_mb"] > 0
    assert row["packed"]["1"]["worker_rss_mb"] > 0 and row["packed"]["0"]["worker_rss_mb"] == 0
    # 80 structures: the 40 packed ones twice, linked, read like any packed folder
    assert linked["linked_from"] == 40 and "pack" not in linked and "in_memory" not in linked
    doubled = PackedFolder(tmp_path / "cu32-80.packed", verify=True)
    assert len(doubled) == 80 and doubled.summary["n_structures"] == 80
    assert all((doubled.arrays(i)[k] == doubled.arrays(i + 40)[k]).all() for i in (0, 39) for k in ("positions",))
    table = bench_data.format_table(result)
    assert "packed, 1 worker(s)" in table and "in memory" in table and "linked chunks" in table
    assert len(table.splitlines()) == 1 + 5 + 3


def test_bad_budget_is_refused(bench_data):
    with pytest.raises(ValueError, match="steps must be >= 1"):
        bench_data.run([10], steps=0)
