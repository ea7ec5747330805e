"""ASE structures as OpenMM topologies, positions and boxes in OpenMM's reduced form: a = (ax, 0, 0),
b = (bx, by, 0), c = (cx, cy, cz), |bx| <= ax/2, |cx| <= ax/2, |cy| <= by/2 (``openmm_box``: the cell rotated to
lower-triangular form, positions with it, then reduced by adding lattice vectors to each other)."""

from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np
from ase import Atoms
from ase.cell import Cell
from openmm import Vec3, app, unit

from physml_md.units import ANGSTROM_TO_NM

__all__ = ["openmm_box", "topology_from_atoms"]


def openmm_box(cell: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(box in OpenMM's reduced form [3, 3] in angstrom, rotation R) for an ASE cell: positions @ R.T."""
    cell = Cell(np.asarray(cell, dtype=np.float64))
    if cell.rank != 3:
        raise ValueError("a periodic OpenMM system needs three cell vectors; this cell has rank " + str(cell.rank))
    if cell.handedness < 0:
        raise ValueError("the cell is left-handed; OpenMM needs a right-handed cell: swap two cell vectors")
    lower, rotation = cell.standard_form()
    a, b, c = (np.array(v) for v in lower.array)
    c -= b * np.round(c[1] / b[1])
    c -= a * np.round(c[0] / a[0])
    b -= a * np.round(b[0] / a[0])
    box = np.array([a, b, c])
    box[np.abs(box) < 1e-12 * np.abs(box).max()] = 0.0
    return box, rotation


def topology_from_atoms(
    atoms: Atoms, residue_name: str = "MOL", bonds: Iterable[Tuple[int, int]] | None = None
) -> Tuple[openmm.app.Topology, np.ndarray]:  # noqa: F821
    """(OpenMM Topology, positions in nm [N, 3]) of ``atoms``: one chain, one residue, a reduced box when every
    direction is periodic (positions rotated with it, ``openmm_box``); slabs are refused."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and not pbc.all():
        raise ValueError(
            f"pbc={pbc.tolist()}: OpenMM boxes are periodic in all three directions or none; make the "
            "structure fully periodic (add vacuum along the open direction) or non-periodic"
        )
    positions = np.asarray(atoms.positions, dtype=np.float64)
    topology = app.Topology()
    chain = topology.addChain()
    residue = topology.addResidue(residue_name, chain)
    added = []
    for i, number in enumerate(atoms.numbers):
        element = app.Element.getByAtomicNumber(int(number))
        added.append(topology.addAtom(f"{element.symbol}{i + 1}", element, residue))
    for i, j in bonds or ():
        topology.addBond(added[i], added[j])
    if pbc.all():
        box, rotation = openmm_box(atoms.cell.array)
        positions = positions @ rotation.T
        topology.setPeriodicBoxVectors([Vec3(*row) for row in box * ANGSTROM_TO_NM] * unit.nanometer)
    return topology, positions * ANGSTROM_TO_NM
