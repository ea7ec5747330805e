"""A run interrupted mid-epoch and resumed from its checkpoint ends with the same weights as an uninterrupted run."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from physml_md.training.config import config_from_dict
from physml_md.training.run import train


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


def _config(tiny_config, root: Path, callbacks):
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


def _final(path):
    return torch.load(path, weights_only=True)


@pytest.mark.slow
def test_resume_mid_epoch_matches_uninterrupted_run(tiny_config, tmp_path):
    save = "tests.training.test_restart.SaveFinalWeights"
    crash = "tests.training.test_restart.CrashAtStep"
    # 12 training structures, batch 4: 3 steps per epoch, 9 in all; checkpoints every 2 steps
    reference = _config(
        tiny_config, tmp_path / "a", [{"class_path": save, "init_args": {"path": str(tmp_path / "a.pt")}}]
    )
    train(reference, verbose=False)

    crashing = _config(tiny_config, tmp_path / "b", [{"class_path": crash, "init_args": {"step": 5}}])
    with pytest.raises(SimulatedCrash):
        train(crashing, verbose=False)
    (last,) = (tmp_path / "b").glob("version_*/checkpoints/last.ckpt")  # written after step 4, mid-epoch 2
    resumed = _config(
        tiny_config, tmp_path / "c", [{"class_path": save, "init_args": {"path": str(tmp_path / "c.pt")}}]
    )
    train(resumed, ckpt_path=last, verbose=False)

    full, rest = _final(tmp_path / "a.pt"), _final(tmp_path / "c.pt")
    assert full["batches"] == 9 and rest["batches"] == 5  # the resumed run did only the missing steps
    assert rest["lr"] == full["lr"] < 0.02  # the plateau scheduler acted and its state was restored
    assert full["state"].keys() == rest["state"].keys()
    assert any(k.startswith("ema.") for k in full["state"])
    for name, value in full["state"].items():
        assert torch.equal(value, rest["state"][name]), name
