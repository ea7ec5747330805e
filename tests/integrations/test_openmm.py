"""OpenMM forces and systems (physml_md/integrations/openmm.py): PhysMLCalculator's numbers are the reference."""

import logging
import subprocess
import sys

import numpy as np
import openmm
import pytest
import torch
from ase.build import bulk
from openmm import unit

from physml_md.export import export_potential, load_potential
from physml_md.export.checkpoint import potential_from_checkpoint
from physml_md.integrations.ase import PhysMLCalculator
from physml_md.integrations.openmm import available_backends, create_force, create_system, resolve_backend
from physml_md.integrations.openmm_topology import openmm_box, topology_from_atoms
from physml_md.models import MODEL_NAMES, build_model
from tests.helpers import EXACT, assert_close, inputs, requires_cuda
from tests.integrations.openmm_tools import (
    BACKEND_PARAMS,
    PLATFORMS,
    energy_forces,
    make_context,
    methanol,
)

ENERGY_RTOL = 1e-6
FORCE_RTOL = 1e-5


def _cu(repeat, shear, seed):
    """Rattled fcc Cu in a reduced triclinic cell (b sheared along a)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=seed)
    cell = atoms.cell.array.copy()
    cell[1, 0] += shear * cell[0, 0]
    atoms.set_cell(cell, scale_atoms=False)
    return atoms


CASES = {
    # name: (structure, fixture holding the model)
    "molecule": (lambda: methanol(seed=1), "molecule_model"),
    "triclinic": (lambda: _cu((2, 2, 2), 0.2, seed=2), "cu_model"),
    "small_box": (lambda: _cu((1, 1, 1), -0.3, seed=3), "cu_model"),  # box of 3.6 A, cut-off 4 A
}
# elements of the trained fixtures, for the untrained models of the other architectures
FIXTURE_SPECIES = {"molecule_model": ["H", "C", "N", "O"], "cu_model": ["Cu"]}


@pytest.fixture(scope="module")
def untrained_models(tmp_path_factory):
    """(arch, fixture) -> (exported file, the eager model it was exported from): random weights, cut-off 4 A.

    Engines must agree whatever the weights, so architectures other than PaiNN (which has trained fixtures) are
    checked with untrained models, made once per module.
    """
    made = {}

    def get(arch, fixture):
        if (arch, fixture) not in made:
            model = build_model(
                arch, species=FIXTURE_SPECIES[fixture], cutoff=4.0, features=16, n_interactions=2, seed=7
            ).eval()
            path = export_potential(model, tmp_path_factory.mktemp(f"{arch}_{fixture}") / "model.pt")
            made[arch, fixture] = (path, model)
        return made[arch, fixture]

    return get


def _model_and_eager(arch, fixture, request, untrained_models):
    """(exported file, eager Potential) of ``arch``: PaiNN's trained fixture (its checkpoint's EMA weights are what
    was exported) or an untrained model."""
    if arch == "painn":
        trained = request.getfixturevalue(fixture)
        return trained.model_path, potential_from_checkpoint(trained.best_checkpoint)
    return untrained_models(arch, fixture)


def _reference(atoms, model_path):
    """(energy, forces) from the ASE calculator, forces rotated into OpenMM's frame like the positions."""
    atoms = atoms.copy()
    atoms.calc = PhysMLCalculator(model_path)
    forces = atoms.get_forces()
    if atoms.pbc.all():
        forces = forces @ openmm_box(atoms.cell.array)[1].T
    return atoms.get_potential_energy(), forces


