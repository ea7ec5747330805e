"""End to end: `train(config)` trains, tests, exports and plots; the exported file equals the checkpoint."""

import csv

import numpy as np
import pytest
import torch
import yaml
from ase.io import read

from physml_md.checkpoint import load_checkpoint, potential_from_checkpoint
from physml_md.cli import main as cli
from physml_md.data import LabelKeys, atoms_to_dict, collate
from physml_md.export import load_potential, read_metadata
from physml_md.training.api import PhysMLModel
from physml_md.training.config import config_from_dict
from physml_md.training.run import train
from tests.helpers import PicklePayload


def _column(metrics_csv, name):
    with open(metrics_csv, newline="") as handle:
        return [float(row[name]) for row in csv.DictReader(handle) if row.get(name)]


def test_train_writes_checkpoint_export_plots_and_test_metrics(tiny_config, cu_data):
    tiny_config["training"]["ema"] = {"decay": 0.5}
    tiny_config["training"]["lr_scheduler"] = {"name": "cosine"}
    result = train(config_from_dict(tiny_config), verbose=False)
    assert result.best_checkpoint.is_file() and result.best_checkpoint.suffix == ".ckpt"
    assert result.model_path == result.best_checkpoint.parent / "model.pt"
    assert result.parity_plot.stat().st_size > 10_000 and result.learning_curves.stat().st_size > 10_000
    for name in ("per_atom_energy", "per_system_energy", "per_atom_force", "per_system_stress"):
        assert result.test_metrics[f"test/{name}/rmse"] >= result.test_metrics[f"test/{name}/mae"] > 0
    metrics_csv = result.run_dir / "metrics.csv"
    assert len(_column(metrics_csv, "val/per_atom_force/rmse")) == 3
    assert len(_column(metrics_csv, "train/per_system_stress/loss")) == 3
    assert _column(metrics_csv, "weight/per_system_stress") == [100.0] * 3

    # the exported file is the checkpoint's EMA model, with the training data hash
    meta = read_metadata(result.model_path)
    assert meta["data_sha256"] == load_checkpoint(result.best_checkpoint)["hyper_parameters"]["data_sha256"]
    assert meta["training"]["test_metrics"] == result.test_metrics
    exported = load_potential(result.model_path)
    eager = potential_from_checkpoint(result.best_checkpoint)
    frames = read(cu_data, ":3")
    batch = collate([atoms_to_dict(a, LabelKeys(), dtype=torch.float64) for a in frames])
    a, b = exported(batch), eager(batch)
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-12, atol=1e-12)


def test_training_lowers_energy_force_and_stress_losses(tiny_config):
    tiny_config["trainer"]["max_epochs"] = 8
    result = train(config_from_dict(tiny_config), verbose=False)
    metrics_csv = result.run_dir / "metrics.csv"
    for name, factor in (("per_system_energy", 1.0), ("per_atom_force", 0.5), ("per_system_stress", 0.7)):
        losses = _column(metrics_csv, f"train/{name}/loss")
        assert losses[-1] < factor * losses[0], (name, losses)


def test_python_api_takes_atoms_lists(tiny_config, cu_data):
    frames = read(cu_data, ":")
    del tiny_config["data"]["source"]
    tiny_config["trainer"]["max_epochs"] = 1
    model = PhysMLModel(tiny_config)
    assert model.model_path is None
    result = model.train(train_data=frames[:8], validation_data=frames[8:12], verbose=False)
    assert model.model_path == result.model_path and result.model_path.is_file()
    assert result.test_metrics == {}


def test_python_api_without_data_is_an_error(tiny_config):
    del tiny_config["data"]["source"]
    with pytest.raises(ValueError, match="no training data"):
        PhysMLModel(tiny_config).train()


def test_disabled_validation_monitors_training_metrics(tiny_config):
    tiny_config["trainer"]["max_epochs"] = 2
    tiny_config["trainer"]["limit_val_batches"] = 0
    tiny_config["training"]["lr_scheduler"] = {"name": "reduce_on_plateau", "patience": 0}
    tiny_config["training"]["early_stopping"] = {"enabled": True, "patience": 5}
    result = train(config_from_dict(tiny_config), verbose=False)
    assert result.best_checkpoint.is_file()
    checkpoint = load_checkpoint(result.best_checkpoint)
    assert checkpoint["hyper_parameters"]["config"]["training"]["monitor"] == "train/loss"
    assert _column(result.run_dir / "metrics.csv", "val/loss") == []


