from types import SimpleNamespace

import pytest

from physml_md.training.config import ConfigError
from physml_md.training.mixing import LossWeightMixing, mixed_weight
from physml_md.training.schema import LossConfig
from physml_md.training.schema_types import validate


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
    from physml_md.training.config import config_from_dict
    from physml_md.training.plots import read_metrics
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
