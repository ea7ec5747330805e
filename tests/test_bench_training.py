"""benchmarks/bench_training.py on a tiny budget: both variants train the same weights; the table adds up."""

import importlib
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# a tiny float64 model, so that the two training paths can be compared to rounding; a clipping value that clips
TINY = [
    "model.dtype='float64'",
    "model.features=8",
    "model.n_interactions=1",
    "model.n_rbf=4",
    "data.train.batch_size=4",
    "trainer.gradient_clip_val=0.5",
]


@pytest.fixture
def bench_training(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as run_all.py does; the EpochTimer's class path needs it
    return importlib.import_module("bench_training")


def test_lightning_and_plain_loop_train_the_same_weights_and_table_adds_up(bench_training):
    threads = torch.get_num_threads()
    result = bench_training.run(structures=12, epochs=1, warmup=1, threads=1, overrides=TINY)
    assert torch.get_num_threads() == threads  # restored

    # 12 frames split 0.8 / 0.1 / 0.1; two epochs of three batches, with EMA, clipping and loss-weight mixing:
    # leaving any of them out of the plain loop gives differences of 4e-3 to 2e-2 (checked by hand)
    assert result["n_train"] == 10 and result["dtype"] == "float64"
    assert result["weight_difference"] is not None and result["weight_difference"] < 1e-10
    for key in ("lightning", "plain"):
        row = result[key]
        assert len(row["epoch_seconds"]) == 2 and row["epochs_timed"] == 1
        assert row["median_s"] == row["epoch_seconds"][1]  # the warm-up epoch is dropped
        assert row["per_s"] == pytest.approx(10 / row["median_s"])
    assert result["ratio"] == pytest.approx(result["plain"]["median_s"] / result["lightning"]["median_s"])

    table = bench_training.format_table(result).splitlines()
    lightning_row = next(line for line in table if line.startswith("physml-md train"))
    assert lightning_row.split()[-1] == f"{result['ratio']:.2f}"
    assert any(line.startswith("plain torch loop") and line.endswith(" 1.00") for line in table)
    assert any(f"machine threads {result['cpu_count']}" in line for line in table)
    assert sum("epochs (s, the first 1 not timed)" in line for line in table) == 2


def test_bad_arguments_are_named(bench_training):
    with pytest.raises(ValueError, match="warmup must be >= 0"):
        bench_training.run(structures=4, epochs=1, warmup=-1, threads=1)
