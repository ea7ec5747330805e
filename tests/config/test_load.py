"""Reading a configuration (training/config.py): TOML and YAML files, overrides, the dict round trip, callbacks."""

import re
from pathlib import Path

import pytest
import torch

from physml_md.config.data import DataConfig
from physml_md.config.load import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    instantiate_callbacks,
    load_config,
    trainer_kwargs,
    validate_sources,
)
from tests.training.helpers import fails, validated

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


@pytest.fixture
def project(tmp_path):
    """A config directory with an (empty) data file beside it: cfg/run.toml, cfg/run.yaml, cfg/data/train.xyz."""
    cfg = tmp_path / "cfg"
    (cfg / "data").mkdir(parents=True)
    (cfg / "data" / "train.xyz").write_text("")
    (cfg / "run.toml").write_text(TOML)
    (cfg / "run.yaml").write_text(YAML)
    return cfg


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
    assert validated({"data": {"source": "data/train.xyz"}}).data.source == "data/train.xyz"


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


def test_yaml_sections_left_empty_count_as_empty(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\ndata:\n  train:\ntrainer:\n")
    assert load_config(path, require_files=False) == validated()


# ------------------------------------------------------------------------------------------- trainer


def test_user_trainer_values_win_and_trainer_kwargs_build_a_trainer(tmp_path):
    import lightning.pytorch as pl

    config = validated(
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


# ------------------------------------------------------------------------------------------- data sources


def test_sources_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a.xyz", "b.extxyz", "c.db", "d.csv"):
        Path(name).write_text("")
    assert config_from_dict({"data": {"source": "a.xyz"}}).data.has_files()
    assert config_from_dict({"data": {"train": {"path": "a.xyz"}, "validation": {"path": "b.extxyz"}}})
    fails({}, "no training data: set data.source", require_files=True)
    fails({"data": {"source": "a.xyz", "train": {"path": "a.xyz"}}}, "data.source and data.train.path are both set")
    fails({"data": {"source": "a.xyz", "test": {"path": "c.db"}}}, "data.source and data.test.path are both set")
    fails({"data": {"validation": {"path": "a.xyz"}}}, "data.train.path is not; set it too")
    fails({"data": {"source": "missing.xyz"}}, "data.source = 'missing.xyz': no such file", require_files=True)
    fails({"data": {"train": {"path": "d.csv"}}}, "data.train.path = 'd.csv': unsupported file type", True)
    # data passed as objects: no file needed, and no DataConfig check against files
    assert not validated().data.has_files()
    with pytest.raises(ConfigError, match="no training data"):
        validate_sources(validated())
    assert isinstance(validated().data, DataConfig)


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
    config = validated(out)
    assert config.training.loss_parameter.weight["per_atom_force"] == 10.0 and config.data.cutoff == 4.5


def test_override_errors():
    with pytest.raises(ConfigError, match=re.escape("malformed override 'training.lr': write 'section.key=value'")):
        apply_overrides({}, ["training.lr"])
    with pytest.raises(ConfigError, match=re.escape("'data.cut_off' is a value, not a table")):
        apply_overrides({"data": {"cut_off": 5.0}}, ["data.cut_off.x=1"])
    with pytest.raises(ConfigError, match="is not a dotted key"):
        apply_overrides({}, ["training..lr=1"])
    # unknown paths are reported by validation
    fails(apply_overrides({}, ["data.batchsize=3"]), "unknown key 'data.batchsize'; did you mean")


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
    config = validated()
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
