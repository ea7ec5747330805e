"""physml_md/integrations/ase.py: PhysMLCalculator in real ASE clients (finite differences, ASE's caching contract,
batches, MD, optimisers, cell filters, NEB) and its edges: partly periodic cells, the caller's autograd mode,
charges, EMA checkpoints, threads, CUDA, the extrapolation warning."""

import threading
import time

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, fcc111, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.constraints import FixAtoms
from ase.filters import FrechetCellFilter
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.mep import NEB
from ase.optimize import BFGS, FIRE
from ase.vibrations import Vibrations

from physml_md import PhysMLCalculator, export_potential, load_potential
from physml_md.export.checkpoint import potential_from_checkpoint
from physml_md.models import MODEL_NAMES
from tests.helpers import EXACT, assert_close, requires_cuda, small_model


def _model(dtype=torch.float64, arch="painn", **kwargs):
    """The exported models of the calculator tests: 16 features, 2 interactions, seed 3."""
    return small_model(arch, dtype, features=16, n_interactions=2, seed=3, **kwargs)


def _tiny_model(dtype=torch.float64, arch="painn", **kwargs):
    """The in-memory models of the edge-case tests: 8 features, 1 interaction, 4 radial functions, seed 5."""
    return small_model(arch, dtype, features=8, n_interactions=1, n_rbf=4, seed=5, **kwargs)


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


# ---- edges: partly periodic cells, autograd mode, caching, charges, checkpoints, NEB, threads


@pytest.fixture(scope="module")
def arch_calc_factory():
    """arch -> a function making fresh float64 calculators over one scripted model of that architecture."""
    potentials = {}

    def factory(arch):
        if arch not in potentials:
            potentials[arch] = PhysMLCalculator(_tiny_model(arch=arch)).potential
        return lambda **kwargs: PhysMLCalculator(potentials[arch], **kwargs)

    return factory


@pytest.fixture(scope="module")
def calc_factory(arch_calc_factory):
    """Calculators for the tests of the calculator contract (caching, threads), which do not depend on the model."""
    return arch_calc_factory("painn")


def _slab():
    atoms = fcc111("Cu", (2, 2, 3), vacuum=5.0)  # pbc = (True, True, False)
    atoms.numbers[0] = 13
    atoms.rattle(0.05, seed=2)
    return atoms


def _wire():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1, 1, 3))
    atoms.center(vacuum=5.0, axis=(0, 1))
    atoms.pbc = [False, False, True]
    atoms.rattle(0.05, seed=3)
    return atoms


def _boxed_molecule():
    atoms = molecule("CH3CH2OH")
    atoms.center(vacuum=3.0)
    atoms.pbc = True
    atoms.rattle(0.05, seed=4)
    return atoms


def _bulk():
    atoms = bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.mark.parametrize("arch", MODEL_NAMES)
@pytest.mark.parametrize("make", [_slab, _wire, _boxed_molecule], ids=["slab", "wire", "boxed_molecule"])
def test_partly_periodic_forces_and_stress_match_finite_differences(arch_calc_factory, make, arch):
    atoms = make()
    atoms.calc = arch_calc_factory(arch)()
    forces, stress = atoms.get_forces(), atoms.get_stress()
    numerical = calculate_numerical_forces(atoms, eps=1e-4)
    assert np.abs(forces - numerical).max() / np.abs(forces).max() <= 1e-6
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.abs(stress - numerical).max() / np.abs(stress).max() <= 1e-6
    energy = atoms.get_potential_energy()
    assert atoms.get_potential_energy(force_consistent=True) == energy  # free_energy
    assert_close(atoms.get_potential_energies().sum(), energy, 1e-12, "per-atom energies sum")


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inference_mode"])
def test_results_do_not_depend_on_the_callers_autograd_mode(calc_factory, mode):
    atoms = _bulk()
    atoms.calc = calc_factory()
    forces, stress = atoms.get_forces(), atoms.get_stress()
    atoms.calc = calc_factory()
    with mode():  # e.g. a calculator called from a Lightning predict step or an evaluation loop
        assert_close(atoms.get_forces(), forces, 1e-12, f"forces under {mode.__name__}")
        assert_close(atoms.get_stress(), stress, 1e-12, f"stress under {mode.__name__}")


class _Counting:
    """Wraps a calculator's potential: counts model calls and records torch's thread count during each."""

    def __init__(self, potential, fail=False):
        self.potential, self.fail, self.calls, self.threads = potential, fail, 0, []
        self.dtype, self.atomic_numbers = potential.dtype, potential.atomic_numbers

    def __call__(self, data):
        self.calls += 1
        self.threads.append(torch.get_num_threads())
        if self.fail:
            raise RuntimeError("model failure")
        return self.potential(data)


