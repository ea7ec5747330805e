"""PhysMLCalculator, the parts test_ase_calculator.py does not cover: partly periodic cells, the caller's autograd
mode, more of ASE's caching contract, batches with charges, EMA checkpoints, NEB, threads, CUDA refusal."""

import threading
import time

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.constraints import FixAtoms
from ase.mep import NEB
from ase.optimize import BFGS, FIRE

from physml_md import PhysMLCalculator
from physml_md.checkpoint import potential_from_checkpoint
from physml_md.models import MODEL_NAMES, build_model
from tests.helpers import EXACT, assert_close

SPECIES = ["H", "C", "O", "Al", "Cu"]


def _model(dtype=torch.float64, arch="painn", **kwargs):
    tiny = {"features": 8, "n_interactions": 1, "n_rbf": 4, "seed": 5}
    return build_model(arch, species=SPECIES, cutoff=4.0, dtype=dtype, **tiny, **kwargs)


@pytest.fixture(scope="module")
def arch_calc_factory():
    """arch -> a function making fresh float64 calculators over one scripted model of that architecture."""
    potentials = {}

    def factory(arch):
        if arch not in potentials:
            potentials[arch] = PhysMLCalculator(_model(arch=arch)).potential
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
    model = _model(dtype, arch=arch)
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
    model = _model(arch=arch, charges=True, coulomb=True)
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
        PhysMLCalculator(_model(), device="cuda")


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

    exported = script_potential(_model(), {"shortest_pair_distances": {"Cu-Cu": 2.2, "C-H": 1.0}})
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
