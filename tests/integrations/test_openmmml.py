"""The openmm-ml plugin (physml_md/integrations/openmmml.py), tested through the released openmmml package."""

import numpy as np
import pytest
from openmm import app, unit

from physml_md.integrations.openmm import create_mixed_system, create_system
from physml_md.integrations.openmm_structures import topology_from_atoms
from tests.integrations.openmm_tools import energy_forces, make_context, methanol, methanol_in_water

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
