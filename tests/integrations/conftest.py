"""Trained tiny potentials for the engine tests (session-scoped: each trains once, in a few seconds)."""

import copy

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from physml_md.training.config import config_from_dict
from physml_md.training.run import train
from tests.conftest import TINY_CONFIG


def _train(raw, root, **data):
    raw["trainer"]["default_root_dir"] = str(root)
    return train(config_from_dict(raw, require_files=not data), verbose=False, **data)


@pytest.fixture(scope="session")
def cu_model(cu_data, tmp_path_factory):
    """A float64 PaiNN trained on the EMT Cu data (energy, forces, stress): (TrainResult)."""
    raw = copy.deepcopy(TINY_CONFIG)
    raw["data"]["source"] = str(cu_data)
    raw["trainer"]["max_epochs"] = 30
    raw["training"]["ema"] = {"decay": 0.5}
    return _train(raw, tmp_path_factory.mktemp("cu_model"))


def emt_molecules(n_per_molecule=12, seed=0):
    """Rattled small molecules labelled by ASE's EMT (which has H, C, N, O parameters)."""
    rng = np.random.default_rng(seed)
    frames = []
    for name in ("CH4", "H2O", "NH3", "C2H6", "CH3OH"):
        for _ in range(n_per_molecule):
            atoms = molecule(name)
            atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
            atoms.calc = EMT()
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
            frames.append(atoms)
    return frames


@pytest.fixture(scope="session")
def molecule_model(tmp_path_factory):
    """A float64 PaiNN trained on EMT-labelled molecules (energy and forces): (TrainResult)."""
    raw = copy.deepcopy(TINY_CONFIG)
    raw["data"]["y_stress"] = None
    raw["data"].pop("splitting_strategy")
    raw["training"]["loss_parameter"] = {"loss_components": ["per_system_energy", "per_atom_force"]}
    raw["trainer"]["max_epochs"] = 40
    frames = emt_molecules()
    return _train(raw, tmp_path_factory.mktemp("molecule_model"), train_data=frames[::2], validation_data=frames[1::2])
