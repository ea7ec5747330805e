"""The openmm-ml plugin (physml_md/integrations/openmmml.py), tested through the released openmmml package."""

import numpy as np
import pytest
from ase import Atoms
from openmm import app, unit

from physml_md.integrations.ase import PhysMLCalculator
from physml_md.integrations.openmm import create_system
from physml_md.integrations.openmm_mlmm import create_mixed_system
from physml_md.integrations.openmm_topology import topology_from_atoms
from tests.integrations.openmm_tools import (
    BACKEND_PARAMS,
    PLATFORMS,
    energy_forces,
    make_context,
    methanol,
    methanol_in_water,
)

openmmml = pytest.importorskip("openmmml")


def test_plugin_is_registered_through_the_entry_point():
    from physml_md.integrations.openmmml import PhysMLPotentialImplFactory

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
    """openmm-ml's mechanical embedding and create_mixed_system build the same ML/MM energy."""
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
