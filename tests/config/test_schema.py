"""The configuration schema as a whole (training/schema.py): defaults and the checks across sections."""

import pytest

from physml_md.config.data import ModelConfig
from physml_md.config.types import LOSS_COMPONENTS
from tests.training.helpers import fails, losses, validated


def test_defaults():
    config = validated()
    assert config.model == ModelConfig(cutoff=5.0)  # model.cutoff follows data.cut_off
    assert config.data.cutoff == 5.0 and config.data.index == ":" and config.data.pre_batch == "in_memory"
    assert (config.data.train.batch_size, config.data.validation.batch_size, config.data.predict.batch_size) == (
        8,
        16,
        16,
    )
    assert config.data.splitting_strategy.data_split == [0.8, 0.1, 0.1]
    assert (config.data.y_energy, config.data.y_forces, config.data.y_stress, config.data.y_charges) == (
        "energy",
        "forces",
        "stress",
        None,
    )
    loss = config.training.loss_parameter
    assert loss.loss_components == ["per_system_energy", "per_atom_force"]
    assert loss.weight == {"per_system_energy": 1.0, "per_atom_force": 1.0}
    assert config.training.lr_scheduler.monitor == config.training.early_stopping.monitor == "val/loss"
    assert config.trainer == {
        "max_epochs": 100,
        "accelerator": "auto",
        "devices": 1,
        "default_root_dir": "physml_runs",
        "enable_progress_bar": True,
        "precision": "64-true",
        "inference_mode": False,
        "callbacks": [],
        "checkpoint": {"monitor": "val/loss", "save_top_k": 1, "save_last": True, "mode": "min"},
    }
    assert len(LOSS_COMPONENTS) == 6 and "per_system_dipole_moment" in LOSS_COMPONENTS


def test_data_cut_off_follows_a_lone_model_cutoff():
    config = validated({"model": {"cutoff": "3.5 angstrom"}})
    assert config.data.cutoff == config.model.cutoff == 3.5


def test_cutoff_disagreement_names_both_values():
    fails(
        {"model": {"cutoff": 4.0}, "data": {"cut_off": "5 angstrom"}},
        "model.cutoff = 4.0 angstrom disagrees with data.cut_off = 5.0 angstrom",
    )


@pytest.mark.parametrize(
    ("dtype", "precision", "expected"),
    [
        ("float32", None, "32-true"),
        ("float64", None, "64-true"),
        ("float32", 32, "32-true"),
        ("float32", "32", "32-true"),
        ("float32", "32-true", "32-true"),
        ("float64", 64, "64-true"),
        ("float64", "64", "64-true"),
        ("float64", "64-true", "64-true"),
    ],
)
def test_precision_is_normalised_and_derived_from_dtype(dtype, precision, expected):
    trainer = {} if precision is None else {"precision": precision}
    assert validated({"model": {"dtype": dtype}, "trainer": trainer}).trainer["precision"] == expected


@pytest.mark.parametrize(
    ("dtype", "precision", "message"),
    [
        ("float64", 32, "trainer.precision = 32 disagrees with model.dtype = 'float64'; set model.dtype = 'float32'"),
        ("float32", "64-true", "disagrees with model.dtype = 'float32'; set model.dtype = 'float64'"),
        ("float32", "16-mixed", "trainer.precision = '16-mixed' is not supported: forces need float32 or float64"),
        ("float32", "bf16-mixed", "'bf16-mixed' is not supported"),
        ("float32", 16, "trainer.precision = 16 is not supported"),
        ("float32", "33", "trainer.precision must be one of 32, 64, '32', '64', '32-true', '64-true'"),
    ],
)
def test_precision_errors(dtype, precision, message):
    fails({"model": {"dtype": dtype}, "trainer": {"precision": precision}}, message)


@pytest.mark.parametrize(
    ("components", "data", "model", "message"),
    [
        (["per_system_stress"], {"y_stress": None}, {}, "includes 'per_system_stress' but data.y_stress is not set"),
        (["per_system_energy"], {"y_energy": None}, {}, "data.y_energy is not set"),
        (["per_atom_charge"], {}, {"charges": True}, "includes 'per_atom_charge' but data.y_charges is not set"),
        (["per_atom_charge"], {"y_charges": "q"}, {}, "needs the charge head; set model.charges = true"),
        (["per_system_dipole_moment"], {"y_charges": "q"}, {"charges": True}, "data.y_dipole is not set"),
        (["per_system_dipole_moment"], {"y_dipole": "mu"}, {}, "needs the charge head"),
        (["per_system_total_charge"], {}, {}, "includes 'per_system_total_charge', which needs the charge head"),
    ],
)
def test_loss_components_need_their_labels(components, data, model, message):
    fails({"model": model, "data": data, **losses(loss_components=components)}, message)


def test_all_components_with_labels_and_charges():
    config = validated(
        {
            "model": {"charges": True, "coulomb": True},
            "data": {"y_charges": "q", "y_dipole": "mu", "y_total_charge": "Q"},
            **losses(loss_components=list(LOSS_COMPONENTS)),
        }
    )
    assert list(config.training.loss_parameter.weight) == list(LOSS_COMPONENTS)
