"""physml_md/integrations/openmm_mlmm.py: mechanical ML/MM (create_mixed_system), methanol computed by the
potential and TIP3P water by the force field."""

import numpy as np
import openmm
import pytest
from ase import Atoms
from openmm import app, unit

from physml_md.integrations.ase import PhysMLCalculator
from physml_md.integrations.openmm_mlmm import create_mixed_system
from physml_md.integrations.openmm_topology import topology_from_atoms
from tests.integrations.openmm_tools import (
    BACKEND_PARAMS,
    METHANOL_XML,
    bonds_by_distance,
    energy_forces,
    make_context,
    methanol,
    methanol_in_water,
)

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


@pytest.mark.parametrize("span", [0.52, 0.6, 0.83])
def test_the_region_too_large_for_the_box_message_prints_plain_numbers(span):
    """TorchScript's str(0.52) is "0.52000000000000002" (and str(0.99) "0.98999999999999999"): the scripted force
    (what TorchForce runs) wrote "spans 0.52000000000000002 of box vector 0"; both the module and its TorchScript
    form now write at most two decimals."""
    import torch

    from physml_md.export.torchscript import script
    from physml_md.integrations.openmm_torch import OpenMMModule
    from tests.helpers import small_model

    model = small_model(features=8, n_interactions=1, n_rbf=4, seed=3)
    wrapped = OpenMMModule(model, [6, 8, 1], torch.float64, periodic=False, unwrap=True)
    box = torch.eye(3, dtype=torch.float64)  # nm
    # nearest images of the first particle: 0, +0.4 and -(span - 0.4) of box vector 0 apart: the region spans span
    positions = torch.tensor([[0.0, 0.0, 0.0], [0.4, 0.0, 0.0], [1.4 - span, 0.0, 0.0]], dtype=torch.float64)
    for module in (wrapped, script(wrapped)):
        with pytest.raises(Exception, match="the ML region spans") as error:
            module(positions, box)
        message = str(error.value)
        assert f"spans {span:g} of box vector 0, more than half the periodic box" in message, message
