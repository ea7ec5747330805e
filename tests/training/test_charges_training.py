"""A charge head trained on GFN2-xTB charges and dipoles (tblite): every charge-related loss is wired through."""

import csv

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from physml_md.training.api import PhysMLModel

tblite_ase = pytest.importorskip("tblite.ase")


def _xtb_frames(n_per_molecule=4, seed=0):
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
    with open(result.run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for name in components:
        values = [float(r[f"val/{name}/rmse"]) for r in rows if r.get(f"val/{name}/rmse")]
        assert len(values) == 4 and all(np.isfinite(values)), name
    dipole = [
        float(r["train/per_system_dipole_moment/loss"]) for r in rows if r.get("train/per_system_dipole_moment/loss")
    ]
    assert dipole[-1] < dipole[0]
