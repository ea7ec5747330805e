"""Bad input through the Python API (build_model, the model itself, export_potential, load_potential, checkpoints,
readers, the training configuration and API, the neighbour list): one ValueError-family error naming the problem."""

import os
import re

import pytest
import torch
from ase.build import bulk
from ase.io import write

import physml_md
from physml_md.export import ExportFormatError, torchscript
from physml_md.export.checkpoint import CheckpointError, exportable_from_checkpoint, load_checkpoint
from physml_md.models import build_model
from tests.bad_input.cases import CASES, assert_plain_sentence, truncated
from tests.helpers import inputs


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_loaded_file_raises_the_models_own_value_error(files, case):
    make, start, fix = CASES[case]
    messages = {}
    for suffix, path in files.items():
        with pytest.raises(ValueError) as error:
            physml_md.load_potential(path)(inputs(make()))
        assert type(error.value) is ValueError, f"{suffix}: {type(error.value).__name__}"
        assert_plain_sentence(str(error.value), start, fix)
        messages[suffix] = str(error.value)
    # numbers in the sentence (a cell, a cutoff): TorchScript prints 0.0 as "0.", Python as "0.0"
    messages = {suffix: re.sub(r"\.0(?=[,\] ])", ".", message) for suffix, message in messages.items()}
    assert messages[".pt"] == messages[".pt2"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_model_itself_raises_the_same_value_error(model, case):
    """The eager model (what build_model returns, before export) says the same as its exported file."""
    make, start, fix = CASES[case]
    with pytest.raises(ValueError) as error:
        model(inputs(make()))
    assert type(error.value) is ValueError
    assert_plain_sentence(str(error.value), start, fix)


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.999], ids=["start", "half", "last_bytes"])
def test_a_truncated_checkpoint_is_named_as_such(good_checkpoint, tmp_path, fraction):
    path = truncated(good_checkpoint, tmp_path / "cut.ckpt", fraction)
    expected = re.escape(str(path)) + r".*damaged or truncated.*copy it again"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=expected):
        exportable_from_checkpoint(path)


def test_random_bytes_and_text_are_not_called_pickled_objects(tmp_path):
    for name, content in {"random.ckpt": os.urandom(5000), "text.ckpt": b"not a checkpoint", "empty.ckpt": b""}.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(path)
        assert "pickled" not in str(error.value) and "is not a PyTorch checkpoint" in str(error.value), name


def test_an_exported_model_is_not_a_checkpoint(files, tmp_path):
    for path in files.values():
        with pytest.raises(CheckpointError, match=r"is an exported model, not a training checkpoint"):
            load_checkpoint(path)
    other = tmp_path / "linear.pt"
    torchscript.save(torchscript.script(torch.nn.Linear(2, 2)), str(other))
    with pytest.raises(CheckpointError, match=r"is a TorchScript file, not a training checkpoint"):
        load_checkpoint(other)


def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.999], ids=["start", "half", "last_bytes"])
def test_a_truncated_export_is_named_as_such(files, tmp_path, fraction):
    for suffix in (".pt", ".pt2"):
        path = truncated(files[suffix], tmp_path / f"cut{suffix}", fraction)
        with pytest.raises(ExportFormatError, match=r"damaged or truncated"):
            physml_md.load_potential(path)


def test_export_into_a_directory_is_one_clear_error(model, tmp_path):
    with pytest.raises(ValueError, match=r"is a directory: give the exported file's name, e.g. .*model\.pt"):
        physml_md.export_potential(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- structure files
def test_read_structure_reads_any_ase_file_and_names_the_index(structure_files):
    from physml_md.data.readers import read_structure, read_structures

    atoms = read_structure(structure_files["good"], index=-1)
    assert atoms.get_chemical_formula() == "Cu4"
    # ase.io.read itself returns the first structure for any index below -N
    with pytest.raises(ValueError, match=r"index -2 is out of range: .* holds 1 structure \(valid: -1 to 0\)"):
        read_structure(structure_files["good"], index=-2)
    with pytest.raises(ValueError, match=r"index -2 is out of range: .* holds 1 structure \(valid: -1 to 0\)"):
        read_structures(structure_files["good"], index=-2)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_structure(structure_files["good"].with_name("missing.extxyz"))


@pytest.mark.parametrize(
    ("which", "expected"),
    [("empty", r"'.*empty\.extxyz' holds no structures"), ("truncated", r"cannot read '.*truncated\.extxyz'")],
)
def test_read_structure_names_an_empty_or_truncated_file(structure_files, which, expected):
    from physml_md.data.readers import read_structure

    with pytest.raises(ValueError, match=expected):
        read_structure(structure_files[which])


def test_a_nan_energy_label_is_called_nan_not_missing(tmp_path):
    from physml_md.data.readers import read_dataset

    frames = [bulk("Cu", "fcc", a=3.6), bulk("Cu", "fcc", a=3.7)]
    frames[0].info["energy"] = -1.0
    frames[1].info["energy"] = float("nan")
    path = tmp_path / "nan.extxyz"
    write(path, frames)
    with pytest.raises(ValueError) as error:
        read_dataset(path)
    message = str(error.value)
    assert "stored as NaN in 1 of 2 structures" in message and "(indices 1)" in message, message
    assert "give those structures a finite 'energy' or remove them" in message, message
    assert "set keys.energy to the name your file uses" not in message, message


# ------------------------------------------------------------------------------- training configuration and API
# max_epochs value -> what the sentence says
EPOCH_CASES = {
    "two": r"trainer\.max_epochs must be an integer, got 'two'",
    -1: r"trainer\.max_epochs = -1 .*would train until killed.*give a positive number of epochs",
    0: r"trainer\.max_epochs = 0 trains nothing.*give a positive number of epochs",
    None: r"trainer\.max_epochs = null sets no limit.*set trainer\.max_steps or trainer\.max_time",
    2.5: r"trainer\.max_epochs must be an integer, got 2\.5",
}


@pytest.mark.parametrize("value", list(EPOCH_CASES), ids=str)
def test_max_epochs_must_be_a_positive_integer(value):
    from physml_md.config.load import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match=EPOCH_CASES[value]):
        config_from_dict({"trainer": {"max_epochs": value}}, require_files=False)