@pytest.mark.filterwarnings("ignore::physml_md.integrations.ase.ExtrapolationWarning")  # compressed cells, on purpose
@pytest.mark.parametrize("arch", MODEL_NAMES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_eager_model_exported_file_and_ase_agree(case, arch, request, untrained_models):
    """The first links of the chain eager = file = ASE = OpenMM (float64): the module exactly as trained or built,
    the exported file called directly, and PhysMLCalculator, to 1e-12."""
    make, fixture = CASES[case]
    model_path, eager = _model_and_eager(arch, fixture, request, untrained_models)
    atoms = make()
    atoms.calc = PhysMLCalculator(model_path)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    for what, module in (("eager", eager), ("exported file", load_potential(model_path))):
        out = module(inputs(atoms))
        assert_close(float(out["energy"][0]), energy, EXACT[torch.float64], f"{case} {what} energy")
        assert_close(out["forces"].numpy(), forces, EXACT[torch.float64], f"{case} {what} forces")
        if atoms.pbc.all():
            stress = out["stress"][0].numpy()
            assert_close(stress, atoms.get_stress(voigt=False), EXACT[torch.float64], f"{case} {what} stress")
    assert np.abs(forces).max() > 1e-3  # a real force field, not zeros


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.filterwarnings("ignore::physml_md.integrations.ase.ExtrapolationWarning")  # compressed cells, on purpose
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_energy_and_forces_equal_ase(case, backend, platform, arch, request, untrained_models):
    make, fixture = CASES[case]
    model_path, _ = _model_and_eager(arch, fixture, request, untrained_models)
    atoms = make()
    topology, positions = topology_from_atoms(atoms)
    system = create_system(topology, model_path, backend=backend)
    energy, forces = energy_forces(make_context(system, positions, platform))
    ref_energy, ref_forces = _reference(atoms, model_path)
    assert abs(energy - ref_energy) <= ENERGY_RTOL * abs(ref_energy)
    assert_close(forces, ref_forces, FORCE_RTOL, f"{case} {backend} {platform} forces")
    if case == "small_box":  # the case where images of an atom are its own neighbours
        assert 2 * load_potential(model_path).cutoff > min(np.linalg.norm(atoms.cell.array, axis=1))


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_molecule_across_the_periodic_boundary_keeps_its_energy(molecule_model, backend):
    """A molecule model in a periodic box is computed as a whole cluster, wherever the box cuts it."""
    atoms = methanol(seed=4)
    ref_energy, ref_forces = _reference(atoms, molecule_model.model_path)
    topology, positions = topology_from_atoms(atoms)
    box = 1.2  # nm, far more than the molecule plus the 0.4 nm cut-off
    topology.setPeriodicBoxVectors(np.eye(3) * box * unit.nanometer)
    system = create_system(topology, molecule_model.model_path, periodic=False, backend=backend)
    context = make_context(system, positions)
    for shift in ([0.0, 0.0, 0.0], [0.05, 0.6, 1.17], [-3.6, 0.01, 2.4]):
        moved = positions + np.array(shift)
        # wrap every atom into the box on its own, which cuts the molecule whenever the shift puts it on an edge
        context.setPositions((moved - np.floor(moved / box) * box) * unit.nanometer)
        energy, forces = energy_forces(context)
        assert abs(energy - ref_energy) <= ENERGY_RTOL * abs(ref_energy), shift
        assert_close(forces, ref_forces, FORCE_RTOL, f"forces after shift {shift}")


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_a_cluster_larger_than_half_the_box_is_refused(molecule_model, backend):
    """Made whole by nearest images of the first particle, a cluster larger than half the box would come out
    wrong (some atoms at the wrong image): refused with a sentence, never a silently wrong energy."""
    atoms = methanol(seed=5)
    topology, positions = topology_from_atoms(atoms)
    box = 0.35  # nm; methanol spans 0.2 nm, its hydroxyl hydrogen lies 0.19 nm from the carbon (particle 0)
    topology.setPeriodicBoxVectors(np.eye(3) * box * unit.nanometer)
    system = create_system(topology, molecule_model.model_path, periodic=False, backend=backend)
    context = make_context(system, positions - np.floor(positions / box) * box)
    with pytest.raises(openmm.OpenMMException) as error:
        context.getState(getEnergy=True)
    message = str(error.value)
    assert "the ML region spans" in message and "more than half the periodic box" in message, message
    assert "enlarge the box" in message and "periodic=True" in message, message
    if backend != "torchforce":  # TorchForce's C++ reports the TorchScript trace around the sentence
        assert message.startswith("the ML region spans") and "\n" not in message, message


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_periodic_crystal_translated_and_wrapped_keeps_its_energy(cu_model, backend):
    atoms = _cu((2, 2, 2), 0.2, seed=5)
    topology, positions = topology_from_atoms(atoms)
    system = create_system(topology, cu_model.model_path, backend=backend)
    context = make_context(system, positions)
    energy, forces = energy_forces(context)
    box = np.array(topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    moved = positions + np.array([0.31, -0.52, 0.77])
    fractional = moved @ np.linalg.inv(box)
    context.setPositions((moved - np.floor(fractional) @ box) * unit.nanometer)
    moved_energy, moved_forces = energy_forces(context)
    assert abs(moved_energy - energy) <= 1e-9 * abs(energy)
    assert_close(moved_forces, forces, 1e-8, "forces after translation")


def test_nve_in_openmm_conserves_energy(molecule_model):
    """Velocity Verlet, float64 model and Reference platform: the total energy only fluctuates.

    Bound: velocity Verlet conserves a shadow energy; the true total energy oscillates about it with a relative
    amplitude of about (omega dt)^2 / 4 of the energy in the fastest mode, omega being the C-H/O-H stretch
    (period ~ 10 fs). At dt = 0.25 fs that is (2 pi 0.25 / 10)^2 / 4 ~ 0.6 %, and there is no secular drift.
    So: spread of the total energy below 1 % of the mean kinetic energy, and the linear-fit change over the
    run below 1 %. (Measured with the test model: 0.08 % and 0.19 %.)
    """
    atoms = methanol(seed=6)
    topology, positions = topology_from_atoms(atoms)
    system = create_system(topology, molecule_model.model_path, remove_cm_motion=False)
    integrator = openmm.VerletIntegrator(0.25 * unit.femtosecond)
    context = make_context(system, positions, "Reference", integrator)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    totals, kinetics = [], []
    for _ in range(200):
        integrator.step(5)
        state = context.getState(getEnergy=True)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        kinetics.append(kinetic)
        totals.append(kinetic + state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    totals, mean_kinetic = np.array(totals), np.mean(kinetics)
    assert np.all(np.isfinite(totals))
    assert totals.std() < 0.01 * mean_kinetic, (totals.std(), mean_kinetic)
    slope = np.polyfit(np.arange(len(totals)), totals, 1)[0]
    assert abs(slope * len(totals)) < 0.01 * mean_kinetic, (slope, mean_kinetic)


# ----------------------------------------------------------------------------------------------- model variants
@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_charged_model_gets_the_total_charge(tmp_path, arch):
    model = build_model(
        arch, species=["H", "C", "O"], cutoff=4.0, features=8, n_interactions=1, charges=True, coulomb=True, seed=3
    )
    path = export_potential(model, tmp_path / "charged.pt")
    atoms = methanol(seed=8)
    atoms.set_initial_charges([1.0] + [0.0] * (len(atoms) - 1))
    ref_energy, ref_forces = _reference(atoms, path)
    topology, positions = topology_from_atoms(atoms)
    for charge, same in ((1.0, True), (0.0, False)):
        system = openmm.System()
        for atom in topology.atoms():
            system.addParticle(atom.element.mass)
        system.addForce(create_force(path, atoms.numbers, periodic=False, charge=charge))
        energy, forces = energy_forces(make_context(system, positions))
        assert (abs(energy - ref_energy) <= ENERGY_RTOL * abs(ref_energy)) == same, charge


def test_auto_picks_the_first_available_backend_and_says_which(molecule_model, caplog):
    with caplog.at_level(logging.INFO, logger="physml_md.integrations.openmm"):
        force = create_force(molecule_model.model_path, methanol().numbers, backend="auto")
    expected = {"torchforce": "TorchForce", "pythonforce": "PythonForce", "pythontorchforce": "PythonTorchForce"}
    assert type(force).__name__ == expected[available_backends()[0]] == expected[resolve_backend("auto")]
    assert f"OpenMM backend 'auto' chose {available_backends()[0]!r}" in caplog.text
    assert available_backends()[-1] == "pythonforce"  # OpenMM's own, always there


def test_without_openmm_torch_auto_takes_pythonforce_and_torchforce_names_the_extra(molecule_model, monkeypatch):
    import physml_md.integrations.openmm as openmm_integration

    monkeypatch.setattr(openmm_integration, "_openmmtorch", lambda: None)  # as where openmm-torch does not load
    assert available_backends() == ["pythonforce"]
    force = create_force(molecule_model.model_path, methanol().numbers)  # the default is "auto"
    assert type(force).__name__ == "PythonForce"
    with pytest.raises(ValueError, match=r"backend 'torchforce' is not available here: .*physml-md\[torchforce\]"):
        create_force(molecule_model.model_path, methanol().numbers, backend="torchforce")


def test_serialised_pythonforce_system_gives_the_same_energy(molecule_model):
    """PythonForce pickles its callback, which reloads the model file. (TorchForce is not tested here: the
    openmmtorch 1.5 wheel crashes with a segmentation fault in XmlSerializer.deserialize for any TorchForce.)"""
    atoms = methanol(seed=9)
    topology, positions = topology_from_atoms(atoms)
    system = create_system(topology, molecule_model.model_path, backend="pythonforce")
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    energy = energy_forces(make_context(system, positions))[0]
    assert energy_forces(make_context(copy, positions))[0] == pytest.approx(energy, rel=1e-12)


def test_pythonforce_of_an_unsaved_model_cannot_be_serialised():
    model = build_model(species=["H", "C", "O"], cutoff=4.0, features=8, n_interactions=1)
    topology, _ = topology_from_atoms(methanol())
    system = create_system(topology, model, periodic=False, backend="pythonforce")
    with pytest.raises(openmm.OpenMMException, match="could not be pickled"):
        openmm.XmlSerializer.serialize(system)


@pytest.mark.torchforce
def test_torchforce_works_when_openmm_was_imported_before_torch(molecule_model, tmp_path):
    """openmm-torch's kernels fail to load when ``import openmm`` comes first; create_force loads them again."""
    atoms = methanol(seed=10)
    ref_energy = _reference(atoms, molecule_model.model_path)[0]
    script = f"""
import openmm, numpy as np
from ase.build import molecule
from physml_md.integrations.openmm import create_system
from physml_md.integrations.openmm_topology import topology_from_atoms
from physml_md.units import EV_TO_KJ_PER_MOL
atoms = molecule("CH3OH"); atoms.positions = np.array({atoms.positions.tolist()})
topology, positions = topology_from_atoms(atoms)
system = create_system(topology, {str(molecule_model.model_path)!r}, backend="torchforce")
context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
context.setPositions(positions)
print(context.getState(getEnergy=True).getPotentialEnergy()._value / EV_TO_KJ_PER_MOL)
"""
    assert "torch" not in script.split("from physml_md")[0]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) == pytest.approx(ref_energy, rel=ENERGY_RTOL)


# ----------------------------------------------------------------------------------------------- errors
def test_element_the_model_does_not_know(cu_model):
    atoms = _cu((2, 2, 2), 0.0, seed=11)
    atoms.numbers[3] = 8
    topology, _ = topology_from_atoms(atoms)
    with pytest.raises(ValueError, match=r"element\(s\) O .* not known to this model, which was trained on Cu"):
        create_system(topology, cu_model.model_path)


def test_molecule_model_refused_for_a_periodic_topology(molecule_model):
    topology, _ = topology_from_atoms(methanol())
    topology.setPeriodicBoxVectors(np.eye(3) * 1.5 * unit.nanometer)
    with pytest.raises(ValueError, match="trained on non-periodic structures only, but the topology has a periodic"):
        create_system(topology, molecule_model.model_path)


def test_bulk_model_refused_for_a_non_periodic_topology(cu_model):
    atoms = _cu((2, 2, 2), 0.0, seed=12)
    atoms.pbc = False
    topology, _ = topology_from_atoms(atoms)
    with pytest.raises(ValueError, match="trained on periodic structures only, but the system has no periodic box"):
        create_system(topology, cu_model.model_path)
    with pytest.raises(ValueError, match="periodic=True but the system has no periodic box"):
        create_system(topology, cu_model.model_path, periodic=True)


def test_bad_arguments(molecule_model):
    numbers = methanol().numbers
    with pytest.raises(ValueError, match="unknown backend 'torch'; choose one of torchforce, pythonforce"):
        create_force(molecule_model.model_path, numbers, backend="torch")
    if "pythontorchforce" not in available_backends():
        with pytest.raises(ValueError, match="backend 'pythontorchforce' is not available here"):
            create_force(molecule_model.model_path, numbers, backend="pythontorchforce")
    with pytest.raises(ValueError, match="2 particles but 6 atomic numbers"):
        create_force(molecule_model.model_path, numbers, particles=[0, 1])
    if "torchforce" in available_backends():
        with pytest.raises(ValueError, match="TorchForce needs n_particles"):
            create_force(molecule_model.model_path, numbers, particles=range(6), backend="torchforce")
    with pytest.raises(ValueError, match="cannot be combined with periodic=True"):
        create_force(molecule_model.model_path, numbers, periodic=True, unwrap=True)


def test_reduced_box_describes_the_same_crystal(cu_model):
    """A primitive fcc cell (not in OpenMM's form) is rotated and reduced; the energy per atom is unchanged."""
    primitive = bulk("Cu", "fcc", a=3.61).repeat((3, 3, 3))
    primitive.rattle(0.03, seed=14)
    box, rotation = openmm_box(primitive.cell.array)
    assert box[0, 1] == box[0, 2] == box[1, 2] == 0.0 and np.all(np.diag(box) > 0)
    assert abs(box[1, 0]) <= box[0, 0] / 2 and abs(box[2, 0]) <= box[0, 0] / 2 and abs(box[2, 1]) <= box[1, 1] / 2
    assert np.linalg.det(box) == pytest.approx(primitive.get_volume(), rel=1e-12)
    topology, positions = topology_from_atoms(primitive)
    system = create_system(topology, cu_model.model_path)
    energy, forces = energy_forces(make_context(system, positions))
    ref_energy, ref_forces = _reference(primitive, cu_model.model_path)
    assert energy == pytest.approx(ref_energy, rel=ENERGY_RTOL)
    assert_close(forces, ref_forces, FORCE_RTOL, "forces in the reduced box")
    assert np.allclose(rotation @ rotation.T, np.eye(3))


# ----------------------------------------------------------------------------------------------- GPU
@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("backend", [pytest.param("torchforce", marks=pytest.mark.torchforce), "pythonforce"])
def test_cuda_platform(molecule_model, backend):
    if "CUDA" not in [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]:
        pytest.skip("OpenMM has no CUDA platform here (pip install 'physml-md[cuda12]')")
    atoms = methanol(seed=15)
    topology, positions = topology_from_atoms(atoms)
    system = create_system(topology, molecule_model.model_path, backend=backend, device="cuda")
    energy, _ = energy_forces(make_context(system, positions, "CUDA"))
    assert energy == pytest.approx(_reference(atoms, molecule_model.model_path)[0], rel=ENERGY_RTOL)


@requires_cuda
def test_python_backend_runs_the_model_on_the_gpu_under_any_platform(molecule_model):
    """backend="pythonforce", device="cuda": OpenMM's CPU platform integrates, the model runs on the GPU."""
    atoms = methanol(seed=16)
    topology, positions = topology_from_atoms(atoms)
    system = create_system(topology, molecule_model.model_path, backend="pythonforce", device="cuda")
    energy, forces = energy_forces(make_context(system, positions, "CPU"))
    ref_energy, ref_forces = _reference(atoms, molecule_model.model_path)
    assert energy == pytest.approx(ref_energy, rel=ENERGY_RTOL)
    assert_close(forces, ref_forces, FORCE_RTOL, "forces with the model on the GPU")


def test_training_records_the_periodicity_the_engines_check(cu_model, molecule_model):
    from physml_md.export import load_model, read_metadata

    assert read_metadata(cu_model.model_path)["periodic"] is True
    assert read_metadata(molecule_model.model_path)["periodic"] is False
    # a checkpoint exported on the fly carries it too
    assert load_model(molecule_model.best_checkpoint).metadata["periodic"] is False
