import os
import re
from pathlib import Path

import pytest
import torch

from physml_md.training.config import (
    LOSS_COMPONENTS,
    Config,
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    instantiate_callbacks,
    load_config,
    trainer_kwargs,
    validate_sources,
)

TOML = """
[model]
cutoff = "4.0 angstrom"
dtype = "float32"
features = 8
n_interactions = 1
n_rbf = 4

[data]
source = "data/train.xyz"
cut_off = 4.0
pbc = [true, true, false]
y_stress = "REF_stress"

[data.train]
batch_size = 4

[data.splitting_strategy]
name = "first_come_first_serve_strategy"
data_split = [0.5, 0.25, 0.25]

[training]
lr = 1e-4

[training.lr_scheduler]
name = "reduce_on_plateau"

[training.loss_parameter]
loss_components = ["per_system_energy", "per_atom_force", "per_system_stress"]

[training.loss_parameter.weight]
per_atom_force = 10.0

[training.loss_parameter.target_weight]
per_system_energy = 5.0

[training.loss_parameter.mixing_steps]
per_system_energy = 1.0

[trainer]
max_epochs = 7
callbacks = [{class_path = "lightning.pytorch.callbacks.LearningRateMonitor", init_args = {logging_interval = "step"}}]
"""

YAML = """
model:
  cutoff: 4.0 angstrom
  dtype: float32
  features: 8
  n_interactions: 1
  n_rbf: 4
data:
  source: data/train.xyz
  cut_off: 4.0
  pbc: [true, true, false]
  y_stress: REF_stress
  train: {batch_size: 4}
  splitting_strategy:
    name: first_come_first_serve_strategy
    data_split: [0.5, 0.25, 0.25]
training:
  lr: 1.0e-4
  lr_scheduler: {name: reduce_on_plateau}
  loss_parameter:
    loss_components: [per_system_energy, per_atom_force, per_system_stress]
    weight: {per_atom_force: 10.0}
    target_weight: {per_system_energy: 5.0}
    mixing_steps: {per_system_energy: 1.0}
trainer:
  max_epochs: 7
  callbacks:
    - class_path: lightning.pytorch.callbacks.LearningRateMonitor
      init_args: {logging_interval: step}
"""


def _config(raw=None, **kwargs):
    return config_from_dict(raw or {}, require_files=False, **kwargs)


