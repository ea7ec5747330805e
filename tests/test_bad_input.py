"""Bad input through every entry point: one plain error naming the problem and the fix (issue 15, items 1 and 2).

Errors raised inside the exported model reach the user as the model's own ValueError sentence, whether the file
is TorchScript (where PyTorch wraps it in a ``torch.jit.Error`` with a long trace) or a torch.export program; a
damaged checkpoint or export file is named as such, with what to do.
"""

import os
import re

import numpy as np
import openmm
import pytest
import torch
import yaml
from ase import Atoms
from ase.build import bulk, molecule
from ase.io import write
from openmm import unit

import physml_md
from physml_md import torchscript
from physml_md.checkpoint import CheckpointError, exportable_from_checkpoint, load_checkpoint
from physml_md.cli import main
from physml_md.export import ExportFormatError
from physml_md.integrations.ase import PhysMLCalculator
from physml_md.integrations.openmm import create_force
from physml_md.models import build_model
from tests.helpers import inputs
from tests.test_checkpoint import KWARGS, _checkpoint

SPECIES = ["H", "C", "O", "Cu"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("painn", species=SPECIES, cutoff=4.0, features=8, n_interactions=1).eval()


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    """The same model as a TorchScript file and as a torch.export program."""
    root = tmp_path_factory.mktemp("bad_input")
    return {suffix: physml_md.export_potential(model, root / f"model{suffix}") for suffix in (".pt", ".pt2")}


def _nan():
    atoms = molecule("H2O")
    atoms.positions[1, 0] = np.nan
    return atoms


def _overlap():
    atoms = molecule("H2O")
    atoms.positions[2] = atoms.positions[1]
    return atoms


def _singular_cell():
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.cell[2] = atoms.cell[1]
    return atoms


# input -> (builder, the start of the model's sentence, the fix it names)
CASES = {
    "unknown element": (lambda: molecule("NH3"), "element(s) N not known to this model", "use a model trained"),
    "NaN positions": (_nan, "positions contain NaN or infinite values", "check the structure"),
    "two atoms at one position": (_overlap, "atoms 1 and 2 (or a periodic image) sit at", "remove the duplicate"),
    "singular cell": (_singular_cell, "cell is singular in its periodic directions", "set pbc False"),
    "empty structure": (lambda: Atoms(), "empty structure (no atoms)", "give at least one atom"),
}


def _assert_plain_sentence(message, start, fix):
    assert message.startswith(start), message
    assert fix in message, message
    assert "TorchScript" not in message and "Traceback" not in message and "\n" not in message, message


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_loaded_file_raises_the_models_own_value_error(files, case):
    make, start, fix = CASES[case]
    messages = {}
    for suffix, path in files.items():
        with pytest.raises(ValueError) as error:
            physml_md.load_potential(path)(inputs(make()))
        assert type(error.value) is ValueError, f"{suffix}: {type(error.value).__name__}"
        _assert_plain_sentence(str(error.value), start, fix)
        messages[suffix] = str(error.value)
    if case == "singular cell":  # the cell in the sentence: TorchScript prints 0.0 as "0.", Python as "0.0"
        messages = {suffix: re.sub(r"\.0(?=[,\]])", ".", message) for suffix, message in messages.items()}
    assert messages[".pt"] == messages[".pt2"]


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
@pytest.mark.parametrize("case", sorted(set(CASES) - {"unknown element"}))  # the calculator checks elements itself
def test_the_ase_calculator_raises_the_models_own_value_error(files, case, suffix):
    make, start, fix = CASES[case]
    atoms = make()
    atoms.calc = PhysMLCalculator(files[suffix])
    with pytest.raises(ValueError) as error:
        atoms.get_potential_energy()
    assert type(error.value) is ValueError
    _assert_plain_sentence(str(error.value), start, fix)


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
@pytest.mark.parametrize("case", ["NaN positions", "two atoms at one position"])
def test_openmm_pythonforce_reports_the_models_sentence(files, case, suffix):
    """OpenMM turns the callback's exception into an OpenMMException carrying its message: only the sentence."""
    make, start, fix = CASES[case]
    atoms = make()
    force = create_force(files[suffix], atoms.numbers, periodic=False, backend="pythonforce")
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(mass)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(atoms.positions / 10.0 * unit.nanometer)
    with pytest.raises(openmm.OpenMMException) as error:
        context.getState(getEnergy=True)
    _assert_plain_sentence(str(error.value), start, fix)


@pytest.mark.parametrize("case", ["NaN positions", "two atoms at one position", "unknown element"])
def test_command_line_evaluate_exits_2_with_the_sentence(files, case, tmp_path, capsys):
    make, start, fix = CASES[case]
    structures = tmp_path / "structures.extxyz"
    write(structures, make())
    assert main(["evaluate", str(files[".pt"]), str(structures)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "TorchScript" not in err
    assert start in err and fix in err


# ---------------------------------------------------------------------------------------- damaged files (item 2)
@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoints") / "good.ckpt"
    torch.save(_checkpoint(KWARGS, build_model(**KWARGS)), path)
    return path


def _truncated(source, target, fraction):
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.999], ids=["start", "half", "last_bytes"])
def test_a_truncated_checkpoint_is_named_as_such_everywhere(good_checkpoint, tmp_path, fraction):
    path = _truncated(good_checkpoint, tmp_path / "cut.ckpt", fraction)
    expected = re.escape(str(path)) + r".*damaged or truncated.*copy it again"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=expected):
        exportable_from_checkpoint(path)
    with pytest.raises(CheckpointError, match=expected):
        PhysMLCalculator(path)
    with pytest.raises(CheckpointError, match=expected):
        create_force(path, [29], periodic=True, backend="pythonforce")


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


def test_a_truncated_export_is_named_as_such(files, tmp_path):
    for suffix in (".pt", ".pt2"):
        path = _truncated(files[suffix], tmp_path / f"cut{suffix}", 0.5)
        with pytest.raises(ExportFormatError, match=r"damaged or truncated"):
            physml_md.load_potential(path)


def test_export_into_a_directory_is_one_clear_error(model, tmp_path):
    with pytest.raises(ValueError, match=r"is a directory: give the exported file's name, e.g. .*model\.pt"):
        physml_md.export_potential(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["truncated checkpoint", "exported file", "output directory"])
def test_command_line_export_exits_2_with_a_sentence(good_checkpoint, files, case, tmp_path, capsys):
    if case == "truncated checkpoint":
        argv = [str(_truncated(good_checkpoint, tmp_path / "cut.ckpt", 0.5)), str(tmp_path / "out.pt")]
        expected = "damaged or truncated"
    elif case == "exported file":  # `export` of a .pt (truncated or not): it reads checkpoints
        argv = [str(_truncated(files[".pt"], tmp_path / "cut.pt", 0.5)), str(tmp_path / "out.pt")]
        expected = "damaged or truncated"
    else:
        (tmp_path / "out").mkdir()
        argv = [str(good_checkpoint), str(tmp_path / "out")]
        expected = "is a directory"
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and expected in err, err


def test_command_line_train_from_a_truncated_checkpoint_exits_2(good_checkpoint, tiny_config, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    cut = _truncated(good_checkpoint, tmp_path / "cut.ckpt", 0.5)
    assert main(["train", str(config), "--ckpt-path", str(cut)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "damaged or truncated" in err, err
