"""physml_md.training.csv_log: a resumed run's logger continues its run's metrics.csv (Lightning's would delete it).

The end-to-end resume (train, resume, one folder) is in tests/training/test_run.py."""

import csv

from lightning.pytorch.loggers import CSVLogger

from physml_md.training.csv_log import resumed_csv_logger, resumed_run_dir


def _rows(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def _write(path, fieldnames, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def test_the_resumed_logger_appends_and_drops_the_rows_it_logs_again(tmp_path):
    """Lightning's writer would warn and delete the file (filterwarnings = error makes the warning fail here)."""
    run = tmp_path / "runs" / "version_3"
    run.mkdir(parents=True)
    _write(
        run / "metrics.csv",
        ["epoch", "lr-Adam", "step", "val/loss"],
        [
            {"epoch": "", "lr-Adam": 0.1, "step": 0},
            {"epoch": 0, "step": 2, "val/loss": 1.0},
            {"epoch": "", "lr-Adam": 0.1, "step": 3},  # epoch 1 began at step 3: the checkpoint's step
            {"epoch": 1, "step": 5, "val/loss": 0.5},
        ],
    )
    logger = resumed_csv_logger(run, step=3)
    assert logger.log_dir == str(run)
    logger.log_metrics({"epoch": 1, "val/loss": 0.4, "train/loss": 0.6}, step=5)  # a new column
    logger.save()
    fieldnames, rows = _rows(run / "metrics.csv")
    assert set(fieldnames) == {"epoch", "lr-Adam", "step", "val/loss", "train/loss"}
    assert [(r["step"], r["val/loss"], r["train/loss"]) for r in rows] == [
        ("0", "", ""),
        ("2", "1.0", ""),
        ("5", "0.4", "0.6"),
    ]


def test_resumed_run_dir(tmp_path):
    run = tmp_path / "runs" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    assert resumed_run_dir(ckpt) is None  # no metrics.csv: not a run folder, a new version is made
    (run / "metrics.csv").write_text("epoch,step\n")
    assert resumed_run_dir(ckpt) == run.resolve()
    (tmp_path / "metrics.csv").write_text("epoch,step\n")
    assert resumed_run_dir(tmp_path / "copied.ckpt") is None  # not in a checkpoints/ folder
    assert isinstance(resumed_csv_logger(run), CSVLogger)
