"""The [training] section of the schema (physml_md/config/training.py)."""

import pytest

from physml_md.config.training import LossConfig
from tests.training.helpers import fails, losses, validated


def test_scheduler_rules():
    one_cycle = validated({"training": {"lr_scheduler": {"name": "one_cycle"}}}).training.lr_scheduler
    assert one_cycle.interval == "step"
    fails({"training": {"lr_scheduler": {"name": "one_cycle", "interval": "epoch"}}}, "cannot be used with one_cycle")
    fails(
        {"training": {"lr_scheduler": {"name": "cosine"}}, "trainer": {"max_epochs": None, "max_steps": 100}},
        "training.lr_scheduler.t_max is unset and trainer.max_epochs = None",
    )
    cosine = validated({"training": {"lr_scheduler": {"name": "cosine", "monitor": "val/x"}, "monitor": "val/y"}})
    assert cosine.training.lr_scheduler.monitor == "val/x" and cosine.training.early_stopping.monitor == "val/y"
    fails({"training": {"lr_scheduler": {"name": "plateau"}}}, "training.lr_scheduler.name must be one of")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            losses(weight={"per_system_stress": 1.0}),
            "training.loss_parameter.weight.per_system_stress is set but 'per_system_stress' is not in "
            "training.loss_parameter.loss_components",
        ),
        (
            losses(target_weight={"per_atom_force": 10.0}),
            "training.loss_parameter.target_weight.per_atom_force is set but "
            "training.loss_parameter.mixing_steps.per_atom_force is not",
        ),
        (
            losses(target_weight={"per_atom_force": 10.0}, mixing_steps={"per_atom_force": -1.0}),
            "mixing_steps.per_atom_force = -1.0 never takes the weight from 1.0 to the target 10.0; use a positive",
        ),
        (
            losses(target_weight={"per_atom_force": 0.5}, mixing_steps={"per_atom_force": 0.0}),
            "use a negative step",
        ),
        (
            losses(mixing_steps={"per_atom_force": 1.0}),
            "mixing_steps.per_atom_force is set but training.loss_parameter.target_weight.per_atom_force is not",
        ),
        (
            losses(schedule="linear", target_weight={"per_atom_force": 2.0}),
            "target_weight.per_atom_force is set but training.loss_parameter.mixing_epochs.per_atom_force is not",
        ),
        (
            losses(schedule="linear", target_weight={"per_atom_force": 2.0}, mixing_steps={"per_atom_force": 1.0}),
            "training.loss_parameter.mixing_steps is not used with schedule = 'linear'",
        ),
        (
            losses(schedule="linear", target_weight={"per_atom_force": 2.0}, mixing_epochs={"per_atom_force": 0}),
            "training.loss_parameter.mixing_epochs.per_atom_force must be >= 1, got 0",
        ),
        (losses(weight={"per_atom_force": -1.0}), "training.loss_parameter.weight.per_atom_force must be >= 0.0"),
        (losses(weight={"per_atom_force": 0.0, "per_system_energy": 0}), "every weight is 0"),
        (losses(loss_components=[]), "must be a non-empty list of loss components"),
        (losses(loss_components=["per_atom_force", "per_atom_force"]), "lists per_atom_force more than once"),
    ],
)
def test_loss_parameter_errors(raw, message):
    fails(raw, message)


def test_loss_mixing_accepted():
    step = validated(losses(target_weight={"per_atom_force": 0.1}, mixing_steps={"per_atom_force": -0.3})).training
    assert step.loss_parameter.target_weight == {"per_atom_force": 0.1}
    linear = validated(
        losses(schedule="linear", target_weight={"per_system_energy": 9}, mixing_epochs={"per_system_energy": 5})
    ).training.loss_parameter
    assert linear.mixing_epochs == {"per_system_energy": 5} and linear.target_weight == {"per_system_energy": 9.0}
    assert isinstance(linear, LossConfig)


def test_resolved_values_do_not_change_the_sections_given():
    loss = LossConfig(loss_components=["per_atom_force"], weight={})
    assert loss.weight == {"per_atom_force": 1.0}  # every listed component has its weight
    config = validated({"training": {"monitor": "val/per_atom_force/mae"}, "data": {"cell": [4, 5, 6]}})
    assert config.training.early_stopping.monitor == config.trainer["checkpoint"]["monitor"] == "val/per_atom_force/mae"
    assert config.data.cell == [[4.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 6.0]]  # 3 lengths: orthorhombic
