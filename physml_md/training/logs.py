"""Following a training as it runs: one line per epoch, and ``learning_curves.png`` redrawn from ``metrics.csv``.

``EpochLog`` prints after every epoch its number, learning rate, train and validation MAEs of the energy per atom and
of the force components (meV), and its time, through ``LightningModule.print`` (once per DDP run), e.g.::

    epoch 3 | lr 5.00e-03 | train: E 12.31 meV/atom, F 85.07 meV/angstrom | val: E 10.22 meV/atom, F 80.34 ... | 2.1 s

Train errors are those of the batches as trained; validation errors those of the evaluated (EMA) weights. An epoch's
metrics are complete only after the module's ``on_train_epoch_end`` (which a callback's hook precedes), so an epoch's
line and figure come at the start of the next one. The figure is redrawn only as often as keeps it under 5 % of the run.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Mapping, Tuple

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from physml_md.atomic_write import PathLike, atomic_path
from physml_md.training.figures import METRIC_UNITS, learning_curves

__all__ = [
    "EpochLog",
    "format_epoch_line",
    "METRIC_UNITS",
    "LEARNING_CURVES",
    "resumed_run_dir",
    "resumed_csv_logger",
    "METRICS_FILE",
]


LEARNING_CURVES = "learning_curves.png"

_LINE_COMPONENTS = (("E", "per_atom_energy"), ("F", "per_atom_force"))
_PLOT_COST_FRACTION = 0.05


def _errors(metrics: Mapping[str, float], stage: str) -> str | None:
    parts = []
    for symbol, component in _LINE_COMPONENTS:
        value = metrics.get(f"{stage}/{component}/mae")
        if value is not None:
            unit, factor = METRIC_UNITS[component]
            parts.append(f"{symbol} {float(value) * factor:.4g} {unit}")
    return f"{stage}: {', '.join(parts)}" if parts else None


def format_epoch_line(epoch: int, lr: float | None, metrics: Mapping[str, float], seconds: float) -> str:
    """The line of one epoch: ``metrics`` as logged (``<stage>/<component>/mae`` in eV, eV/Å), printed in meV."""
    parts = [f"epoch {epoch}"]
    if lr is not None:
        parts.append(f"lr {lr:.2e}")
    parts += [text for stage in ("train", "val") if (text := _errors(metrics, stage))]
    parts.append(f"{seconds:.1f} s")
    return " | ".join(parts)


class EpochLog(Callback):
    """Prints one line per training epoch (``print_lines``) and redraws ``learning_curves.png`` in the folder of
    the run's ``CSVLogger`` from its ``metrics.csv`` (``plot``)."""

    def __init__(self, print_lines: bool = True, plot: bool = True):
        self.print_lines = print_lines
        self.plot = plot
        self._started = time.perf_counter()
        self._pending: Tuple[int, float | None, float] | None = None  # (epoch, lr, seconds) not yet reported
        self._validated_epoch: int | None = None
        self._next_plot = 0.0  # perf_counter time before which no figure is drawn

    def on_train_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()  # a run resumed mid-epoch does not call on_train_epoch_start

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._report(trainer, pl_module)
        self._started = time.perf_counter()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        optimizers = trainer.optimizers
        lr = float(optimizers[0].param_groups[0]["lr"]) if optimizers else None
        self._pending = (trainer.current_epoch, lr, time.perf_counter() - self._started)

    def on_train_end(self, trainer, pl_module) -> None:
        self._report(trainer, pl_module, final=True)

    def _report(self, trainer, pl_module, final: bool = False) -> None:
        if self._pending is None:
            return
        epoch, lr, seconds = self._pending
        self._pending = None
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
        if self._validated_epoch != epoch:  # no validation this epoch: the val values are an older epoch's
            metrics = {k: v for k, v in metrics.items() if not k.startswith("val/")}
        if self.print_lines:
            pl_module.print(format_epoch_line(epoch, lr, metrics, seconds))
        if self.plot and not final and trainer.is_global_zero:
            self._redraw(trainer)

    def _redraw(self, trainer) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if logger is None or time.perf_counter() < self._next_plot:
            return
        metrics_csv = Path(logger.log_dir) / "metrics.csv"
        if not metrics_csv.is_file():
            return
        started = time.perf_counter()
        try:
            learning_curves(Path(logger.log_dir) / LEARNING_CURVES, metrics_csv)
        except ValueError:  # nothing to plot yet
            return
        now = time.perf_counter()
        self._next_plot = now + (now - started) * (1.0 / _PLOT_COST_FRACTION - 1.0)


# A run resumed from a checkpoint of ``<run>/checkpoints/`` logs into ``<run>/`` again, appending to its
# ``metrics.csv`` (Lightning's writer would delete it) after dropping the rows from the checkpoint's step on, which the
# resumed run logs again (an epoch's metrics are logged at the step before the next epoch's first): one history.

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