def _fails(raw, message, require_files=False):
    """Validation of ``raw`` raises one ConfigError containing ``message`` (a literal string)."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(raw, require_files=require_files)


@pytest.fixture
def project(tmp_path):
    """A config directory with an (empty) data file beside it: cfg/run.toml, cfg/run.yaml, cfg/data/train.xyz."""
    cfg = tmp_path / "cfg"
    (cfg / "data").mkdir(parents=True)
    (cfg / "data" / "train.xyz").write_text("")
    (cfg / "run.toml").write_text(TOML)
    (cfg / "run.yaml").write_text(YAML)
    return cfg


# ------------------------------------------------------------------------------------------- defaults


def test_defaults():
    config = _config()
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


def test_label_keys_follow_y_fields():
    keys = _config({"data": {"y_energy": "REF_energy", "y_stress": None}}).data.label_keys()
    assert keys.energy == "REF_energy" and keys.forces == "forces" and keys.stress is None and keys.charges is None


def test_num_workers_all_and_pbc_shorthand():
    config = _config({"data": {"num_workers": "all", "pbc": True, "cell": [[3, 0, 0], [0, 3, 0], [0, 0, 3]]}})
    assert config.data.num_workers == (os.cpu_count() or 1)
    assert config.data.pbc == [True, True, True]
    assert config.data.cell[2] == [0.0, 0.0, 3.0] and isinstance(config.data.cell[0][0], float)


# ------------------------------------------------------------------------------------------- files


def test_toml_and_yaml_give_the_same_config(project):
    from_toml = load_config(project / "run.toml")
    from_yaml = load_config(project / "run.yaml")
    assert from_toml == from_yaml
    assert from_toml.model.cutoff == 4.0 and from_toml.model.dtype == "float32"
    assert from_toml.trainer["precision"] == "32-true"  # derived from model.dtype
    assert from_toml.training.loss_parameter.weight == {
        "per_system_energy": 1.0,
        "per_atom_force": 10.0,
        "per_system_stress": 1.0,
    }


def test_relative_paths_resolve_against_the_config_file(project, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(project / "run.toml", ["trainer.default_root_dir=runs", "data.cache_dir=cache"])
    assert config.data.source == str((project / "data" / "train.xyz").resolve())
    # paths given on the command line are relative to the working directory
    assert config.trainer["default_root_dir"] == str(elsewhere.resolve() / "runs")
    assert config.data.cache_dir == str(elsewhere.resolve() / "cache")
    # config_from_dict leaves paths as given
    assert _config({"data": {"source": "data/train.xyz"}}).data.source == "data/train.xyz"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.toml", "[model]\nfeatures = \n", "line 2"),
        ("bad.yaml", "model:\n  features: [1,\n", "line 3"),
        ("bad.ini", "[model]\n", "unsupported suffix '.ini'"),
        ("list.yaml", "- 1\n- 2\n", "must hold a table of sections"),
    ],
)
def test_file_errors_name_the_file_and_the_problem(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.toml"):
        load_config(tmp_path / "nope.toml")


# ------------------------------------------------------------------------------------------- unknown keys / types


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
    _fails(raw, message)


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
    _fails(raw, message)


def test_yaml_sections_left_empty_count_as_empty(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\ndata:\n  train:\ntrainer:\n")
    assert load_config(path, require_files=False) == _config()


# ------------------------------------------------------------------------------------------- units, cut-off


def test_lengths_accept_units():
    config = _config({"data": {"cut_off": "0.45 nm"}, "model": {"cutoff": "4.5 angstrom"}})
    assert config.data.cutoff == pytest.approx(4.5, abs=1e-12) and config.model.cutoff == config.data.cutoff
    assert _config({"data": {"cut_off": 6}}).model.cutoff == 6.0


def test_length_with_wrong_dimension_names_the_key():
    _fails({"data": {"cut_off": "5 eV"}}, "data.cut_off needs a length")
    _fails({"data": {"cut_off": "5 parsecs per fortnight"}}, "data.cut_off")
    _fails({"model": {"cutoff": -1.0}}, "model.cutoff must be a positive length")


def test_data_cut_off_follows_a_lone_model_cutoff():
    config = _config({"model": {"cutoff": "3.5 angstrom"}})
    assert config.data.cutoff == config.model.cutoff == 3.5


def test_periodic_axis_needs_a_cell_vector():
    cell = [[3, 0, 0], [0, 3, 0], [0, 0, 0]]
    _fails({"data": {"pbc": True, "cell": cell}}, "data.pbc is periodic along axis 2 but data.cell row 2 is zero")
    assert _config({"data": {"pbc": [True, True, False], "cell": cell}}).data.cell == cell


def test_cutoff_disagreement_names_both_values():
    _fails(
        {"model": {"cutoff": 4.0}, "data": {"cut_off": "5 angstrom"}},
        "model.cutoff = 4.0 angstrom disagrees with data.cut_off = 5.0 angstrom",
    )


# ------------------------------------------------------------------------------------------- precision / trainer


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
    assert _config({"model": {"dtype": dtype}, "trainer": trainer}).trainer["precision"] == expected


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
    _fails({"model": {"dtype": dtype}, "trainer": {"precision": precision}}, message)


def test_inference_mode_true_is_refused():
    _fails({"trainer": {"inference_mode": True}}, "trainer.inference_mode = True is not allowed: forces need autograd")
    _fails({"trainer": {"inference_mode": "yes"}}, "trainer.inference_mode = 'yes' is not allowed")
    _fails({"trainer": {"logger": False}}, "trainer.logger is set by physml-md")
    assert trainer_kwargs(_config({"trainer": {"inference_mode": False}}))["inference_mode"] is False


def test_user_trainer_values_win_and_trainer_kwargs_build_a_trainer(tmp_path):
    import lightning.pytorch as pl

    config = _config(
        {
            "training": {"monitor": "val/energy_mae"},
            "trainer": {"max_epochs": 3, "enable_progress_bar": False, "checkpoint": {"save_top_k": 2}},
        }
    )
    assert config.trainer["max_epochs"] == 3 and config.trainer["accelerator"] == "auto"
    assert config.trainer["checkpoint"] == {
        "monitor": "val/energy_mae",
        "save_top_k": 2,
        "save_last": True,
        "mode": "min",
    }
    kwargs = trainer_kwargs(config)
    assert "callbacks" not in kwargs and "checkpoint" not in kwargs and kwargs["inference_mode"] is False
    kwargs["default_root_dir"] = str(tmp_path)
    checkpoint = pl.callbacks.ModelCheckpoint(**config.trainer["checkpoint"])
    trainer = pl.Trainer(**kwargs, logger=False, callbacks=[checkpoint])
    assert trainer.max_epochs == 3 and not trainer.predicting
    assert checkpoint.monitor == "val/energy_mae" and checkpoint.save_top_k == 2


# ------------------------------------------------------------------------------------------- scheduler / early stopping


def test_scheduler_rules():
    one_cycle = _config({"training": {"lr_scheduler": {"name": "one_cycle"}}}).training.lr_scheduler
    assert one_cycle.interval == "step"
    _fails({"training": {"lr_scheduler": {"name": "one_cycle", "interval": "epoch"}}}, "cannot be used with one_cycle")
    _fails(
        {"training": {"lr_scheduler": {"name": "cosine"}}, "trainer": {"max_epochs": -1}},
        "training.lr_scheduler.t_max is unset and trainer.max_epochs = -1",
    )
    cosine = _config({"training": {"lr_scheduler": {"name": "cosine", "monitor": "val/x"}, "monitor": "val/y"}})
    assert cosine.training.lr_scheduler.monitor == "val/x" and cosine.training.early_stopping.monitor == "val/y"
    _fails({"training": {"lr_scheduler": {"name": "plateau"}}}, "training.lr_scheduler.name must be one of")


# ------------------------------------------------------------------------------------------- loss parameter


def _loss(**loss):
    return {"training": {"loss_parameter": loss}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            _loss(weight={"per_system_stress": 1.0}),
            "training.loss_parameter.weight.per_system_stress is set but 'per_system_stress' is not in "
            "training.loss_parameter.loss_components",
        ),
        (
            _loss(target_weight={"per_atom_force": 10.0}),
            "training.loss_parameter.target_weight.per_atom_force is set but "
            "training.loss_parameter.mixing_steps.per_atom_force is not",
        ),
        (
            _loss(target_weight={"per_atom_force": 10.0}, mixing_steps={"per_atom_force": -1.0}),
            "mixing_steps.per_atom_force = -1.0 never takes the weight from 1.0 to the target 10.0; use a positive",
        ),
        (
            _loss(target_weight={"per_atom_force": 0.5}, mixing_steps={"per_atom_force": 0.0}),
            "use a negative step",
        ),
        (
            _loss(mixing_steps={"per_atom_force": 1.0}),
            "mixing_steps.per_atom_force is set but training.loss_parameter.target_weight.per_atom_force is not",
        ),
        (
            _loss(schedule="linear", target_weight={"per_atom_force": 2.0}),
            "target_weight.per_atom_force is set but training.loss_parameter.mixing_epochs.per_atom_force is not",
        ),
        (
            _loss(schedule="linear", target_weight={"per_atom_force": 2.0}, mixing_steps={"per_atom_force": 1.0}),
            "training.loss_parameter.mixing_steps is not used with schedule = 'linear'",
        ),
        (
            _loss(schedule="linear", target_weight={"per_atom_force": 2.0}, mixing_epochs={"per_atom_force": 0}),
            "training.loss_parameter.mixing_epochs.per_atom_force must be >= 1, got 0",
        ),
        (_loss(weight={"per_atom_force": -1.0}), "training.loss_parameter.weight.per_atom_force must be >= 0.0"),
        (_loss(weight={"per_atom_force": 0.0, "per_system_energy": 0}), "every weight is 0"),
        (_loss(loss_components=[]), "must be a non-empty list of loss components"),
        (_loss(loss_components=["per_atom_force", "per_atom_force"]), "lists per_atom_force more than once"),
    ],
)
def test_loss_parameter_errors(raw, message):
    _fails(raw, message)


def test_loss_mixing_accepted():
    step = _config(_loss(target_weight={"per_atom_force": 0.1}, mixing_steps={"per_atom_force": -0.3})).training
    assert step.loss_parameter.target_weight == {"per_atom_force": 0.1}
    linear = _config(
        _loss(schedule="linear", target_weight={"per_system_energy": 9}, mixing_epochs={"per_system_energy": 5})
    ).training.loss_parameter
    assert linear.mixing_epochs == {"per_system_energy": 5} and linear.target_weight == {"per_system_energy": 9.0}
    assert isinstance(linear, LossConfig)


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
    _fails({"model": model, "data": data, **_loss(loss_components=components)}, message)


def test_all_components_with_labels_and_charges():
    config = _config(
        {
            "model": {"charges": True, "coulomb": True},
            "data": {"y_charges": "q", "y_dipole": "mu", "y_total_charge": "Q"},
            **_loss(loss_components=list(LOSS_COMPONENTS)),
        }
    )
    assert list(config.training.loss_parameter.weight) == list(LOSS_COMPONENTS)


# ------------------------------------------------------------------------------------------- data sources


def test_sources_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a.xyz", "b.extxyz", "c.db", "d.csv"):
        Path(name).write_text("")
    assert config_from_dict({"data": {"source": "a.xyz"}}).data.has_files()
    assert config_from_dict({"data": {"train": {"path": "a.xyz"}, "validation": {"path": "b.extxyz"}}})
    _fails({}, "no training data: set data.source", require_files=True)
    _fails({"data": {"source": "a.xyz", "train": {"path": "a.xyz"}}}, "data.source and data.train.path are both set")
    _fails({"data": {"source": "a.xyz", "test": {"path": "c.db"}}}, "data.source and data.test.path are both set")
    _fails({"data": {"validation": {"path": "a.xyz"}}}, "data.train.path is not; set it too")
    _fails({"data": {"source": "missing.xyz"}}, "data.source = 'missing.xyz': no such file", require_files=True)
    _fails({"data": {"train": {"path": "d.csv"}}}, "data.train.path = 'd.csv': unsupported file type", True)
    # data passed as objects: no file needed, and no DataConfig check against files
    assert not _config().data.has_files()
    with pytest.raises(ConfigError, match="no training data"):
        validate_sources(_config())
    assert isinstance(_config().data, DataConfig)


# ------------------------------------------------------------------------------------------- overrides


def test_overrides_parse_toml_values_and_create_tables():
    raw = {"training": {"lr": 1e-3}}
    out = apply_overrides(
        raw,
        [
            "training.lr=1e-4",
            "model.features=8",
            "model.zbl=true",
            "data.pbc=[true, false, true]",
            "data.y_energy='REF energy'",
            "data.cut_off=4.5 angstrom",
            "data.y_stress=null",
            "training.loss_parameter.weight.per_atom_force = 10",
        ],
    )
    assert raw == {"training": {"lr": 1e-3}}  # the input is not modified
    assert out["training"]["lr"] == 1e-4 and out["model"] == {"features": 8, "zbl": True}
    assert out["data"] == {
        "pbc": [True, False, True],
        "y_energy": "REF energy",
        "cut_off": "4.5 angstrom",
        "y_stress": None,
    }
    assert out["training"]["loss_parameter"] == {"weight": {"per_atom_force": 10}}
    config = _config(out)
    assert config.training.loss_parameter.weight["per_atom_force"] == 10.0 and config.data.cutoff == 4.5


def test_override_errors():
    with pytest.raises(ConfigError, match=re.escape("malformed override 'training.lr': write 'section.key=value'")):
        apply_overrides({}, ["training.lr"])
    with pytest.raises(ConfigError, match=re.escape("'data.cut_off' is a value, not a table")):
        apply_overrides({"data": {"cut_off": 5.0}}, ["data.cut_off.x=1"])
    with pytest.raises(ConfigError, match="is not a dotted key"):
        apply_overrides({}, ["training..lr=1"])
    # unknown paths are reported by validation
    _fails(apply_overrides({}, ["data.batchsize=3"]), "unknown key 'data.batchsize'; did you mean")


def test_load_config_applies_overrides(project):
    config = load_config(project / "run.toml", ["data.train.batch_size=2", "trainer.max_epochs=1"])
    assert config.data.train.batch_size == 2 and config.trainer["max_epochs"] == 1
    with pytest.raises(ConfigError, match="data.train.batch_size must be an integer, got 'two'"):
        load_config(project / "run.toml", ["data.train.batch_size=two"])


# ------------------------------------------------------------------------------------------- round trip


def _plain_only(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_only(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def test_round_trip_through_dict_and_torch_save(project, tmp_path):
    config = load_config(project / "run.toml", ["training.ema.decay=0.99", "data.cell=[[5,0,0],[0,5,0],[0,0,9]]"])
    plain = config_to_dict(config)
    assert _plain_only(plain)
    assert config_from_dict(plain) == config
    path = tmp_path / "c.pt"
    torch.save({"config": plain}, path)
    loaded = torch.load(path, weights_only=True)["config"]
    assert config_from_dict(loaded) == config
    assert isinstance(config_from_dict(loaded), Config)


def test_config_to_dict_refuses_objects():
    config = _config()
    config.trainer["logger"] = object()
    with pytest.raises(ConfigError, match="trainer.logger = .* cannot be stored in a checkpoint"):
        config_to_dict(config)


# ------------------------------------------------------------------------------------------- callbacks


def test_instantiate_callbacks_builds_lightning_callbacks(project):
    from lightning.pytorch.callbacks import LearningRateMonitor

    config = load_config(project / "run.toml")
    (callback,) = instantiate_callbacks(config.trainer["callbacks"])
    assert isinstance(callback, LearningRateMonitor) and callback.logging_interval == "step"
    assert instantiate_callbacks([]) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"class_path": "no_such_module_xyz.Callback"}, "cannot import module 'no_such_module_xyz'"),
        (
            {"class_path": "lightning.pytorch.callbacks.LearningRateMonitr"},
            "has no attribute 'LearningRateMonitr'; did you mean 'lightning.pytorch.callbacks.LearningRateMonitor'?",
        ),
        ({"class_path": "collections.OrderedDict"}, "'collections.OrderedDict' is not a lightning Callback class"),
        (
            {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"interval": "step"}},
            "trainer.callbacks[0]: LearningRateMonitor(**init_args) failed",
        ),
    ],
)
def test_instantiate_callbacks_errors(spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        instantiate_callbacks([spec])


def test_callback_specs_are_validated_at_load():
    _fails({"trainer": {"callbacks": {"class_path": "a.B"}}}, "trainer.callbacks must be a list of tables")
    _fails({"trainer": {"callbacks": [{"class_path": 3}]}}, "trainer.callbacks[0].class_path must be a dotted name")
    _fails(
        {"trainer": {"callbacks": [{"class_path": "LearningRateMonitor"}]}},
        "trainer.callbacks[0].class_path must be a dotted name",
    )
    monitor = "lightning.pytorch.callbacks.LearningRateMonitor"
    _fails(
        {"trainer": {"callbacks": [{"class_path": monitor, "init_args": [1]}]}},
        "callbacks[0].init_args must be a table",
    )
    specs = _config({"trainer": {"callbacks": [{"class_path": "a.B"}]}}).trainer["callbacks"]
    assert specs == [{"class_path": "a.B", "init_args": {}}]


# ------------------------------------------------------------------------------------------- sections built in Python


def test_a_section_alone_is_validated_like_a_config_file():
    from physml_md.training.config import MDValidationConfig, validate

    section = validate(MDValidationConfig, {"every_n_epochs": 2, "min_distance": "0.06 nm"}, "training.md_validation")
    assert section.min_distance == pytest.approx(0.6)
    with pytest.raises(ConfigError, match=re.escape("training.md_validation.steps must be >= 1, got 0")):
        validate(MDValidationConfig, {"steps": 0}, "training.md_validation")
    with pytest.raises(ConfigError, match="unknown key 'training.md_validation.step'; did you mean '.*.steps'"):
        validate(MDValidationConfig, {"step": 10}, "training.md_validation")


def test_resolved_values_do_not_change_the_sections_given():
    loss = LossConfig(loss_components=["per_atom_force"], weight={})
    assert loss.weight == {"per_atom_force": 1.0}  # every listed component has its weight
    config = _config({"training": {"monitor": "val/per_atom_force/mae"}, "data": {"cell": [4, 5, 6]}})
    assert config.training.early_stopping.monitor == config.trainer["checkpoint"]["monitor"] == "val/per_atom_force/mae"
    assert config.data.cell == [[4.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 6.0]]  # 3 lengths: orthorhombic
