"""physml_md.integrations.openmm_topology: OpenMM's reduced box is the same lattice; topologies from ASE.

References: ASE's minimum-image distances (get_all_distances(mic=True)) in the cell given and in the box
returned; OpenMM's own element table and unit conversion. (The energy of a crystal in a reduced box is checked
against ASE in tests/integrations/test_openmm.py.)
"""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from openmm import unit

from physml_md.integrations.openmm_topology import openmm_box, topology_from_atoms
from tests.helpers import random_rotation


def triclinic_cu(seed):
    """A rattled fcc Cu crystal in a sheared, rotated (so not lower-triangular) right-handed cell."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.61).repeat((2, 3, 2))
    strain = np.eye(3) + 0.15 * rng.normal(size=(3, 3))
    if np.linalg.det(strain) < 0:
        strain[:, 0] = -strain[:, 0]
    atoms.set_cell(atoms.cell.array @ strain @ random_rotation(rng).T, scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    assert atoms.cell.handedness > 0 and not np.allclose(atoms.cell.array, np.tril(atoms.cell.array))
    return atoms


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reduced_box_is_the_same_lattice_and_keeps_distances(seed):
    atoms = triclinic_cu(seed)
    box, rotation = openmm_box(atoms.cell.array)
    # OpenMM's reduced form
    assert box[0, 1] == box[0, 2] == box[1, 2] == 0.0 and np.all(np.diag(box) > 0)
    assert abs(box[1, 0]) <= box[0, 0] / 2 and abs(box[2, 0]) <= box[0, 0] / 2 and abs(box[2, 1]) <= box[1, 1] / 2
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-12)  # a rotation, not a reflection
    # the box vectors are integer combinations of the rotated cell vectors, and the other way round
    combination = box @ np.linalg.inv(atoms.cell.array @ rotation.T)
    np.testing.assert_allclose(combination, np.round(combination), atol=1e-9)
    assert abs(round(np.linalg.det(combination))) == 1
    # the rotated positions in the box have the distances of the structure given
    moved = Atoms(atoms.numbers, positions=atoms.positions @ rotation.T, cell=box, pbc=True)
    np.testing.assert_allclose(moved.get_all_distances(mic=True), atoms.get_all_distances(mic=True), atol=1e-9)


def test_cells_openmm_cannot_take_are_named():
    with pytest.raises(ValueError, match="three cell vectors; this cell has rank 2"):
        openmm_box(np.diag([3.0, 3.0, 0.0]))
    left_handed = triclinic_cu(3).cell.array[[1, 0, 2]]
    with pytest.raises(ValueError, match="left-handed.*swap two cell vectors"):
        openmm_box(left_handed)


def test_topology_of_a_molecule_has_its_elements_bonds_and_nm_positions():
    atoms = molecule("CH3CH2OH")
    topology, positions = topology_from_atoms(atoms, residue_name="ETH", bonds=[(0, 1), (1, 2)])
    found = list(topology.atoms())
    assert [atom.element.atomic_number for atom in found] == atoms.numbers.tolist()
    assert [atom.name for atom in found][:3] == [f"{atoms[i].symbol}{i + 1}" for i in range(3)]
    assert [residue.name for residue in topology.residues()] == ["ETH"] and topology.getNumChains() == 1
    assert [(bond[0].index, bond[1].index) for bond in topology.bonds()] == [(0, 1), (1, 2)]
    assert topology.getPeriodicBoxVectors() is None
    nm = (atoms.positions * unit.angstrom).value_in_unit(unit.nanometer)
    np.testing.assert_allclose(positions, nm, rtol=1e-15, atol=0)


def test_topology_of_a_crystal_has_the_reduced_box_and_rotated_positions():
    atoms = triclinic_cu(4)
    topology, positions = topology_from_atoms(atoms)
    box, rotation = openmm_box(atoms.cell.array)
    vectors = topology.getPeriodicBoxVectors().value_in_unit(unit.angstrom)
    np.testing.assert_allclose(np.array([[v.x, v.y, v.z] for v in vectors]), box, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(positions * 10.0, atoms.positions @ rotation.T, rtol=1e-12, atol=1e-12)


def test_a_slab_is_refused():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.pbc = [True, True, False]
    with pytest.raises(ValueError, match=r"pbc=\[True, True, False\].*periodic in all three directions or none"):
        topology_from_atoms(atoms)
