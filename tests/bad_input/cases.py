"""The bad structures, damaged files and fixtures every entry point's matrix walks."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.io import write

import physml_md
from physml_md.models import build_model
from tests.export.test_checkpoint import KWARGS, _checkpoint

SPECIES = ["H", "C", "O", "Cu"]


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


def _huge():
    """Finite but absurd: vesin-torch killed the process (SIGFPE) on it before the neighbour list refused it."""
    atoms = molecule("H2O")
    atoms.positions[2, 0] = 1e300
    return atoms


def _stretched():
    """One atom flown 5e5 angstrom away in a plane: vesin-torch's cell grid degenerates (SIGFPE) unless refused."""
    atoms = molecule("H2O")
    atoms.positions[2, :2] = 5e5
    return atoms


# input -> (builder, the start of the model's sentence, the fix it names)
CASES = {
    "unknown element": (lambda: molecule("NH3"), "element(s) N not known to this model", "use a model trained"),
    "NaN positions": (_nan, "positions contain NaN or infinite values", "check the structure"),
    "two atoms at one position": (_overlap, "atoms 1 and 2 (or a periodic image) sit at", "remove the duplicate"),
    "singular cell": (_singular_cell, "cell is singular in its periodic directions", "set pbc False"),
    "empty structure": (lambda: Atoms(), "empty structure (no atoms)", "give at least one atom"),
    "stretched structure": (_stretched, "the structure spans 5.1e+5 x 5.1e+5 x", "remove the distant atoms"),
    "huge coordinate": (_huge, "positions reach 1.0e+300 angstrom (atom 2)", "the MD run that made it blew up"),
}


def assert_plain_sentence(message, start, fix):
    assert message.startswith(start), message
    assert fix in message, message
    assert "TorchScript" not in message and "Traceback" not in message and "\n" not in message, message


def truncated(source, target, fraction):
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


@pytest.fixture(scope="package")
def model():
    torch.manual_seed(0)
    return build_model("painn", species=SPECIES, cutoff=4.0, features=8, n_interactions=1).eval()


@pytest.fixture(scope="package")
def files(model, tmp_path_factory):
    """The same model as a TorchScript file and as a torch.export program."""
    root = tmp_path_factory.mktemp("bad_input")
    return {suffix: physml_md.export_potential(model, root / f"model{suffix}") for suffix in (".pt", ".pt2")}


@pytest.fixture(scope="package")
def good_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoints") / "good.ckpt"
    torch.save(_checkpoint(KWARGS, build_model(**KWARGS)), path)
    return path


@pytest.fixture(scope="package")
def structure_files(tmp_path_factory):
    """One good structure file (one Cu cell), an empty one and one cut in the middle of its only frame."""
    root = tmp_path_factory.mktemp("structure_files")
    good = root / "cu.extxyz"
    write(good, bulk("Cu", "fcc", a=3.6, cubic=True))
    empty = root / "empty.extxyz"
    empty.write_text("")
    text = good.read_text()
    cut = root / "truncated.extxyz"
    cut.write_text(text[: len(text) // 2])
    return {"good": good, "empty": empty, "truncated": cut}