def test_max_epochs_may_be_left_open_when_another_limit_stops_training():
    from physml_md.config.load import ConfigError, config_from_dict

    for limit in ({"max_steps": 20}, {"max_time": "00:00:10:00"}):
        config = config_from_dict({"trainer": {"max_epochs": None, **limit}}, require_files=False)
        assert config.trainer["max_epochs"] is None
    with pytest.raises(ConfigError, match=r"trainer\.max_steps = 0 trains nothing"):
        config_from_dict({"trainer": {"max_steps": 0}}, require_files=False)
    with pytest.raises(ConfigError, match=r"trainer\.max_steps = -5.*-1 \(no step limit"):
        config_from_dict({"trainer": {"max_steps": -5}}, require_files=False)


def test_resuming_a_finished_run_says_how_to_train_longer(tiny_config, tmp_path):
    from physml_md.config.load import ConfigError, config_from_dict
    from physml_md.training.run import train

    tiny_config["trainer"]["max_epochs"] = 1
    result = train(config_from_dict(tiny_config), verbose=False)
    last = result.best_checkpoint.parent / "last.ckpt"
    expected = r"already trained 1 of trainer\.max_epochs = 1 epochs.*raise trainer\.max_epochs"
    with pytest.raises(ConfigError, match=expected):
        train(config_from_dict(tiny_config), ckpt_path=last, verbose=False)


def test_training_from_a_truncated_checkpoint_names_it(good_checkpoint, tiny_config, tmp_path):
    from physml_md.config.load import config_from_dict
    from physml_md.training.run import train

    cut = truncated(good_checkpoint, tmp_path / "cut.ckpt", 0.5)
    with pytest.raises(CheckpointError, match=r"damaged or truncated"):
        train(config_from_dict(tiny_config), ckpt_path=cut, verbose=False)


@pytest.mark.parametrize("key", ["data.cut_off", "model.cutoff"])
@pytest.mark.parametrize("value", ["5 parsecs", "1000 angstrom", 30.5])
def test_a_cutoff_no_potential_uses_is_refused_by_the_config(key, value):
    from physml_md.config.load import ConfigError, config_from_dict

    section, name = key.split(".")
    expected = r"^the cut-off \(data\.cut_off, model\.cutoff\) = .* is longer than 30 angstrom.*check the unit"
    with pytest.raises(ConfigError, match=expected) as error:
        config_from_dict({section: {name: value}}, require_files=False)
    assert "\n" not in str(error.value)  # one sentence, though the value is copied to both keys
    assert config_from_dict({section: {name: "3 nm"}}, require_files=False).data.cutoff == pytest.approx(30.0)


@pytest.mark.parametrize("cutoff", [30.5, 1.5e27])
def test_build_model_refuses_a_cutoff_no_potential_uses(cutoff):
    with pytest.raises(ValueError, match=r"cutoff .* is longer than 30 angstrom"):
        build_model(species=["Cu"], cutoff=cutoff, features=8, n_interactions=1)


def test_a_neighbour_list_too_large_for_memory_is_refused_before_it_is_built():
    """A 1000 angstrom cutoff on a 32-atom cell asked vesin for 23 GB and the process was killed."""
    from physml_md.data.neighbors import neighbor_list

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    expected = r"neighbour list of 32 atoms .* about 1\.\de\+10 pairs .* more than the bound of"
    args = (torch.tensor(atoms.positions), torch.tensor(atoms.cell.array), torch.tensor(atoms.pbc), 1000.0)
    with pytest.raises(ValueError, match=expected):
        neighbor_list(*args)
    with pytest.raises(torch.jit.Error, match=expected):
        torch.jit.script(neighbor_list)(*args)
