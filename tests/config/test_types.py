"""The ground of the schema (training/schema_types.py): value types, unknown keys, one clear error."""

import os
import re

import pytest

from physml_md.config.types import ConfigError
from tests.training.helpers import fails, validated


def test_num_workers_all_and_pbc_shorthand():
    config = validated({"data": {"num_workers": "all", "pbc": True, "cell": [[3, 0, 0], [0, 3, 0], [0, 0, 3]]}})
    assert config.data.num_workers == (os.cpu_count() or 1)
    assert config.data.pbc == [True, True, True]
    assert config.data.cell[2] == [0.0, 0.0, 3.0] and isinstance(config.data.cell[0][0], float)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"modle": {}}, "unknown key 'modle'; did you mean 'model'?"),
        ({"batch_size": 3}, "unknown key 'batch_size'; did you mean 'data.train.batch_size'?"),
        ({"data": {"batchsize": 3}}, "unknown key 'data.batchsize'; did you mean 'data.train.batch_size'?"),
        ({"data": {"cutoff": 3}}, "unknown key 'data.cutoff'; did you mean 'data.cut_off'?"),
        (
            {"data": {"train": {"bath_size": 3}}},
            "unknown key 'data.train.bath_size'; did you mean 'data.train.batch_size'",
        ),
        (
            {"training": {"lr_schedular": {}}},
            "unknown key 'training.lr_schedular'; did you mean 'training.lr_scheduler'?",
        ),
        ({"training": {"learning_rate": 1.0}}, "unknown key 'training.learning_rate'; valid keys in [training]: lr,"),
        (
            {"training": {"loss_parameter": {"weight": {"per_atom_forces": 10.0}}}},
            "unknown key 'training.loss_parameter.weight.per_atom_forces'; "
            "did you mean 'training.loss_parameter.weight.per_atom_force'?",
        ),
        ({"trainer": {"max_epoch": 3}}, "unknown key 'trainer.max_epoch'; did you mean 'trainer.max_epochs'?"),
        (
            {"trainer": {"checkpoint": {"save_topk": 2}}},
            "unknown key 'trainer.checkpoint.save_topk'; did you mean 'trainer.checkpoint.save_top_k'?",
        ),
        (
            {"trainer": {"callbacks": [{"class_pat": "a.B"}]}},
            "unknown key 'trainer.callbacks[0].class_pat'; did you mean 'trainer.callbacks[0].class_path'?",
        ),
        (
            {"training": {"loss_parameter": {"loss_components": ["per_atom_forces"]}}},
            "unknown loss component 'per_atom_forces'; did you mean 'per_atom_force'?",
        ),
    ],
)
def test_unknown_keys_suggest_the_closest_valid_key(raw, message):
    fails(raw, message)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"data": {"train": {"batch_size": "8"}}}, "data.train.batch_size must be an integer, got '8' (str)"),
        ({"model": {"features": True}}, "model.features must be an integer, got True (bool)"),
        ({"training": {"lr": True}}, "training.lr must be a number, got True (bool)"),
        ({"training": {"lr": "1e-3"}}, "YAML reads 1e-3 as a string"),
        ({"training": {"lr": 0.0}}, "training.lr must be > 0"),
        ({"model": {"zbl": 1}}, "model.zbl must be true or false, got 1 (int)"),
        ({"model": {"dtype": "float16"}}, "model.dtype must be one of 'float32', 'float64'"),
        ({"model": {"name": "mace"}}, "model.name must be one of 'painn'"),
        ({"data": {"pre_batch": "disk"}}, "data.pre_batch must be one of 'in_memory', 'on_disk'"),
        ({"data": {"num_workers": -1}}, "data.num_workers must be an integer >= 0 or the string 'all'"),
        ({"data": {"pbc": [True, False]}}, "data.pbc must be a list of 3 booleans"),
        ({"data": {"cell": [[1, 0], [0, 1]]}}, "data.cell must be a 3x3 list of numbers"),
        ({"data": {"index": "a:b"}}, "data.index"),
        ({"data": {"train": "x"}}, "data.train must be a table (mapping), got 'x' (str)"),
        ({"training": {"ema": {"decay": 1.0}}}, "training.ema.decay must be < 1.0"),
        ({"data": {"train": {"batch_size": 0}}}, "data.train.batch_size must be >= 1, got 0"),
        ({"data": {"validation": {"batch_size": -2}}}, "data.validation.batch_size must be >= 1, got -2"),
        ({"data": {"splitting_strategy": {"data_split": [0.8, 0.1, 0.2]}}}, "sums to 1.1; the three fractions must"),
        ({"data": {"splitting_strategy": {"data_split": [1.2, -0.1, -0.1]}}}, "three non-negative fractions"),
        ({"data": {"self_interaction": True}}, "data.self_interaction = true is not supported"),
        ({"model": {"coulomb": True}}, "model.coulomb = true needs model.charges = true"),
    ],
)
def test_bad_values_give_one_clear_error(raw, message):
    fails(raw, message)


def test_lengths_accept_units():
    config = validated({"data": {"cut_off": "0.45 nm"}, "model": {"cutoff": "4.5 angstrom"}})
    assert config.data.cutoff == pytest.approx(4.5, abs=1e-12) and config.model.cutoff == config.data.cutoff
    assert validated({"data": {"cut_off": 6}}).model.cutoff == 6.0


def test_length_with_wrong_dimension_names_the_key():
    fails({"data": {"cut_off": "5 eV"}}, "data.cut_off needs a length")
    fails({"data": {"cut_off": "5 parsecs per fortnight"}}, "data.cut_off")
    fails({"model": {"cutoff": -1.0}}, "model.cutoff must be a positive length")


def test_a_section_alone_is_validated_like_a_config_file():
    from physml_md.config.training import MDValidationConfig
    from physml_md.config.types import validate

    section = validate(MDValidationConfig, {"every_n_epochs": 2, "min_distance": "0.06 nm"}, "training.md_validation")
    assert section.min_distance == pytest.approx(0.6)
    with pytest.raises(ConfigError, match=re.escape("training.md_validation.steps must be >= 1, got 0")):
        validate(MDValidationConfig, {"steps": 0}, "training.md_validation")
    with pytest.raises(ConfigError, match="unknown key 'training.md_validation.step'; did you mean '.*.steps'"):
        validate(MDValidationConfig, {"step": 10}, "training.md_validation")
