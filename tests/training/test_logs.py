"""physml_md.training.logs: a resumed run's logger continues its run's metrics.csv (Lightning's would delete it).

The end-to-end resume (train, resume, one folder) is in tests/training/test_run.py."""

import csv
import re

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from physml_md.config.load import config_from_dict
from physml_md.data import keys as K
from physml_md.export.checkpoint import potential_from_checkpoint
from physml_md.training.datamodule import AtomsDataModule
from physml_md.training.logs import format_epoch_line, resumed_csv_logger, resumed_run_dir
from physml_md.training.run import datamodule_kwargs, train


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


# physml_md.training.logs: one line per epoch (units checked against a hand computation) without a progress
# bar, and learning_curves.png redrawn while the run trains.

LINE = re.compile(
    r"^epoch (?P<epoch>\d+) \| lr (?P<lr>\S+) \| "
    r"train: E (?P<train_e>\S+) meV/atom, F (?P<train_f>\S+) meV/angstrom \| "
    r"val: E (?P<val_e>\S+) meV/atom, F (?P<val_f>\S+) meV/angstrom \| (?P<seconds>\S+) s$"
)


def test_the_line_prints_maes_in_mev():
    metrics = {
        "train/per_atom_energy/mae": 0.0123,  # eV/atom
        "train/per_atom_force/mae": 0.2,  # eV/angstrom
        "val/per_atom_energy/mae": 0.001,
        "val/per_atom_force/mae": 0.08034,
        "val/per_atom_force/rmse": 9.0,  # not printed
    }
    line = format_epoch_line(3, 5e-3, metrics, 2.14)
    assert line == (
        "epoch 3 | lr 5.00e-03 | train: E 12.3 meV/atom, F 200 meV/angstrom | "
        "val: E 1 meV/atom, F 80.34 meV/angstrom | 2.1 s"
    )
    # without validation (or forces) the missing parts are left out
    assert format_epoch_line(0, None, {"train/per_atom_energy/mae": 0.5}, 1.0) == (
        "epoch 0 | train: E 500 meV/atom | 1.0 s"
    )


def _hand_maes(config, checkpoint):
    """Validation energy MAE (meV/atom) and force-component MAE (meV/angstrom) of a checkpoint, by hand."""
    datamodule = AtomsDataModule(**datamodule_kwargs(config))
    datamodule.setup("fit")
    potential = potential_from_checkpoint(checkpoint)
    energy_errors, force_errors = [], []
    for batch in datamodule.loader("validation"):
        out = potential(batch)
        n_atoms = batch[K.N_ATOMS].double()
        energy_errors.append(((out[K.ENERGY].detach() - batch[K.ENERGY]) / n_atoms).abs())
        force_errors.append((out[K.FORCES].detach() - batch[K.FORCES]).abs().reshape(-1))
    return 1000 * torch.cat(energy_errors).mean().item(), 1000 * torch.cat(force_errors).mean().item()


def test_one_line_per_epoch_without_a_progress_bar(tiny_config, capsys):
    assert tiny_config["trainer"]["enable_progress_bar"] is False
    tiny_config["trainer"]["max_epochs"] = 2
    tiny_config["trainer"]["checkpoint"] = {"save_last": True}
    config = config_from_dict(tiny_config)
    result = train(config, verbose=True)
    printed = capsys.readouterr().out
    lines = [m for line in printed.splitlines() if (m := LINE.match(line))]
    assert [int(m["epoch"]) for m in lines] == [0, 1], printed
    assert float(lines[-1]["lr"]) == pytest.approx(0.02)
    assert all(float(m["seconds"]) > 0 for m in lines)
    # the last epoch's validation errors are those of the weights in last.ckpt, in meV/atom and meV/angstrom
    energy, force = _hand_maes(config, result.run_dir / "checkpoints" / "last.ckpt")
    assert float(lines[-1]["val_e"]) == pytest.approx(energy, rel=1e-3)
    assert float(lines[-1]["val_f"]) == pytest.approx(force, rel=1e-3)
    assert np.isfinite([float(lines[-1]["train_e"]), float(lines[-1]["train_f"])]).all()


def test_learning_curves_are_drawn_while_training(tiny_config):
    tiny_config["trainer"]["max_epochs"] = 2
    expect = "tests.training.helpers.ExpectFileAtEpochStart"
    tiny_config["trainer"]["callbacks"] = [
        {"class_path": expect, "init_args": {"name": "learning_curves.png", "epoch": 1}}
    ]
    result = train(config_from_dict(tiny_config), verbose=False)  # the callback raises when the figure is missing
    assert result.learning_curves == result.run_dir / "learning_curves.png" and result.learning_curves.is_file()
