import copy
from pathlib import Path

import pytest
import torch

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
