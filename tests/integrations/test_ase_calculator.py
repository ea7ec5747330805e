"""PhysMLCalculator in real ASE clients: finite differences, caching, batches, MD, optimisers, cell filters."""

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.filters import FrechetCellFilter
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from ase.vibrations import Vibrations

from physml_md import PhysMLCalculator, export_potential, load_potential
from physml_md.checkpoint import potential_from_checkpoint
from physml_md.models import MODEL_NAMES, build_model
from tests.helpers import EXACT, assert_close, requires_cuda

SPECIES = ["H", "C", "O", "Al", "Cu"]


def _model(dtype=torch.float64, arch="painn", **kwargs):
    return build_model(arch, species=SPECIES, cutoff=4.0, dtype=dtype, features=16, n_interactions=2, seed=3, **kwargs)


def _alloy():
    atoms = bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2))
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.03, 0.0], [0.0, 0.98, 0.05], [0.02, 0.0, 1.02]]), True)
    atoms.numbers[[1, 5]] = 13
    atoms.rattle(0.05, seed=1)
    return atoms


def _ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    return atoms


@pytest.fixture(scope="module")
def exported_models(tmp_path_factory):
    """arch -> the path of its exported float64 model, made once per module."""
    paths = {}

    def get(arch):
        if arch not in paths:
            paths[arch] = export_potential(_model(arch=arch), tmp_path_factory.mktemp(arch) / "model.pt")
        return paths[arch]

    return get


@pytest.fixture(scope="module")
def exported(exported_models):
    """The model of the calculator-contract tests (caching, threads, errors), which do not depend on it."""
    return exported_models("painn")


@pytest.mark.parametrize("arch", MODEL_NAMES)
@pytest.mark.parametrize("make", [_alloy, _ethanol], ids=["periodic_alloy", "ethanol"])
def test_forces_and_stress_match_finite_differences(exported_models, make, arch):
    atoms = make()
    atoms.calc = PhysMLCalculator(exported_models(arch))
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=1e-4)
    assert np.abs(forces - numerical).max() / np.abs(forces).max() <= 1e-6
    if atoms.pbc.all():
        stress = atoms.get_stress()
        numerical = calculate_numerical_stress(atoms, eps=1e-5)
        assert np.abs(stress - numerical).max() / np.abs(stress).max() <= 1e-6


class _Counting:
    """Wraps the calculator's potential and counts model calls."""

    def __init__(self, potential):
        self.potential, self.calls = potential, 0
        self.dtype, self.atomic_numbers = potential.dtype, potential.atomic_numbers

    def __call__(self, data):
        self.calls += 1
        return self.potential(data)


def _change_positions(atoms):
    atoms.positions[0, 0] += 0.01


def _change_numbers(atoms):
    atoms.numbers[0] = 13


def _change_cell(atoms):
    atoms.set_cell(atoms.cell.array * 1.01, scale_atoms=False)


def _change_pbc(atoms):
    atoms.pbc = [True, True, False]


def _change_charges(atoms):
    atoms.set_initial_charges([0.1] + [0.0] * (len(atoms) - 1))


@pytest.mark.parametrize(
    "change", [_change_positions, _change_numbers, _change_cell, _change_pbc, _change_charges], ids=lambda f: f.__name__
)
def test_a_system_change_triggers_a_new_calculation(exported, change):
    atoms = _alloy()
    calc = PhysMLCalculator(exported)
    calc.potential = _Counting(calc.potential)
    atoms.calc = calc
    atoms.get_forces()
    atoms.get_potential_energy()
    assert calc.potential.calls == 1
    change(atoms)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert calc.potential.calls == 2
    fresh = atoms.copy()
    fresh.calc = PhysMLCalculator(exported)
    assert_close(energy, fresh.get_potential_energy(), 1e-12, "energy after the change")  # nothing stale
    assert_close(forces, fresh.get_forces(), 1e-12, "forces after the change")


