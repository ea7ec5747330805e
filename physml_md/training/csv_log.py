"""The run's CSV log (Lightning's ``metrics.csv``), kept in one place across resumes.

A new run logs into a new ``<root>/version_<n>/`` (Lightning's ``CSVLogger``). A run resumed from a checkpoint of
``<run>/checkpoints/`` logs into ``<run>/`` again (``resumed_csv_logger``): its ``metrics.csv`` is appended to,
not replaced (Lightning's writer deletes an existing one), and the rows logged from the checkpoint's optimizer step
on are dropped first, since the resumed run logs them again (Lightning logs an epoch's metrics at the step before
the next epoch's first, so a checkpoint at step G keeps the rows of every epoch it finished); the file then reads
as one history.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from physml_md.atomic import PathLike, atomic_path

__all__ = ["resumed_run_dir", "resumed_csv_logger", "METRICS_FILE"]

METRICS_FILE = ExperimentWriter.NAME_METRICS_FILE  # "metrics.csv"


def resumed_run_dir(ckpt_path: PathLike) -> Path | None:
    """The run folder of a checkpoint in ``<run>/checkpoints/`` whose run has a ``metrics.csv``, else None."""
    folder = Path(ckpt_path).resolve().parent
    if folder.name == "checkpoints" and (folder.parent / METRICS_FILE).is_file():
        return folder.parent
    return None


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer that continues an existing ``metrics.csv`` (its rows before ``step`` kept)."""

    def __init__(self, log_dir: str, step: int | None):
        self._step = step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv; this one keeps it
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            self.metrics_keys = sorted(reader.fieldnames or [])
            rows = list(reader)
        if self._step is None or not self.metrics_keys:
            return
        kept = [row for row in rows if not row.get("step") or float(row["step"]) < self._step]
        if len(kept) < len(rows):
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)


class _ResumedCSVLogger(CSVLogger):
    def __init__(self, run_dir: Path, step: int | None):
        super().__init__(save_dir=str(run_dir.parent), name="", version=run_dir.name)
        self._step = step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _AppendingWriter(self.log_dir, self._step)
        return self._experiment


def resumed_csv_logger(run_dir: PathLike, step: int | None = None) -> CSVLogger:
    """A ``CSVLogger`` writing into ``run_dir`` (a run's ``version_<n>`` folder) that appends to its
    ``metrics.csv``; its rows of ``step`` (the resumed checkpoint's ``global_step``) and later are dropped."""
    return _ResumedCSVLogger(Path(run_dir), step)