def _counted(calc_factory, **kwargs):
    calc = calc_factory(**kwargs)
    calc.potential = _Counting(calc.potential)
    return calc


def test_constraints_velocities_and_identical_values_do_not_recalculate(calc_factory):
    atoms = _bulk()
    atoms.calc = calc = _counted(calc_factory)
    forces = atoms.get_forces().copy()
    atoms.set_constraint(FixAtoms(indices=[0, 1]))
    atoms.set_velocities(np.full((len(atoms), 3), 0.01))
    atoms.set_positions(atoms.get_positions())  # same values: not a change
    atoms.set_cell(atoms.cell.array.copy())
    atoms.pbc = atoms.pbc.copy()
    constrained = atoms.get_forces()
    assert calc.potential.calls == 1
    assert_close(atoms.get_forces(apply_constraint=False), forces, 0.0, "raw forces")
    assert np.all(constrained[:2] == 0.0) and np.array_equal(constrained[2:], forces[2:])  # ASE applied FixAtoms
    atoms.positions[3, 2] += 1e-10  # the smallest real change is still a change
    atoms.get_forces()
    assert calc.potential.calls == 2


def test_switching_pbc_off_leaves_no_stale_stress(calc_factory):
    atoms = _bulk()
    atoms.calc = calc_factory()
    atoms.get_stress()
    atoms.pbc = False
    with pytest.raises(PropertyNotImplementedError, match="periodic structures only"):
        atoms.get_stress()
    energy = atoms.get_potential_energy()
    assert "stress" not in atoms.calc.results
    fresh = atoms.copy()
    fresh.calc = calc_factory()
    assert_close(energy, fresh.get_potential_energy(), 1e-12, "energy without pbc")


def test_one_calculator_shared_by_two_structures_never_returns_the_other_ones_results(calc_factory):
    first, second = _bulk(), _bulk()
    second.rattle(0.05, seed=9)
    first.calc = second.calc = calc = _counted(calc_factory)
    energies = [first.get_potential_energy(), second.get_potential_energy(), first.get_potential_energy()]
    assert calc.potential.calls == 3 and energies[0] == energies[2] != energies[1]
    for atoms, energy in zip((first, second), energies):
        fresh = atoms.copy()
        fresh.calc = calc_factory()
        assert_close(energy, fresh.get_potential_energy(), 1e-12, "energy")


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_partly_periodic_batch_equals_one_by_one(dtype, arch):
    structures = [_slab(), _wire(), molecule("CH4"), _boxed_molecule(), _bulk()]
    model = _tiny_model(dtype, arch=arch)
    calc = PhysMLCalculator(model)
    batch = calc.calculate_batch(structures)
    for atoms, result in zip(structures, batch):
        atoms.calc = PhysMLCalculator(model)
        assert set(result) == set(atoms.calc.implemented_properties) - ({"stress"} if not atoms.pbc.any() else set())
        assert_close(result["energy"], atoms.get_potential_energy(), EXACT[dtype], "energy")
        assert_close(result["energies"], atoms.get_potential_energies(), EXACT[dtype], "energies")
        assert_close(result["forces"], atoms.get_forces(), EXACT[dtype], "forces")
        if atoms.pbc.any():
            assert_close(result["stress"], atoms.get_stress(), EXACT[dtype], "stress")


def test_batch_leaves_the_calculators_own_results_alone(calc_factory):
    atoms = _bulk()
    atoms.calc = calc = _counted(calc_factory)
    energy = atoms.get_potential_energy()
    results = dict(calc.results)
    calc.calculate_batch([_slab(), molecule("H2O")])
    assert calc.potential.calls == 2 and calc.results == results
    assert atoms.get_potential_energy() == energy and calc.potential.calls == 2
    with pytest.raises(ValueError, match=r"element\(s\) Fe not known.*H, C, O, Al, Cu"):
        calc.calculate_batch([atoms, bulk("Fe", "bcc", a=2.87)])


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_batch_with_charge_head_follows_each_structures_total_charge(arch):
    model = _tiny_model(arch=arch, charges=True, coulomb=True)
    structures = []
    for name, total in (("H2O", 0.0), ("CH3OH", 1.0), ("CH4", -1.0)):
        atoms = molecule(name)
        atoms.rattle(0.05, seed=6)
        atoms.set_initial_charges([total] + [0.0] * (len(atoms) - 1))
        structures.append(atoms)
    batch = PhysMLCalculator(model).calculate_batch(structures)
    for atoms, result in zip(structures, batch):
        total = atoms.get_initial_charges().sum()
        assert abs(result["charges"].sum() - total) < 1e-12
        atoms.calc = PhysMLCalculator(model)
        assert_close(result["energy"], atoms.get_potential_energy(), 1e-12, "energy")
        assert_close(result["forces"], atoms.get_forces(), 1e-12, "forces")
        assert_close(result["charges"], atoms.get_charges(), 1e-12, "charges")
        assert_close(result["dipole"], atoms.get_dipole_moment(), 1e-12, "dipole")
    assert abs(batch[1]["energy"] - batch[2]["energy"]) > 1e-3  # the charge reaches the model


