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


# ------------------------------------------------------------------ structure files and command options (item 3)
@pytest.fixture(scope="module")
def structure_files(tmp_path_factory):
    """One good structure file (one Cu cell), an empty one and one cut in the middle of its only frame."""
    root = tmp_path_factory.mktemp("structure_files")
    good = root / "cu.extxyz"
    write(good, bulk("Cu", "fcc", a=3.6, cubic=True))
    empty = root / "empty.extxyz"
    empty.write_text("")
    text = good.read_text()
    truncated = root / "truncated.extxyz"
    truncated.write_text(text[: len(text) // 2])
    return {"good": good, "empty": empty, "truncated": truncated}


# case -> (command, structure file, extra arguments, what the one line says)
FILE_CASES = {
    "md --index 99": ("md", "good", ["--index", "99"], r"index 99 is out of range: '.*cu\.extxyz' holds 1 structure"),
    "md empty file": ("md", "empty", [], r"'.*empty\.extxyz' holds no structures \(the file is empty\)"),
    "md truncated file": ("md", "truncated", [], r"cannot read '.*truncated\.extxyz'.*truncated or damaged"),
    "validate --index 99": ("validate", "good", ["--index", "99"], r"index 99 is out of range: .* holds 1 structure"),
    "validate empty file": ("validate", "empty", [], r"'.*empty\.extxyz' holds no structures"),
    "evaluate empty file": ("evaluate", "empty", [], r"'.*empty\.extxyz' holds no structures \(the file is empty"),
    "evaluate --index 99": ("evaluate", "good", ["--index", "99"], r"index 99 is out of range: .* holds 1 structure"),
    "evaluate --batch-size -1": ("evaluate", "good", ["--batch-size", "-1"], r"--batch-size must be a positive"),
    "evaluate --batch-size 0": ("evaluate", "good", ["--batch-size", "0"], r"--batch-size must be a positive"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_command_line_structure_files_and_options_exit_2_with_one_line(files, structure_files, case, capsys):
    command, which, extra, expected = FILE_CASES[case]
    path = str(structure_files[which])
    if command == "md":
        argv = ["md", str(files[".pt"]), path, "--steps", "2", "--quiet", *extra]
    elif command == "validate":
        argv = ["validate", str(files[".pt"]), "--structures", path, "--nvt-steps", "2", "--nve-steps", "2", *extra]
    else:
        argv = ["evaluate", str(files[".pt"]), path, *extra]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"physml-md {command}: error: "), captured.err
    assert re.search(expected, lines[0]), lines[0]
    assert "Traceback" not in captured.err and "StopIteration" not in captured.err
    assert not captured.out.strip()  # nothing printed before the error (evaluate printed a header, then nothing)


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


# ------------------------------------------------------------------------------------- [trainer] (item 4)
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
    from physml_md.training.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match=EPOCH_CASES[value]):
        config_from_dict({"trainer": {"max_epochs": value}}, require_files=False)


def test_max_epochs_may_be_left_open_when_another_limit_stops_training():
    from physml_md.training.config import ConfigError, config_from_dict

    for limit in ({"max_steps": 20}, {"max_time": "00:00:10:00"}):
        config = config_from_dict({"trainer": {"max_epochs": None, **limit}}, require_files=False)
        assert config.trainer["max_epochs"] is None
    with pytest.raises(ConfigError, match=r"trainer\.max_steps = 0 trains nothing"):
        config_from_dict({"trainer": {"max_steps": 0}}, require_files=False)
    with pytest.raises(ConfigError, match=r"trainer\.max_steps = -5.*-1 \(no step limit"):
        config_from_dict({"trainer": {"max_steps": -5}}, require_files=False)


@pytest.mark.parametrize("value", ["-1", "0"])
def test_command_line_train_refuses_max_epochs_before_training(tiny_config, tmp_path, value, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", str(config), "--set", f"trainer.max_epochs={value}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"trainer.max_epochs = {value}" in err, err
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_resuming_a_finished_run_says_how_to_train_longer(tiny_config, tmp_path, capsys):
    from physml_md.training.config import ConfigError, config_from_dict
    from physml_md.training.run import train

    tiny_config["trainer"]["max_epochs"] = 1
    result = train(config_from_dict(tiny_config), verbose=False)
    last = result.best_checkpoint.parent / "last.ckpt"
    expected = r"already trained 1 of trainer\.max_epochs = 1 epochs.*raise trainer\.max_epochs"
    with pytest.raises(ConfigError, match=expected):
        train(config_from_dict(tiny_config), ckpt_path=last, verbose=False)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", str(config), "--ckpt-path", str(last)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "raise trainer.max_epochs" in err and "metrics.csv" not in err, err
    versions = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert versions == ["version_0"], versions  # no empty run directory was started


# ------------------------------------------------------------------------------------- lengths (item 5)
@pytest.mark.parametrize("key", ["data.cut_off", "model.cutoff"])
@pytest.mark.parametrize("value", ["5 parsecs", "1000 angstrom", 30.5])
def test_a_cutoff_no_potential_uses_is_refused_by_the_config(key, value):
    from physml_md.training.config import ConfigError, config_from_dict

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


def test_a_neighbour_list_too_large_for_memory_is_refused_before_it_is_built(model):
    """A 1000 angstrom cutoff on a 32-atom cell asked vesin for 23 GB and the process was killed."""
    from physml_md.data.neighbors import neighbor_list

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    expected = r"neighbour list of 32 atoms .* about 1\.\de\+10 pairs .* more than the bound of"
    with pytest.raises(ValueError, match=expected):
        neighbor_list(torch.tensor(atoms.positions), torch.tensor(atoms.cell.array), torch.tensor(atoms.pbc), 1000.0)
    scripted = torch.jit.script(neighbor_list)
    with pytest.raises(torch.jit.Error, match=expected):
        scripted(torch.tensor(atoms.positions), torch.tensor(atoms.cell.array), torch.tensor(atoms.pbc), 1000.0)


# ------------------------------------------------------------------------------------- messages (item 10)
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


# ------------------------------------------------------------------------------ md command (issue 15, item 1 + 6)
@pytest.mark.parametrize("engine", ["ase", "openmm"])
@pytest.mark.parametrize("case", ["NaN positions", "two atoms at one position"])
def test_command_line_md_exits_2_with_the_sentence(files, case, engine, tmp_path, capsys):
    """NaN positions were 'Eigenvalues did not converge' (the velocity draw); OpenMM printed the model's trace."""
    make, start, fix = CASES[case]
    structure = tmp_path / "structure.extxyz"
    write(structure, make())
    for ensemble in ("nve", "nvt"):
        args = [str(files[".pt"]), str(structure), "--engine", engine, "--ensemble", ensemble, "--steps", "10"]
        assert main(["md", *args, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "TorchScript" not in err and "HERE" not in err, err
        assert start in err and fix in err, err
