"""physml_md.md.engines: the ASE and OpenMM engines behind run_md follow the same trajectory."""

import numpy as np
import pytest

from physml_md.md.runner import run_md
from tests.helpers import rattled_cu
from tests.integrations.openmm_tools import methanol


@pytest.mark.filterwarnings("ignore::physml_md.integrations.ase.ExtrapolationWarning")  # the crude molecule model
@pytest.mark.parametrize("structure", ["periodic", "molecule"])
def test_ase_and_openmm_follow_the_same_nve_trajectory(cu_model, molecule_model, structure):
    """Float64, same start and velocities: velocity Verlet (ASE) and leap-frog started half a step back (OpenMM)
    give the same positions; what is left is the unit constants (ASE's CODATA 2014 against OpenMM's)."""
    model, atoms = (cu_model, rattled_cu(2)) if structure == "periodic" else (molecule_model, methanol(seed=3))
    runs = [
        run_md(model.model_path, atoms, engine=engine, ensemble="nve", steps=40, report_every=5, seed=5)
        for engine in ("ase", "openmm")
    ]
    ase_run, openmm_run = runs
    assert len(ase_run.positions) == len(openmm_run.positions) == 9
    for a, b in zip(ase_run.positions, openmm_run.positions):
        assert np.abs(a - b).max() < 1e-8
    scale = np.abs(ase_run.potential_energies).max()
    assert np.allclose(ase_run.potential_energies, openmm_run.potential_energies, rtol=0, atol=1e-8 * scale)
    assert np.allclose(ase_run.kinetic_energies, openmm_run.kinetic_energies, rtol=1e-7, atol=0)
    # and the positions did move: the comparison is not of a frozen structure
    assert np.abs(ase_run.positions[-1] - ase_run.positions[0]).max() > 1e-3