def test_cli_trains_from_a_file_and_exports_a_checkpoint(tiny_config, tmp_path, capsys):
    tiny_config["trainer"]["max_epochs"] = 1
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert cli(["train", str(path), "--set", "data.train.batch_size=6", "--set", "training.ema.decay=0.5"]) == 0
    printed = capsys.readouterr().out
    assert "test split:" in printed and "per_atom_force" in printed
    (best,) = (tmp_path / "runs").glob("version_0/checkpoints/epoch=*.ckpt")
    config = load_checkpoint(best)["hyper_parameters"]["config"]
    assert config["data"]["train"]["batch_size"] == 6 and config["training"]["ema"]["decay"] == 0.5

    exported = tmp_path / "from_ckpt.pt"
    assert cli(["export", str(best), str(exported)]) == 0
    frames = read(tiny_config["data"]["source"], ":2")
    batch = collate([atoms_to_dict(a, LabelKeys(), dtype=torch.float64) for a in frames])
    reference = load_potential(best.parent / "model.pt")(batch)
    np.testing.assert_array_equal(load_potential(exported)(batch)["forces"].numpy(), reference["forces"].numpy())
    raw = tmp_path / "raw.pt"
    assert cli(["export", str(best), str(raw), "--no-ema"]) == 0
    assert not np.array_equal(load_potential(raw)(batch)["forces"].numpy(), reference["forces"].numpy())


def test_cli_refuses_a_pickled_checkpoint_and_bad_configs(tiny_config, tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": PicklePayload(marker)}, evil)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert cli(["train", str(path), "--ckpt-path", str(evil)]) == 2
    assert "refusing to load" in capsys.readouterr().err and not marker.exists()
    assert cli(["train", str(path), "--set", "trainer.max_epoch=3"]) == 2
    assert "did you mean 'trainer.max_epochs'" in capsys.readouterr().err


def test_float32_training_exports_float64_and_resumes_with_another_export_dtype(tiny_config):
    tiny_config["model"].update(dtype="float32", export_dtype="float64")
    tiny_config["trainer"]["max_epochs"] = 1
    result = train(config_from_dict(tiny_config), verbose=False)
    meta = read_metadata(result.model_path)
    assert meta["dtype"] == "float64" and meta["trained_dtype"] == "float32"
    assert load_checkpoint(result.best_checkpoint)["state_dict"]["model.shift"].dtype == torch.float32
    # export_dtype is not part of the model being trained: a resumed run may change it
    tiny_config["model"].pop("export_dtype")
    tiny_config["trainer"]["max_epochs"] = 2
    last = result.best_checkpoint.parent / "last.ckpt"
    resumed = train(config_from_dict(tiny_config), ckpt_path=last, verbose=False)
    assert read_metadata(resumed.model_path)["dtype"] == "float32"


def test_tensornet_trains_through_the_cli_and_exports_its_architecture(tiny_config, tmp_path, capsys):
    """[model] name = "tensornet" validates, trains with `physml-md train` and exports a TensorNet file."""
    tiny_config["model"].update(name="tensornet", n_interactions=2)
    tiny_config["trainer"]["max_epochs"] = 4
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert cli(["train", str(path)]) == 0
    assert "per_atom_force" in capsys.readouterr().out
    (best,) = (tmp_path / "runs").glob("version_0/checkpoints/epoch=*.ckpt")
    model_path = best.parent / "model.pt"
    meta = read_metadata(model_path)
    assert meta["model"] == "tensornet" and meta["hyperparameters"]["name"] == "tensornet"
    eager = potential_from_checkpoint(best)
    assert type(eager.energy_model).__name__ == "TensorNet"
    frames = read(tiny_config["data"]["source"], ":3")
    batch = collate([atoms_to_dict(a, LabelKeys(), dtype=torch.float64) for a in frames])
    a, b = load_potential(model_path)(batch), eager(batch)
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-12, atol=1e-12)
    losses = _column(tmp_path / "runs" / "version_0" / "metrics.csv", "train/per_atom_force/loss")
    assert len(losses) == 4 and losses[-1] < 0.75 * losses[0], losses  # it learns (measured: 0.39 -> 0.23)
