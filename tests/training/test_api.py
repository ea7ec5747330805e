"""physml_md.training.api: PhysMLModel, a model object built from a configuration, trained on Atoms lists."""

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read

from physml_md import PhysMLCalculator
from physml_md.training.api import PhysMLModel
from tests.helpers import assert_close, requires_cuda
from tests.training.helpers import metric_column


def test_python_api_takes_atoms_lists(tiny_config, cu_data):
    frames = read(cu_data, ":")
    del tiny_config["data"]["source"]
    tiny_config["trainer"]["max_epochs"] = 1
    model = PhysMLModel(tiny_config)
    assert model.model_path is None
    result = model.train(train_data=frames[:8], validation_data=frames[8:12], verbose=False)
    assert model.model_path == result.model_path and result.model_path.is_file()
    assert result.test_metrics == {}


def test_python_api_without_data_is_an_error(tiny_config):
    del tiny_config["data"]["source"]
    with pytest.raises(ValueError, match="no training data"):
        PhysMLModel(tiny_config).train()


# ----------------------------------------------------------------------------- a charge head
# A charge head trained on GFN2-xTB charges and dipoles (tblite): every charge-related loss is wired through.


def _xtb_frames(n_per_molecule=4, seed=0):
    """Small molecules labelled by GFN2-xTB (tblite): energy, forces, charges and dipole."""
    tblite_ase = pytest.importorskip("tblite.ase")
    rng = np.random.default_rng(seed)
    frames = []
    for name in ("H2O", "NH3", "CH3OH"):
        for _ in range(n_per_molecule):
            atoms = molecule(name)
            atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
            atoms.calc = tblite_ase.TBLite(method="GFN2-xTB", verbosity=0)
            results = {
                "energy": atoms.get_potential_energy(),
                "forces": atoms.get_forces(),
                "charges": atoms.get_charges(),
                "dipole": atoms.get_dipole_moment(),
            }
            atoms.calc = SinglePointCalculator(atoms, **results)
            frames.append(atoms)
    return frames


@pytest.mark.slow
def test_charge_dipole_and_coulomb_training_runs(tmp_path):
    frames = _xtb_frames()
    components = ["per_system_energy", "per_atom_force", "per_system_dipole_moment", "per_atom_charge"]
    config = {
        "model": {"features": 8, "n_interactions": 1, "n_rbf": 4, "charges": True, "coulomb": True, "seed": 0},
        "data": {"cut_off": "4 angstrom", "y_stress": None, "y_charges": "charges", "y_dipole": "dipole"},
        "training": {"lr": 0.01, "loss_parameter": {"loss_components": components}},
        "trainer": {
            "max_epochs": 4,
            "accelerator": "cpu",
            "default_root_dir": str(tmp_path),
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
    }
    result = PhysMLModel(config).train(train_data=frames[::2], validation_data=frames[1::2], verbose=False)
    metrics_csv = result.run_dir / "metrics.csv"
    for name in components:
        values = metric_column(metrics_csv, f"val/{name}/rmse")
        assert len(values) == 4 and all(np.isfinite(values)), name
    dipole = metric_column(metrics_csv, "train/per_system_dipole_moment/loss")
    assert dipole[-1] < dipole[0]


@requires_cuda
def test_training_on_the_gpu_exports_a_cpu_loadable_model(tiny_config, cu_data):
    """Lightning on a CUDA device: the run finishes, and the exported file answers on the CPU like on the GPU."""
    frames = read(cu_data, ":")
    del tiny_config["data"]["source"]
    tiny_config["trainer"].update({"max_epochs": 2, "accelerator": "gpu", "devices": 1})
    result = PhysMLModel(tiny_config).train(train_data=frames[:8], validation_data=frames[8:12], verbose=False)
    atoms = frames[0].copy()
    atoms.calc = PhysMLCalculator(result.model_path, device="cpu")
    on_cpu = atoms.get_forces()
    atoms.calc = PhysMLCalculator(result.model_path, device="cuda")
    assert_close(atoms.get_forces(), on_cpu, 1e-9, "forces of a GPU-trained model, cuda against cpu")
