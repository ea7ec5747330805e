"""physml_md/integrations/openmmml.py: the openmm-ml plugin, tested through the released openmmml package, and
create_mixed_system (mechanical ML/MM: methanol computed by the potential, TIP3P water by the force field)."""

import numpy as np
import openmm
import pytest
from ase import Atoms
from openmm import app, unit

from physml_md.integrations.ase import PhysMLCalculator
from physml_md.integrations.openmm import create_system
from physml_md.integrations.openmm_topology import topology_from_atoms
from tests.integrations.openmm_tools import (
    BACKEND_PARAMS,
    METHANOL_XML,
    PLATFORMS,
    bonds_by_distance,
    energy_forces,
    make_context,
    methanol,
    methanol_in_water,
)

openmmml = pytest.importorskip("openmmml")

from physml_md.integrations.openmmml import PhysMLPotentialImplFactory, create_mixed_system  # noqa: E402


def test_plugin_is_registered_through_the_entry_point():
    assert isinstance(openmmml.MLPotential._implFactories["physml"], PhysMLPotentialImplFactory)


@pytest.mark.parametrize("backend", [pytest.param("torchforce", marks=pytest.mark.torchforce), "pythonforce"])
def test_create_system_equals_ours(molecule_model, backend):
    atoms = methanol(seed=30)
    topology, positions = topology_from_atoms(atoms)
    potential = openmmml.MLPotential("physml", modelPath=str(molecule_model.model_path))
    theirs = potential.createSystem(topology, backend=backend)
    ours = create_system(topology, molecule_model.model_path, backend=backend)
    energy, forces = energy_forces(make_context(theirs, positions))
    ref_energy, ref_forces = energy_forces(make_context(ours, positions))
    assert energy == ref_energy and np.array_equal(forces, ref_forces)


def test_create_system_periodic(cu_model, cu_data):
    from ase.io import read

    atoms = read(cu_data, index=0)
    topology, positions = topology_from_atoms(atoms)
    theirs = openmmml.MLPotential("physml", modelPath=str(cu_model.model_path)).createSystem(topology)
    assert theirs.usesPeriodicBoundaryConditions()
    ours = create_system(topology, cu_model.model_path)
    assert energy_forces(make_context(theirs, positions))[0] == energy_forces(make_context(ours, positions))[0]


def test_create_mixed_system_equals_ours(molecule_model):
    """create_mixed_system is openmm-ml's mechanical embedding after its checks: the same ML/MM energy."""
    topology, positions, forcefield, ml_atoms = methanol_in_water(seed=31)
    mm_system = forcefield.createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=0.8 * unit.nanometer, constraints=app.HBonds
    )
    potential = openmmml.MLPotential("physml", modelPath=str(molecule_model.model_path))
    theirs = potential.createMixedSystem(topology, mm_system, ml_atoms, forceGroup=1)
    ours = create_mixed_system(topology, mm_system, ml_atoms, molecule_model.model_path, force_group=1)
    assert theirs.getNumConstraints() == ours.getNumConstraints()
    their_context, our_context = make_context(theirs, positions), make_context(ours, positions)
    assert energy_forces(their_context, groups=2)[0] == energy_forces(our_context, groups=2)[0]  # the ML force
    total, forces = energy_forces(their_context)
    our_total, our_forces = energy_forces(our_context)
    assert total == pytest.approx(our_total, rel=1e-9)
    assert np.allclose(forces, our_forces, rtol=0, atol=1e-6 * np.abs(our_forces).max())


def test_plugin_errors(molecule_model, tmp_path):
    with pytest.raises(ValueError, match="needs modelPath"):
        openmmml.MLPotential("physml")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['modelpath'\]"):
        openmmml.MLPotential("physml", modelPath=str(molecule_model.model_path), modelpath="x")
    with pytest.raises(FileNotFoundError):
        openmmml.MLPotential("physml", modelPath=str(tmp_path / "missing.pt"))
    potential = openmmml.MLPotential("physml", modelPath=str(molecule_model.model_path))
    topology, _ = topology_from_atoms(methanol())
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['backnd'\] for the physml potential"):
        potential.createSystem(topology, backnd="pythonforce")


# |E(lambda) - expected| / |E_MM(all)|. Measured: (1 - lambda) 1.0e-10 in a box, 3.9e-11 without, the same on
# both platforms (openmm-ml's interpolated MM terms differ from the MM system's by that much; at lambda = 1,
# 2e-16); Reference computes in double precision, CPU its nonbonded terms in single precision (1e-7 each)
INTERPOLATION_RTOL = {"Reference": 1e-9, "CPU": 1e-6}


