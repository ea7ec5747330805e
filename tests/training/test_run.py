"""physml_md.training.run, end to end: `train(config)` trains, tests, exports and plots; the exported file equals
the checkpoint; a run resumed mid-epoch ends where an uninterrupted one does; two DDP processes train like one."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.io import read

from physml_md.cli.main import main as cli
from physml_md.config.load import config_from_dict
from physml_md.data import LabelKeys, atoms_to_dict, collate
from physml_md.export import load_potential, read_metadata
from physml_md.export.checkpoint import load_checkpoint, potential_from_checkpoint
from physml_md.training.run import train
from tests.helpers import PicklePayload
from tests.training.helpers import SimulatedCrash, metric_column

CLI = [sys.executable, "-m", "physml_md.cli.main"]


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
    assert len(metric_column(metrics_csv, "val/per_atom_force/rmse")) == 3
    assert len(metric_column(metrics_csv, "train/per_system_stress/loss")) == 3
    assert metric_column(metrics_csv, "weight/per_system_stress") == [100.0] * 3

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


def test_disabled_validation_monitors_training_metrics(tiny_config):
    tiny_config["trainer"]["max_epochs"] = 2
    tiny_config["trainer"]["limit_val_batches"] = 0
    tiny_config["training"]["lr_scheduler"] = {"name": "reduce_on_plateau", "patience": 0}
    tiny_config["training"]["early_stopping"] = {"enabled": True, "patience": 5}
    result = train(config_from_dict(tiny_config), verbose=False)
    assert result.best_checkpoint.is_file()
    checkpoint = load_checkpoint(result.best_checkpoint)
    assert checkpoint["hyper_parameters"]["config"]["training"]["monitor"] == "train/loss"
    assert metric_column(result.run_dir / "metrics.csv", "val/loss") == []


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
    losses = metric_column(tmp_path / "runs" / "version_0" / "metrics.csv", "train/per_atom_force/loss")
    assert len(losses) == 4 and losses[-1] < 0.75 * losses[0], losses  # it learns (measured: 0.39 -> 0.23)


# ----------------------------------------------------------------------------- resumed mid-epoch
# A run interrupted mid-epoch and resumed from its checkpoint ends with the same weights as an uninterrupted run.


def _restart_config(tiny_config, root: Path, callbacks):
    tiny_config["trainer"]["default_root_dir"] = str(root)
    tiny_config["trainer"]["checkpoint"] = {"monitor": None, "every_n_train_steps": 2, "save_last": True}
    tiny_config["trainer"]["callbacks"] = callbacks
    tiny_config["training"]["ema"] = {"decay": 0.7}
    # the plateau scheduler follows the mixed force weight, which only grows: it must act after every epoch
    tiny_config["training"]["lr_scheduler"] = {
        "name": "reduce_on_plateau",
        "patience": 0,
        "factor": 0.5,
        "monitor": "weight/per_atom_force",
    }
    tiny_config["training"]["loss_parameter"]["target_weight"] = {"per_atom_force": 3.0}
    tiny_config["training"]["loss_parameter"]["mixing_steps"] = {"per_atom_force": 0.75}
    return config_from_dict(tiny_config)


def _final_weights(path):
    return torch.load(path, weights_only=True)


@pytest.mark.slow
def test_resume_mid_epoch_matches_uninterrupted_run(tiny_config, tmp_path):
    save = "tests.training.helpers.SaveFinalWeights"
    crash = "tests.training.helpers.CrashAtStep"
    # 12 training structures, batch 4: 3 steps per epoch, 9 in all; checkpoints every 2 steps
    reference = _restart_config(
        tiny_config, tmp_path / "a", [{"class_path": save, "init_args": {"path": str(tmp_path / "a.pt")}}]
    )
    train(reference, verbose=False)

    crashing = _restart_config(tiny_config, tmp_path / "b", [{"class_path": crash, "init_args": {"step": 5}}])
    with pytest.raises(SimulatedCrash):
        train(crashing, verbose=False)
    (last,) = (tmp_path / "b").glob("version_*/checkpoints/last.ckpt")  # written after step 4, mid-epoch 2
    resumed = _restart_config(
        tiny_config, tmp_path / "c", [{"class_path": save, "init_args": {"path": str(tmp_path / "c.pt")}}]
    )
    train(resumed, ckpt_path=last, verbose=False)

    full, rest = _final_weights(tmp_path / "a.pt"), _final_weights(tmp_path / "c.pt")
    assert full["batches"] == 9 and rest["batches"] == 5  # the resumed run did only the missing steps
    assert rest["lr"] == full["lr"] < 0.02  # the plateau scheduler acted and its state was restored
    assert full["state"].keys() == rest["state"].keys()
    assert any(k.startswith("ema.") for k in full["state"])
    for name, value in full["state"].items():
        assert torch.equal(value, rest["state"][name]), name


# ----------------------------------------------------------------------------- two processes
# `strategy="ddp"` with two CPU processes (gloo) trains like one process with the same total batch size.


def _cli_train(tmp_path, tiny_config, name, overrides):
    tiny_config["trainer"]["default_root_dir"] = str(tmp_path / name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    result = subprocess.run(
        [*CLI, "train", str(path), *[f"--set={o}" for o in overrides]],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / name).glob("version_*")
    return run_dir, result.stdout


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path, tiny_config, cu_data):
    tiny_config["trainer"]["max_epochs"] = 2
    single_dir, _ = _cli_train(tmp_path, tiny_config, "single", ["data.train.batch_size=4"])
    ddp_dir, stdout = _cli_train(
        tmp_path, tiny_config, "ddp", ["data.train.batch_size=2", "trainer.devices=2", "trainer.strategy=ddp"]
    )
    assert "test split" in stdout
    names = ("val/loss", "val/per_atom_force/rmse", "val/per_system_stress/rmse", "train/loss")
    for name in names:
        a, b = metric_column(single_dir / "metrics.csv", name), metric_column(ddp_dir / "metrics.csv", name)
        assert len(a) == len(b) == 2
        np.testing.assert_allclose(b, a, rtol=1e-8, err_msg=name)
    frames = read(cu_data, ":4")
    batch = collate([atoms_to_dict(a, LabelKeys(), dtype=torch.float64) for a in frames])
    single = load_potential(single_dir / "checkpoints" / "model.pt")(batch)
    ddp = load_potential(ddp_dir / "checkpoints" / "model.pt")(batch)
    np.testing.assert_allclose(ddp["energy"].numpy(), single["energy"].numpy(), rtol=1e-9)
    np.testing.assert_allclose(ddp["forces"].numpy(), single["forces"].numpy(), rtol=1e-7, atol=1e-9)


def test_training_threads_are_set_while_training_and_put_back(tiny_config, monkeypatch):
    import physml_md.training.run as run

    seen = []
    monkeypatch.setattr(run, "_train", lambda config, *args: seen.append(torch.get_num_threads()) or "done")
    before = torch.get_num_threads()
    raw = dict(tiny_config, training={**tiny_config.get("training", {}), "threads": before + 1})
    assert train(config_from_dict(raw)) == "done"
    assert seen == [before + 1] and torch.get_num_threads() == before
    assert train(config_from_dict(tiny_config)) == "done"  # no threads: torch's own setting
    assert seen[-1] == before


# ----------------------------------------------------------------------------- resumed in one folder
def test_resume_logs_into_the_same_run_folder_and_continues_the_ema_count(tiny_config):
    """A resumed run appends to its run's metrics.csv (no new version_<n>; rows after the checkpoint are dropped,
    since it logs those epochs again) and continues the EMA update count of the checkpoint."""
    tiny_config["trainer"]["max_epochs"] = 2
    tiny_config["trainer"]["checkpoint"] = {"monitor": None, "save_top_k": -1, "save_last": True}
    tiny_config["training"]["ema"] = {"decay": 0.9}
    first = train(config_from_dict(tiny_config), verbose=False)
    metrics_csv = first.run_dir / "metrics.csv"
    before = metric_column(metrics_csv, "val/loss")
    assert len(before) == 2
    (epoch_0,) = first.run_dir.glob("checkpoints/epoch=0-*.ckpt")

    tiny_config["trainer"]["max_epochs"] = 3
    resumed = train(config_from_dict(tiny_config), ckpt_path=epoch_0, verbose=False)  # redoes epochs 1 and 2
    assert resumed.run_dir == first.run_dir
    assert sorted(p.name for p in first.run_dir.parent.iterdir()) == [first.run_dir.name]
    after = metric_column(metrics_csv, "val/loss")
    assert len(after) == 3 and after[0] == before[0]
    assert metric_column(metrics_csv, "epoch")[-1] == 3  # the test row of the resumed run, last
    assert len(metric_column(metrics_csv, "test/loss")) == 1  # the first run's test row (step 6) was dropped
    assert len(metric_column(metrics_csv, "lr-Adam")) == 3  # one per epoch
    assert int(load_checkpoint(epoch_0)["state_dict"]["ema_updates"]) == 3  # 3 steps per epoch
    (final,) = first.run_dir.glob("checkpoints/epoch=2-*.ckpt")
    assert int(load_checkpoint(final)["state_dict"]["ema_updates"]) == 9
