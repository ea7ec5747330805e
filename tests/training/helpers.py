"""Helpers shared by the configuration tests and the training tests."""

import csv
import os
import re

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from physml_md.config.load import config_from_dict
from physml_md.config.types import ConfigError


def validated(raw=None, **kwargs):
    """The validated ``Config`` of the dict ``raw``, without looking for data files."""
    return config_from_dict(raw or {}, require_files=False, **kwargs)


def fails(raw, message, require_files=False):
    """Validation of ``raw`` raises one ConfigError containing ``message`` (a literal string)."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(raw, require_files=require_files)


def losses(**loss):
    """A raw configuration with only ``[training.loss_parameter]``."""
    return {"training": {"loss_parameter": loss}}


def metric_column(metrics_csv, name):
    """The logged values of the column ``name`` of Lightning's metrics.csv (rows without it skipped)."""
    with open(metrics_csv, newline="") as handle:
        return [float(row[name]) for row in csv.DictReader(handle) if row.get(name)]


# ---- callbacks of the restart test, named by dotted path in its configuration
class SimulatedCrash(RuntimeError):
    pass


class CrashAtStep(Callback):
    """Stops the run abruptly after optimizer step ``step`` (like a killed job)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise SimulatedCrash(f"simulated crash after step {self.step}")


class SaveFinalWeights(Callback):
    """Writes the module's state dict (model and EMA weights) and the optimizer steps done when training ends."""

    def __init__(self, path: str):
        self.path = path
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1

    def on_train_end(self, trainer, pl_module):
        torch.save(
            {
                "state": pl_module.state_dict(),
                "batches": self.batches,
                "lr": trainer.optimizers[0].param_groups[0]["lr"],
            },
            self.path,
        )


class ExpectFileAtEpochStart(Callback):
    """Fails the run when, at the start of epoch ``epoch``, the file ``name`` is not in the run's log folder."""

    def __init__(self, name: str, epoch: int):
        self.name = name
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            path = os.path.join(trainer.loggers[0].log_dir, self.name)
            if not os.path.isfile(path):
                raise AssertionError(f"{path} missing at the start of epoch {self.epoch}")