@pytest.mark.parametrize("periodic", [True, False], ids=["box", "no_box"])
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("backend", ["auto", *[p for p in BACKEND_PARAMS if p.values[0] != "torchforce"]])
def test_interpolated_mixed_system_is_linear_between_mm_and_ml_mm(molecule_model, backend, platform, periodic):
    """openmm-ml's createMixedSystem(interpolate=True) (what ML/MM free-energy corrections use): at every lambda,
    E = lambda (E_MM(all) - E_MM(region) + E_ML(region)) + (1 - lambda) E_MM(all), each term computed apart."""
    topology, positions, forcefield, ml_atoms = methanol_in_water(seed=32)
    if periodic:
        options = {"nonbondedMethod": app.PME, "nonbondedCutoff": 0.8 * unit.nanometer}
    else:
        topology.setPeriodicBoxVectors(None)
        options = {"nonbondedMethod": app.NoCutoff}
    mm_system = forcefield.createSystem(topology, constraints=None, **options)
    potential = openmmml.MLPotential("physml", modelPath=str(molecule_model.model_path))
    mixed = potential.createMixedSystem(topology, mm_system, ml_atoms, interpolate=True, backend=backend)
    mm_all = energy_forces(make_context(mm_system, positions, platform))[0]
    # the region alone, MM without cut-off: every atom pair of methanol is a 1-2, 1-3 or 1-4 pair, an exception
    # of the full system too, so this is exactly the MM energy that the ML region replaces
    region = app.Modeller(topology, positions)
    region.delete([atom for atom in region.topology.atoms() if atom.index not in set(ml_atoms)])
    region_system = forcefield.createSystem(region.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    mm_region = energy_forces(make_context(region_system, region.positions, platform))[0]
    atoms = Atoms(
        numbers=[atom.element.atomic_number for atom in region.topology.atoms()],
        positions=np.asarray(region.positions.value_in_unit(unit.angstrom)),
    )
    atoms.calc = PhysMLCalculator(molecule_model.model_path)
    ml_region = atoms.get_potential_energy()
    context = make_context(mixed, positions, platform)
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        context.setParameter("lambda_interpolate", value)
        energy = energy_forces(context)[0]
        expected = value * (mm_all - mm_region + ml_region) + (1.0 - value) * mm_all
        assert abs(energy - expected) <= INTERPOLATION_RTOL[platform] * abs(mm_all), (value, energy, expected)
    assert abs(ml_region - mm_region) > 1e3 * INTERPOLATION_RTOL[platform] * abs(mm_all)  # lambda matters


@pytest.mark.torchforce
def test_interpolation_refuses_a_torchforce_it_would_have_to_copy(molecule_model):
    """openmm-ml copies the interpolated force; copying a TorchForce crashes the process (openmm-torch 1.5)."""
    topology, _, forcefield, ml_atoms = methanol_in_water(seed=33)
    mm_system = forcefield.createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=0.8 * unit.nanometer)
    potential = openmmml.MLPotential("physml", modelPath=str(molecule_model.model_path))
    with pytest.raises(ValueError, match="copying an openmm-torch TorchForce crashes.*backend='pythonforce'"):
        potential.createMixedSystem(topology, mm_system, ml_atoms, interpolate=True, backend="torchforce")


ML_GROUP = 1


def _ase_energy(model_path, numbers, positions_nm):
    atoms = Atoms(numbers=numbers, positions=np.asarray(positions_nm) * 10.0)
    atoms.calc = PhysMLCalculator(model_path)
    return atoms.get_potential_energy(), atoms.get_forces()


def _terms(system, force_type, count, parameters, n_indices):
    """The particle tuples of every term of ``force_type`` in ``system``."""
    return [
        tuple(getattr(force, parameters)(i)[:n_indices])
        for force in system.getForces()
        if isinstance(force, force_type)
        for i in range(getattr(force, count)())
    ]


@pytest.fixture(scope="module")
def solvated():
    topology, positions, forcefield, ml_atoms = methanol_in_water()
    mm_system = forcefield.createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=0.8 * unit.nanometer, constraints=app.HBonds
    )
    return topology, positions, mm_system, ml_atoms


def test_methanol_alone_keeps_no_mm_energy(molecule_model):
    """Every MM term inside the ML region is gone: the mixed system's energy is the potential's, exactly."""
    atoms = methanol(seed=20)
    topology, positions = topology_from_atoms(atoms, residue_name="MOH", bonds=bonds_by_distance(atoms))
    forcefield = app.ForceField(str(METHANOL_XML))
    mm_system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff)
    mm_energy = energy_forces(make_context(mm_system, positions))[0]
    assert abs(mm_energy) > 0.1  # the force field has something to remove
    mixed = create_mixed_system(topology, mm_system, range(len(atoms)), molecule_model.model_path, force_group=1)
    context = make_context(mixed, positions)
    everything_else = sum(1 << g for g in range(32) if g != ML_GROUP)
    mm_part, mm_forces = energy_forces(context, groups=everything_else)
    assert mm_part == 0.0 and np.all(mm_forces == 0.0)
    ml_energy, ml_forces = energy_forces(context, groups=1 << ML_GROUP)
    ref_energy, ref_forces = _ase_energy(molecule_model.model_path, atoms.numbers, positions)
    assert ml_energy == pytest.approx(ref_energy, rel=1e-6)
    assert np.allclose(ml_forces, ref_forces, rtol=0, atol=1e-5 * np.abs(ref_forces).max())
    assert energy_forces(make_context(mm_system, positions))[0] == mm_energy  # the MM system was not modified


