"""physml_md.md.geometry: pbc and cells read once, pair search, cells and trajectories at the mdtraj boundary.

References: ase.neighborlist.neighbor_list (pairs and distances), ase.cell.Cell (cellpar, standard_form).
"""

import numpy as np
import pytest
from ase.cell import Cell
from ase.neighborlist import neighbor_list

from physml_md.md.geometry import (
    cell_lengths_angles,
    close_pairs,
    frame_cells,
    mdtraj_topology,
    pbc_flags,
    periodic_cell,
    standard_cells,
    to_mdtraj,
)
from tests.helpers import random_rotation

FLOAT32_NM = 1e-6  # mdtraj keeps coordinates in float32 nm


def ase_pairs(positions, cell, pbc, cutoff):
    from ase import Atoms

    atoms = Atoms("X" * len(positions), positions=positions, cell=cell, pbc=pbc)
    i, j, d = neighbor_list("ijd", atoms, cutoff, self_interaction=False)
    keep = i < j
    return sorted(zip(i[keep].tolist(), j[keep].tolist(), np.round(d[keep], 9).tolist()))


@pytest.mark.parametrize(
    "pbc, zero_third", [(True, False), ((True, True, False), True), ((True, False, True), False), (False, False)]
)
def test_close_pairs_against_ase_neighbour_list(pbc, zero_third):
    rng = np.random.default_rng(0)
    cell = (np.diag([4.0, 4.5, 5.0]) + np.triu(rng.uniform(-1.5, 1.5, (3, 3)), 1)) @ random_rotation(rng)
    positions = rng.uniform(0.0, 1.0, (12, 3)) @ cell
    if zero_third:
        cell[2] = 0.0  # an ASE slab: nothing periodic, no vector, along the third axis
        positions[:, 2] += rng.uniform(0.0, 6.0, 12)
    cutoff = 5.5  # beyond half the cell: several images of one pair are within reach
    matrix, flags = periodic_cell(cell, pbc)
    first, second, distances = close_pairs(positions, matrix, flags, cutoff)
    found = sorted(zip(first.tolist(), second.tolist(), np.round(distances, 9).tolist()))
    assert found == ase_pairs(positions, cell, flags, cutoff)
    assert len(found) > 0 and np.all(first < second)


def test_pbc_flags_and_cell_errors():
    assert pbc_flags(None, np.eye(3)).tolist() == [True] * 3 and pbc_flags(None).tolist() == [False] * 3
    assert pbc_flags([1, 0, 1]).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="pbc must be a bool or three bools"):
        pbc_flags([True, False])
    with pytest.raises(ValueError, match="linearly dependent"):
        periodic_cell([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]], True)
    with pytest.raises(ValueError, match=r"cell of frames \[1\] has no volume"):
        frame_cells(np.stack([np.eye(3), np.diag([1.0, 1.0, 0.0])]), 2)


def test_lengths_angles_and_standard_cells_agree_with_ase():
    rng = np.random.default_rng(1)
    cells = np.stack([(np.diag([5.0, 6.0, 7.0]) + rng.uniform(-2, 2, (3, 3))) @ random_rotation(rng) for _ in range(4)])
    cells = frame_cells(cells, 4)  # right-handed
    lengths, angles = cell_lengths_angles(cells)
    np.testing.assert_allclose(np.hstack([lengths, angles]), [Cell(c).cellpar() for c in cells], rtol=1e-12)
    expected = [Cell(c).standard_form()[0].array for c in cells]
    np.testing.assert_allclose(standard_cells(lengths, angles), expected, rtol=1e-10, atol=1e-10)


def test_to_mdtraj_keeps_fractional_coordinates_of_a_rotated_left_handed_cell():
    rng = np.random.default_rng(2)
    cell = np.array([[6.0, 0.0, 0.0], [1.0, 5.5, 0.0], [-0.5, 1.0, 6.5]])[[1, 0, 2]] @ random_rotation(rng)
    assert np.linalg.det(cell) < 0
    frames = rng.uniform(0.0, 1.0, (3, 7, 3)) @ cell
    traj = to_mdtraj(frames, cell, ["O", "H", "H", "O", "H", "H", "Cu"])
    right_handed = frame_cells(cell, 1)[0]
    for xyz, box, positions in zip(traj.xyz.astype(np.float64), traj.unitcell_vectors.astype(np.float64), frames):
        np.testing.assert_allclose(xyz @ np.linalg.inv(box), positions @ np.linalg.inv(right_handed), atol=1e-5)
        np.testing.assert_allclose(box, Cell(right_handed).standard_form()[0].array * 0.1, atol=FLOAT32_NM)
    assert [atom.element.symbol for atom in traj.topology.atoms] == ["O", "H", "H", "O", "H", "H", "Cu"]
    assert to_mdtraj(frames, None, None).unitcell_vectors is None
    assert [a.element.symbol for a in mdtraj_topology(None, 2).atoms] == ["VS", "VS"]
    with pytest.raises(ValueError, match="mdtraj does not know the element symbol 'Qq'"):
        mdtraj_topology(["Qq"], 1)