def test_checkpoint_gives_the_ema_weights_not_the_raw_ones(cu_model):
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=4)
    forces = {}
    for name, model in (
        ("checkpoint", cu_model.best_checkpoint),
        ("ema", potential_from_checkpoint(cu_model.best_checkpoint)),
        ("raw", potential_from_checkpoint(cu_model.best_checkpoint, use_ema=False)),
    ):
        atoms.calc = PhysMLCalculator(model)
        forces[name] = atoms.get_forces()
    assert_close(forces["checkpoint"], forces["ema"], 1e-12, "checkpoint vs its EMA weights")
    # the EMA (decay 0.5) and the raw weights differ, so the comparison above tells them apart
    assert np.abs(forces["checkpoint"] - forces["raw"]).max() > 1e-4


def _vacancy_hop_neb(make_calc, n_images=3):
    """Relaxed end points and NEB (FIRE, improved tangent) of a vacancy hop in Cu31; returns (converged, images)."""
    perfect = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    initial = perfect.copy()
    del initial[0]
    final = perfect.copy()
    final.positions[1] = perfect.positions[0]  # atom 1, a nearest neighbour, jumps into the vacancy
    del final[0]
    for end in (initial, final):
        end.calc = make_calc()
        BFGS(end, logfile=None).run(fmax=0.01, steps=100)
    images = [initial] + [initial.copy() for _ in range(n_images)] + [final]
    for image in images[1:-1]:
        image.calc = make_calc()  # each image its own calculator instance, as NEB requires
    band = NEB(images, method="improvedtangent")
    band.interpolate()
    converged = FIRE(band, logfile=None).run(fmax=0.05, steps=300)
    return converged, images


def test_neb_vacancy_hop_with_one_calculator_per_image(cu_model):
    converged, images = _vacancy_hop_neb(lambda: PhysMLCalculator(cu_model.model_path))
    assert converged
    energies = np.array([image.get_potential_energy() for image in images])
    profile = energies - energies[0]
    assert abs(profile[-1]) < 1e-4 and abs(profile[1] - profile[3]) < 1e-3, profile  # the hop is symmetric
    assert np.argmax(profile) == 2 and profile[2] > 0.3, profile
    _, reference = _vacancy_hop_neb(EMT)
    emt_barrier = max(image.get_potential_energy() for image in reference) - reference[0].get_potential_energy()
    # measured: 0.87 eV against EMT's 0.76 eV for this tiny model trained on bulk MD frames only
    assert abs(profile[2] - emt_barrier) < 0.3 * emt_barrier, (profile[2], emt_barrier)
    # the same images in one batch give each image's own results
    batch = images[1].calc.calculate_batch(images)
    for image, result in zip(images, batch):
        assert_close(result["energy"], image.get_potential_energy(), 1e-12, "image energy")
        assert_close(result["forces"], image.get_forces(), 1e-12, "image forces")


def test_num_threads_apply_during_the_call_and_are_restored_after_an_error(calc_factory):
    before = torch.get_num_threads()
    wanted = before + 1
    atoms = _bulk()
    atoms.calc = calc = _counted(calc_factory, num_threads=wanted)
    atoms.get_forces()
    assert calc.potential.threads == [wanted] and torch.get_num_threads() == before
    calc.potential.fail = True
    atoms.positions[0, 0] += 0.01
    with pytest.raises(RuntimeError, match="model failure"):
        atoms.get_forces()
    assert calc.potential.threads[-1] == wanted and torch.get_num_threads() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a GPU")
def test_cuda_without_a_gpu_is_refused_clearly():
    with pytest.raises(RuntimeError, match="torch sees no CUDA device; use device='cpu'"):
        PhysMLCalculator(_tiny_model(), device="cuda")


def test_an_unknown_atomic_number_is_named(calc_factory):
    atoms = Atoms(numbers=[1, 0], positions=[[0, 0, 0], [0.9, 0, 0]])  # 0: ASE's dummy atom "X"
    atoms.calc = calc_factory()
    with pytest.raises(ValueError, match=r"element\(s\) 0 not known"):
        atoms.get_potential_energy()