def test_terms_removed_only_inside_the_region(solvated, molecule_model):
    topology, _, mm_system, ml_atoms = solvated
    mixed = create_mixed_system(topology, mm_system, ml_atoms, molecule_model.model_path)
    region = set(ml_atoms)
    kinds = (
        (openmm.HarmonicBondForce, "getNumBonds", "getBondParameters", 2),
        (openmm.HarmonicAngleForce, "getNumAngles", "getAngleParameters", 3),
        (openmm.PeriodicTorsionForce, "getNumTorsions", "getTorsionParameters", 4),
    )
    for kind in kinds:
        before, after = _terms(mm_system, *kind), _terms(mixed, *kind)
        inside = [t for t in before if set(t) <= region]
        assert inside, kind[0].__name__  # methanol has C-O (the X-H bonds are constraints), 7 angles, 3 torsions
        assert sorted(after) == sorted(t for t in before if not set(t) <= region)
    # the 4 X-H bonds of methanol were constraints (HBonds); they go, the water constraints stay
    assert mixed.getNumConstraints() == mm_system.getNumConstraints() - 4
    for i in range(mixed.getNumConstraints()):
        assert not set(mixed.getConstraintParameters(i)[:2]) <= region


# the EMT-trained methanol model is driven below its training C-O distance in this run: the comparison with ASE
# still holds, so its extrapolation warning is beside the point here
@pytest.mark.filterwarnings("ignore::physml_md.integrations.ase.ExtrapolationWarning")
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_methanol_in_water_runs_and_its_ml_energy_equals_ase(solvated, molecule_model, backend):
    topology, positions, mm_system, ml_atoms = solvated
    mixed = create_mixed_system(
        topology, mm_system, ml_atoms, molecule_model.model_path, backend=backend, force_group=ML_GROUP
    )
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    # the whole system moved to put methanol on a corner of the box, where wrapping atoms into the box cuts it
    positions = np.asarray(positions.value_in_unit(unit.nanometer))
    context = make_context(mixed, positions - positions[ml_atoms].mean(axis=0), "CPU", integrator)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 2)
    numbers = [atom.element.atomic_number for atom in topology.atoms() if atom.index in set(ml_atoms)]
    # two stretches of 25 steps: the test model (see below) blows methanol up to more than half the 1.8 nm box
    # within 75 steps, which the force then refuses (test_openmm.py::test_a_cluster_larger_than_half_the_box...)
    for _ in range(2):
        integrator.step(25)
        state = context.getState(getPositions=True, getEnergy=True, enforcePeriodicBox=True)
        assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        wrapped = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[ml_atoms]
        ml_energy, ml_forces = energy_forces(context, groups=1 << ML_GROUP)
        # the region is evaluated as a whole molecule even when the box wraps it: ASE sees it made whole
        whole = wrapped[0] + _minimum_image(wrapped - wrapped[0], state)
        ref_energy, ref_forces = _ase_energy(molecule_model.model_path, numbers, whole)
        assert ml_energy == pytest.approx(ref_energy, rel=1e-6)
        assert np.allclose(ml_forces[ml_atoms], ref_forces, rtol=0, atol=1e-5 * np.abs(ref_forces).max())
        assert np.all(np.delete(ml_forces, ml_atoms, axis=0) == 0.0)
    # (whether methanol stays intact is not asserted: the test model learnt EMT, which knows no chemistry, and
    # falls apart even in vacuum; examples/ethanol_xtb and examples/mlmm use a model trained on GFN2-xTB)


def _minimum_image(delta, state):
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    return delta - np.round(delta @ np.linalg.inv(box)) @ box


def test_bad_regions(solvated, molecule_model):
    topology, _, mm_system, ml_atoms = solvated
    with pytest.raises(ValueError, match="ml_atoms is empty"):
        create_mixed_system(topology, mm_system, [], molecule_model.model_path)
    with pytest.raises(ValueError, match="duplicate"):
        create_mixed_system(topology, mm_system, [0, 0], molecule_model.model_path)
    with pytest.raises(ValueError, match="particle indices in 0.."):
        create_mixed_system(topology, mm_system, [mm_system.getNumParticles()], molecule_model.model_path)


def test_unsplittable_force_is_refused(molecule_model):
    atoms = methanol()
    topology, _ = topology_from_atoms(atoms, residue_name="MOH", bonds=bonds_by_distance(atoms))
    system = app.ForceField(str(METHANOL_XML)).createSystem(topology)
    gb = openmm.GBSAOBCForce()
    for _ in range(len(atoms)):
        gb.addParticle(0.0, 0.15, 1.0)
    system.addForce(gb)
    with pytest.raises(ValueError, match="GBSAOBCForce, whose interactions inside the ML region cannot be removed"):
        create_mixed_system(topology, system, range(len(atoms)), molecule_model.model_path)


def test_bulk_model_in_a_non_periodic_mm_system_is_refused(cu_model):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]])
    topology, _ = topology_from_atoms(atoms)
    system = openmm.System()
    for _ in range(2):
        system.addParticle(63.5)
    with pytest.raises(ValueError, match="trained on periodic structures only"):
        create_mixed_system(topology, system, [0, 1], cu_model.model_path)