def test_other_changes_do_not_recalculate(exported):
    atoms = _alloy()
    calc = PhysMLCalculator(exported)
    calc.potential = _Counting(calc.potential)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    atoms.set_initial_magnetic_moments([1.0] * len(atoms))
    atoms.info["note"] = "x"
    atoms.set_momenta(np.ones((len(atoms), 3)))
    atoms.set_tags(np.arange(len(atoms)))
    atoms.set_masses([70.0] * len(atoms))
    assert atoms.get_potential_energy() == energy and calc.potential.calls == 1
    atoms.get_forces(), atoms.get_stress(), calc.get_property("energies", atoms)
    assert calc.potential.calls == 1


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_batch_equals_one_by_one(exported_models, arch):
    exported = exported_models(arch)
    structures = [_alloy(), _ethanol(), bulk("Cu", "fcc", a=3.6, cubic=True), molecule("CH4")]
    calc = PhysMLCalculator(exported)
    batch = calc.calculate_batch(structures)
    for atoms, result in zip(structures, batch):
        atoms.calc = PhysMLCalculator(exported)
        assert_close(result["energy"], atoms.get_potential_energy(), 1e-12, "energy")
        assert_close(result["forces"], atoms.get_forces(), 1e-12, "forces")
        assert_close(result["energies"], atoms.get_potential_energies(), 1e-12, "energies")
        assert ("stress" in result) == bool(atoms.pbc.any())
        if "stress" in result:
            assert_close(result["stress"], atoms.get_stress(), 1e-12, "stress")
    assert calc.calculate_batch([]) == []


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_float32_batch_equals_one_by_one(tmp_path, arch):
    path = export_potential(_model(torch.float32, arch=arch), tmp_path / "f32.pt")
    structures = [_alloy(), _ethanol()]
    batch = PhysMLCalculator(path).calculate_batch(structures)
    for atoms, result in zip(structures, batch):
        atoms.calc = PhysMLCalculator(path, dtype="float32")
        assert_close(result["forces"], atoms.get_forces(), EXACT[torch.float32], "forces")


def _direct(potential, atoms):
    data = {
        "positions": torch.tensor(atoms.positions),
        "atomic_numbers": torch.tensor(atoms.numbers),
        "cell": torch.tensor(atoms.cell.array).unsqueeze(0),
        "pbc": torch.tensor(atoms.pbc).unsqueeze(0),
    }
    with torch.enable_grad():
        return potential(data)


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_numbers_equal_the_module_called_directly(exported_models, arch):
    exported = exported_models(arch)
    atoms = _alloy()
    direct = _direct(load_potential(exported), atoms)
    for model in (exported, load_potential(exported), _model(arch=arch)):
        atoms.calc = PhysMLCalculator(model)
        assert_close(atoms.get_potential_energy(), float(direct["energy"][0]), 1e-12, "energy")
        assert_close(atoms.get_forces(), direct["forces"].numpy(), 1e-12, "forces")
        assert_close(atoms.calc.results["energies"], direct["energies"].numpy(), 1e-12, "energies")
        assert_close(atoms.get_stress(voigt=False), direct["stress"][0].numpy(), 1e-12, "stress")


def test_checkpoint_numbers_equal_the_module_called_directly(cu_model):
    # a training checkpoint: its EMA weights, scripted on the fly
    cu = bulk("Cu", "fcc", a=3.62, cubic=True).repeat(2)
    cu.rattle(0.05, seed=4)
    direct = _direct(potential_from_checkpoint(cu_model.best_checkpoint), cu)
    cu.calc = PhysMLCalculator(cu_model.best_checkpoint)
    assert_close(cu.get_forces(), direct["forces"].numpy(), 1e-12, "forces from a checkpoint")
    assert_close(cu.get_stress(voigt=False), direct["stress"][0].numpy(), 1e-12, "stress from a checkpoint")


def _nve_drift(calc, timestep_fs, steps):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=600, rng=np.random.default_rng(0))
    Stationary(atoms)
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    totals = []
    dynamics.attach(lambda: totals.append(atoms.get_total_energy()), interval=10)
    dynamics.run(steps)
    return np.max(np.abs(np.array(totals) - totals[0])) / len(atoms)


