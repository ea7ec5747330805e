import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from tests.helpers import load_script


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    """Run a test under both model dtypes (tolerances from tests.helpers, keyed by dtype)."""
    return request.param


@pytest.fixture(autouse=True)
def _default_dtype_unchanged():
    """No code under test may change torch's global default dtype."""
    before = torch.get_default_dtype()
    yield
    assert torch.get_default_dtype() == before, "torch's default dtype was changed"


def pytest_configure(config):
    # Small test systems run several times faster on one thread than on two on this 2-core machine
    # (thread start-up dominates); the suite's time budget depends on it.
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``torchforce`` need openmm-torch's TorchForce: skipped, with the reason, where it does not load
    (the newest-torch environment of ``make test-newest`` has no openmm-torch)."""
    marked = [item for item in items if item.get_closest_marker("torchforce")]
    if not marked:
        return
    from physml_md.integrations.openmm import TORCHFORCE_INSTALL, available_backends

    if "torchforce" in available_backends():
        return
    reason = f"openmm-torch's TorchForce does not load beside torch {torch.__version__} ({TORCHFORCE_INSTALL})"
    for item in marked:
        item.add_marker(pytest.mark.skip(reason=reason))


# ---- shared training fixtures: a small EMT-labelled Cu data set and a tiny, fast training configuration
MAKE_DATA = Path(__file__).resolve().parents[1] / "examples" / "cu_emt" / "make_data.py"


def _make_data_module():
    return load_script(MAKE_DATA)


@pytest.fixture(scope="session")
def cu_data(tmp_path_factory) -> Path:
    """20 strained, MD-sampled 32-atom Cu cells with EMT energies, forces and stress."""
    out = tmp_path_factory.mktemp("cu_data") / "cu.extxyz"
    return _make_data_module().make_data(out, n_structures=20, seed=0, temperatures=(300.0, 900.0))


TINY_CONFIG = {
    "model": {"features": 16, "n_interactions": 1, "n_rbf": 4, "dtype": "float64", "seed": 1},
    "data": {
        "cut_off": "4.0 angstrom",
        "train": {"batch_size": 4},
        "validation": {"batch_size": 8},
        "test": {"batch_size": 8},
        "splitting_strategy": {"name": "random_splitting_strategy", "data_split": [0.6, 0.2, 0.2]},
    },
    "training": {
        "lr": 0.02,
        "loss_parameter": {
            "loss_components": ["per_system_energy", "per_atom_force", "per_system_stress"],
            "weight": {"per_system_energy": 1.0, "per_atom_force": 1.0, "per_system_stress": 100.0},
        },
    },
    "trainer": {
        "max_epochs": 3,
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "deterministic": True,
    },
}


@pytest.fixture
def tiny_config(tmp_path, cu_data) -> dict:
    """A raw configuration dict (edit it, then load with config_from_dict) writing into tmp_path/runs."""
    raw = copy.deepcopy(TINY_CONFIG)
    raw["data"]["source"] = str(cu_data)
    raw["trainer"]["default_root_dir"] = str(tmp_path / "runs")
    return raw


# ---- trained tiny potentials for the engine and MD tests (session-scoped: each trains once, in a few seconds)
def _train(raw, root, **data):
    from physml_md.config.load import config_from_dict
    from physml_md.training.run import train

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


COMMITTEE_EPOCHS = 20


@pytest.fixture(scope="session")
def cu_committee(cu_data, tmp_path_factory):
    """A committee of 3 float64 PaiNNs, bootstrap samples, trained on the EMT Cu data: (CommitteeResult, raw
    config dict)."""
    from physml_md.config.load import config_from_dict
    from physml_md.learning.committee_training import train_committee

    raw = copy.deepcopy(TINY_CONFIG)
    raw["data"]["source"] = str(cu_data)
    raw["trainer"]["max_epochs"] = COMMITTEE_EPOCHS
    raw["trainer"]["default_root_dir"] = str(tmp_path_factory.mktemp("cu_committee"))
    raw["training"].update(ema={"decay": 0.5}, committee=3, bootstrap=True)
    return train_committee(config_from_dict(raw), verbose=False), raw


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


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """An untrained Cu model file and 3 EMT-labelled Cu frames: (model path, data path, frames, model)."""
    from ase.build import bulk
    from ase.io import write

    from physml_md.export import export_potential
    from physml_md.models import build_model

    folder = tmp_path_factory.mktemp("cli")
    frames = []
    for seed in range(3):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.05, seed=seed)
        atoms.calc = EMT()
        atoms.get_forces()
        frames.append(atoms)
    write(folder / "cu.extxyz", frames)
    model = build_model(species=["Cu"], cutoff=4.0, features=8, n_interactions=1).eval()
    export_potential(model, folder / "model.pt")
    return folder / "model.pt", folder / "cu.extxyz", frames, model
