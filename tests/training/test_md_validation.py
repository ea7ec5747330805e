"""The MDValidation callback (physml_md/training/md_validation.py) and its [training.md_validation] section."""

import pytest
import torch
from ase.io import read

from physml_md.checkpoint import potential_from_checkpoint
from physml_md.data import LabelKeys, atoms_to_dict
from physml_md.training.config import ConfigError, config_from_dict
from physml_md.training.plots import read_metrics
from physml_md.training.run import train


def test_md_metrics_are_logged_every_n_epochs_with_the_ema_weights(tiny_config, cu_data):
    tiny_config["trainer"]["max_epochs"] = 4
    tiny_config["training"]["ema"] = {"decay": 0.5}
    tiny_config["training"]["md_validation"] = {"every_n_epochs": 2, "steps": 40, "structures": str(cu_data)}
    result = train(config_from_dict(tiny_config), verbose=False)
    series = read_metrics(result.run_dir / "metrics.csv")
    for name in ("md/stable", "md/min_distance", "md/max_force", "md/drift", "md/steps"):
        epochs, values = series[name]
        assert list(epochs) == [1, 3], name  # after the 2nd and the 4th epoch
    assert list(series["md/stable"][1]) == [1.0, 1.0] and list(series["md/steps"][1]) == [40.0, 40.0]
    assert all(2.0 < d < 3.0 for d in series["md/min_distance"][1])  # Cu neighbours, 2.55 A at rest
    # the run used the EMA weights of the last epoch: its first energy is theirs
    assert result.md_validation["stable"] is True and result.md_validation["steps_done"] == 40
    last = potential_from_checkpoint(result.run_dir / "checkpoints" / "last.ckpt")  # EMA weights
    start = read(cu_data, index=0)
    energy = last(atoms_to_dict(start, LabelKeys(None, None, None, None, None, None), torch.float64))["energy"]
    assert result.md_validation["first_potential_energy"] == pytest.approx(float(energy), rel=1e-10)


@pytest.mark.parametrize("stop", [True, False])
def test_blow_up_stops_training_only_when_asked(tiny_config, stop):
    tiny_config["trainer"]["max_epochs"] = 3
    # a minimum distance no structure satisfies: every MD run "blows up" at its first frame
    tiny_config["training"]["md_validation"] = {
        "every_n_epochs": 1,
        "steps": 10,
        "min_distance": "10 angstrom",
        "stop_on_blowup": stop,
    }
    result = train(config_from_dict(tiny_config), verbose=False)
    epochs, stable = read_metrics(result.run_dir / "metrics.csv")["md/stable"]
    assert list(stable) == [0.0] * len(epochs)
    assert list(epochs) == ([0] if stop else [0, 1, 2])


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"temperature": "300 fs"}, "temperature needs a temperature"),
        ({"timestep": "1 K"}, "timestep needs a time"),
        ({"engine": "gromacs"}, "engine"),
        ({"every_n_epoch": 1}, "did you mean 'training.md_validation.every_n_epochs'"),
        ({"steps": 0}, "steps"),
    ],
)
def test_bad_section_is_one_clear_error(tiny_config, section, message):
    tiny_config["training"]["md_validation"] = section
    with pytest.raises(ConfigError, match=message):
        config_from_dict(tiny_config)