@pytest.mark.slow
def test_nve_energy_is_conserved(cu_model):
    calc = PhysMLCalculator(cu_model.model_path, num_threads=1)
    drift = _nve_drift(calc, 0.5, 1000)
    assert drift < 1e-4, f"NVE drift {drift:.2e} eV/atom over 1000 steps of 0.5 fs"
    assert _nve_drift(calc, 10.0, 50) > 20 * drift  # the measure has teeth: a too large step drifts


@pytest.mark.filterwarnings("ignore::physml_md.integrations.ase.ExtrapolationWarning")  # its C-O relaxes to 1.07 A
def test_bfgs_relaxes_a_molecule(molecule_model):
    atoms = molecule("CH3OH")
    atoms.rattle(0.1, seed=2)
    bonded = atoms.get_all_distances() < 1.6
    atoms.calc = PhysMLCalculator(molecule_model.model_path)
    start = atoms.get_potential_energy()
    optimizer = BFGS(atoms, logfile=None)
    assert optimizer.run(fmax=0.05, steps=300)
    assert np.abs(atoms.get_forces()).max() < 0.05 and atoms.get_potential_energy() < start
    assert atoms.get_all_distances()[bonded].max() < 2.0  # relaxed, not blown apart
    vibrations = Vibrations(atoms, name=str(molecule_model.run_dir / "vib"))
    vibrations.run()
    energies = vibrations.get_energies()
    vibrations.clean()
    # near a minimum: no large imaginary mode (< 0.02 eV, 160 cm^-1: the crude model's soft CH3 torsion and the
    # six translations/rotations may come out slightly imaginary) and bond stretches are there (> 0.2 eV)
    assert np.abs(energies.imag).max() < 0.02, energies
    assert np.abs(energies.real).max() > 0.2


def _relaxed_lattice_constant(calc, a=3.75):
    atoms = bulk("Cu", "fcc", a=a, cubic=True)
    atoms.calc = calc
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-3, steps=200)
    return atoms.cell.lengths()[0]


def test_cell_filter_relaxes_toward_emt_lattice_constant(cu_model):
    emt = _relaxed_lattice_constant(EMT())
    ours = _relaxed_lattice_constant(PhysMLCalculator(cu_model.model_path))
    assert abs(ours - emt) < abs(3.75 - emt) / 4, (ours, emt)


def test_clear_errors(exported):
    atoms = bulk("Fe", "bcc", a=2.87)
    atoms.calc = PhysMLCalculator(exported)
    with pytest.raises(ValueError, match=r"element\(s\) Fe not known.*H, C, O, Al, Cu"):
        atoms.get_potential_energy()
    water = molecule("H2O")
    water.calc = PhysMLCalculator(exported)
    with pytest.raises(PropertyNotImplementedError, match="periodic structures only"):
        water.get_stress()
    with pytest.raises(ValueError, match="exported in float64 and runs only in it"):
        PhysMLCalculator(exported, dtype="float32")
    with pytest.raises(ValueError, match="num_threads"):
        PhysMLCalculator(exported, num_threads=0)


def test_num_threads_is_restored(exported):
    before = torch.get_num_threads()
    atoms = _alloy()
    atoms.calc = PhysMLCalculator(exported, num_threads=before + 1)
    atoms.get_forces()
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_charge_head_results_follow_initial_charges(tmp_path, arch):
    path = export_potential(_model(arch=arch, charges=True, coulomb=True), tmp_path / "charged.pt")
    atoms = _ethanol()
    atoms.calc = PhysMLCalculator(path)
    assert {"charges", "dipole"} <= set(atoms.calc.implemented_properties)
    assert abs(atoms.get_charges().sum()) < 1e-12
    atoms.set_initial_charges([1.0] + [0.0] * (len(atoms) - 1))
    assert abs(atoms.get_charges().sum() - 1.0) < 1e-12
    assert_close(atoms.get_dipole_moment(), atoms.get_charges() @ atoms.positions, 1e-12, "dipole")


@requires_cuda
def test_cuda_equals_cpu(exported):
    atoms = _alloy()
    atoms.calc = PhysMLCalculator(exported)
    cpu = atoms.get_forces()
    atoms.calc = PhysMLCalculator(exported, device="cuda")
    assert_close(atoms.get_forces(), cpu, 1e-10, "forces on cuda")
