"""The MDValidation callback (physml_md/training/callbacks.py) and its [training.md_validation] section."""

from types import SimpleNamespace

import pytest
import torch
from ase.io import read

from physml_md.config.load import ConfigError, config_from_dict
from physml_md.config.training import LossConfig
from physml_md.config.types import validate
from physml_md.data import LabelKeys, atoms_to_dict
from physml_md.export.checkpoint import potential_from_checkpoint
from physml_md.training.callbacks import LossWeightMixing, MDValidation, mixed_weight
from physml_md.training.figures import read_metrics
from physml_md.training.run import train


def test_step_schedule_moves_by_steps_and_stops_at_target():
    weights = [mixed_weight(1.0, 0.5, e, step=-0.2) for e in range(5)]
    assert weights == pytest.approx([1.0, 0.8, 0.6, 0.5, 0.5])
    weights = [mixed_weight(0.1, 1.0, e, step=0.4) for e in range(4)]
    assert weights == pytest.approx([0.1, 0.5, 0.9, 1.0])


def test_linear_schedule_reaches_target_after_mixing_epochs():
    weights = [mixed_weight(1.0, 10.0, e, span=3) for e in range(5)]
    assert weights == pytest.approx([1.0, 4.0, 7.0, 10.0, 10.0])


def test_components_without_target_keep_their_weight():
    assert mixed_weight(2.0, None, 7, step=1.0) == 2.0


def test_callback_follows_the_trainer_epoch():
    loss = {"target_weight": {"per_atom_force": 2.0}, "mixing_steps": {"per_atom_force": 0.25}}
    callback = LossWeightMixing.from_config(validate(LossConfig, loss, "training.loss_parameter"))
    module = SimpleNamespace(loss_weights=None)
    for epoch, expected in [(0, 1.0), (1, 1.25), (3, 1.75), (9, 2.0)]:
        callback.on_train_epoch_start(SimpleNamespace(current_epoch=epoch), module)
        assert module.loss_weights == {"per_system_energy": 1.0, "per_atom_force": pytest.approx(expected)}
    assert callback.state_dict()["weights"]["per_atom_force"] == pytest.approx(2.0)


def test_mixing_of_an_unlisted_component_is_an_error():
    loss = {"loss_components": ["per_system_energy"], "target_weight": {"per_atom_force": 2.0}}
    with pytest.raises(ConfigError, match="target_weight.per_atom_force is set but 'per_atom_force' is not in"):
        validate(LossConfig, loss, "training.loss_parameter")


def test_validation_loss_uses_the_final_weights_while_training_weights_move(tiny_config):
    """val/loss = sum of target weight x component loss in every epoch, so a monitor on it compares epochs
    fairly; the training weights (logged as weight/<component>) move toward the targets meanwhile."""
    from physml_md.config.load import config_from_dict
    from physml_md.training.figures import read_metrics
    from physml_md.training.run import train

    tiny_config["trainer"]["max_epochs"] = 3
    loss = tiny_config["training"]["loss_parameter"]
    loss["weight"] = {"per_system_energy": 100.0, "per_atom_force": 1.0, "per_system_stress": 10.0}
    loss["target_weight"] = {"per_system_energy": 1.0, "per_atom_force": 100.0}
    loss["mixing_epochs"] = {"per_system_energy": 2, "per_atom_force": 2}
    loss["schedule"] = "linear"
    result = train(config_from_dict(tiny_config), verbose=False)
    series = read_metrics(result.run_dir / "metrics.csv")
    final = {"per_system_energy": 1.0, "per_atom_force": 100.0, "per_system_stress": 10.0}
    expected = sum(w * series[f"val/{c}/loss"][1] for c, w in final.items())
    assert series["val/loss"][1] == pytest.approx(expected, rel=1e-9)
    assert list(series["weight/per_atom_force"][1]) == [1.0, 50.5, 100.0]  # the training weights moved


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


def test_the_section_is_the_settings_of_the_run(tiny_config, monkeypatch):
    """[training.md_validation] holds every MD key (friction, thermostat, blow-up limits, OpenMM options); the callback
    hands the section to run_md as it is, its seed following training.seed unless set."""
    seen = {}

    def fake_run_md(model, atoms, settings, **kwargs):
        seen.update(settings=settings, **kwargs)
        return SimpleNamespace(stable=True, min_distance=2.5, max_force=1.0, steps_done=3, temperatures_k=[10.0])

    monkeypatch.setattr("physml_md.training.callbacks.run_md", fake_run_md)
    tiny_config["training"]["seed"] = 11
    tiny_config["training"]["md_validation"] = {"every_n_epochs": 1, "steps": 3, "ensemble": "nvt", "friction": "5/ps"}
    section = config_from_dict(tiny_config).training.md_validation
    callback = MDValidation(section, structure=read(tiny_config["data"]["source"], index=0), seed=99)
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, should_stop=False)
    logged = {}
    module = SimpleNamespace(
        evaluation_model=torch.nn.Linear(1, 1), device=torch.device("cpu"), log=lambda k, v, **_: logged.update({k: v})
    )
    callback.on_train_epoch_end(trainer, module)
    assert seen["settings"] is section and section.seed == 11 and seen["steps"] == 3 and seen["device"] == "cpu"
    assert seen["settings"].friction == pytest.approx(0.005) and logged["md/temperature"] == 10.0
    assert MDValidation(section.model_copy(update={"seed": None}), seed=5).config.seed == 5  # built in Python