class _Slow:
    """The potential, pausing after each call (releasing the GIL) so that two threads interleave there."""

    def __init__(self, potential):
        self.potential = potential

    def __call__(self, data):
        out = self.potential(data)
        time.sleep(0.002)
        return out


def test_one_calculator_used_from_two_threads_gives_each_thread_its_own_results(calc_factory):
    """ASE's calculators keep one state (atoms, results); shared by threads, each call must still see its own."""
    calc = calc_factory()
    calc.potential = _Slow(calc.potential)
    seen = {0: [], 1: []}
    errors = []
    start = threading.Barrier(2)

    def work(index, atoms):
        atoms.calc = calc
        start.wait()
        try:
            for step in range(15):
                atoms.rattle(0.01, seed=100 * index + step)
                seen[index].append((atoms.copy(), atoms.get_potential_energy(), atoms.get_forces()))
        except Exception as exc:  # reported below, with the results that were wrong
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, atoms)) for i, atoms in enumerate((_bulk(), _slab()))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    reference = calc_factory()
    for index, results in seen.items():
        assert len(results) == 15
        for atoms, energy, forces in results:
            assert atoms.calc is None
            atoms.calc = reference
            assert energy == atoms.get_potential_energy(), f"thread {index}: another thread's energy"
            assert np.array_equal(forces, atoms.get_forces()), f"thread {index}: another thread's forces"


def test_a_slab_without_a_third_cell_vector_has_no_stress_as_in_ase(calc_factory):
    """No volume, no stress: ASE's own calculators (EMT here) raise PropertyNotImplementedError; so do we, and
    energy and forces still work."""
    atoms = fcc111("Cu", (2, 2, 3))  # pbc = (True, True, False), third cell vector zero
    atoms.numbers[0] = 13
    atoms.rattle(0.05, seed=6)
    assert not atoms.cell[2].any()
    emt = atoms.copy()
    emt.calc = EMT()
    with pytest.raises(PropertyNotImplementedError):
        emt.get_stress()
    atoms.calc = calc_factory()
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="no volume.*atoms.center\\(vacuum=.*axis=2\\)"):
        atoms.get_stress()
    assert "stress" not in atoms.calc.results
    assert atoms.get_potential_energy() == energy and np.array_equal(atoms.get_forces(), forces)
    with_vacuum = atoms.copy()
    with_vacuum.center(vacuum=5.0, axis=2)  # the fix the message names: the same slab, now with a volume
    with_vacuum.calc = calc_factory()
    assert_close(with_vacuum.get_potential_energy(), energy, EXACT[torch.float64], "energy with a vacuum")
    assert with_vacuum.get_stress().shape == (6,)
    batch = calc_factory().calculate_batch([atoms, with_vacuum])
    assert "stress" not in batch[0] and "stress" in batch[1]


def test_atoms_closer_than_the_training_data_warn_once_per_calculator():
    import warnings

    from physml_md.export import script_potential
    from physml_md.integrations.ase import ExtrapolationWarning

    exported = script_potential(_tiny_model(), {"shortest_pair_distances": {"Cu-Cu": 2.2, "C-H": 1.0}})
    calc = PhysMLCalculator(exported)
    fine = bulk("Cu", "fcc", a=3.6, cubic=True)  # nearest neighbours 2.55 angstrom apart
    fine.calc = calc
    fine.get_potential_energy()
    close = Atoms("CuCu", positions=[[0, 0, 0], [0, 0, 0.1]])
    close.calc = calc
    with pytest.warns(ExtrapolationWarning, match=r"Cu-Cu atoms 0\.100 angstrom apart \(training data: 2\.200"):
        close.get_potential_energy()
    assert list(calc.extrapolated) == ["Cu-Cu"]
    close.positions[1, 2] = 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per calculator: no second warning
        close.get_potential_energy()
    other = PhysMLCalculator(exported)  # a new calculator warns again, in batches too
    with pytest.warns(ExtrapolationWarning, match="Cu-Cu"):
        other.calculate_batch([fine, close])


def test_the_training_minimum_travels_from_the_data_to_the_checkpoint_and_the_exported_file(cu_model, cu_data):
    from ase.io import read

    from physml_md.export import read_metadata

    numbers = [(a.numbers, a.get_all_distances(mic=True)) for a in read(cu_data, ":")]
    closest = min(float(d[~np.eye(len(z), dtype=bool)].min()) for z, d in numbers)  # training split is a subset
    exported = read_metadata(cu_model.model_path)["shortest_pair_distances"]
    from_checkpoint = PhysMLCalculator(cu_model.best_checkpoint).metadata["shortest_pair_distances"]
    assert list(exported) == ["Cu-Cu"] and from_checkpoint == exported
    assert closest <= exported["Cu-Cu"] < closest + 0.3
