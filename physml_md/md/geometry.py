"""The geometry under the MD analysis: pbc and cells normalised once, pair searches, the mdtraj boundary.

``pbc_flags``, ``cell_matrix`` and ``periodic_cell`` are the one reading of a ``pbc`` argument and of a cell, with one
clear error for what cannot work; ``close_pairs`` uses the package's neighbour list (vesin, O(N)); the cell helpers
and ``to_mdtraj`` cross into mdtraj (nm, its cell orientation: a rotation, so distances and angles are kept). Units
are angstrom and degrees; mdtraj is imported on first use (``mdtraj()``).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
from ase.cell import Cell

from physml_md.data.neighbors import neighbor_list
from physml_md.md.arrays import ArrayLike, PbcLike, short_list
from physml_md.units import ANGSTROM_TO_NM


def pbc_flags(pbc: PbcLike, cell: ArrayLike | None = None) -> np.ndarray:
    """``pbc`` as three bools; None means periodic along every axis when a cell is given, along none otherwise."""
    if pbc is None:
        return np.full(3, cell is not None)
    flags = np.asarray(pbc, dtype=bool).reshape(-1)
    if flags.size == 1:
        flags = np.repeat(flags, 3)
    if flags.size != 3:
        raise ValueError(f"pbc must be a bool or three bools, got {pbc!r}")
    return flags


def cell_matrix(cell: ArrayLike) -> np.ndarray:
    """``cell`` as a finite float64 [3, 3] matrix whose rows are the cell vectors (three lengths: a box)."""
    matrix = np.asarray(cell, dtype=np.float64)
    if matrix.shape == (3,):
        matrix = np.diag(matrix)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        raise ValueError(
            f"cell must be a finite [3, 3] matrix (rows are the cell vectors, angstrom) or three lengths, got {cell!r}"
        )
    return matrix


def periodic_cell(cell: ArrayLike | None, pbc: PbcLike) -> Tuple[np.ndarray, np.ndarray]:
    """(cell [3, 3], pbc [3]) checked for a minimum-image search; a zero cell when nothing is periodic.

    The vectors of the periodic axes must be non-zero and linearly independent; the others are never used
    (an ASE slab with ``cell[2] == 0`` and ``pbc = (True, True, False)`` is fine).
    """
    periodic = pbc_flags(pbc, cell)
    if not periodic.any():
        return np.zeros((3, 3)), periodic
    if cell is None:
        raise ValueError(f"pbc is {periodic.tolist()} but no cell was given; pass the cell (angstrom) or pbc=False")
    matrix = cell_matrix(cell)
    for axis in np.nonzero(periodic)[0]:
        if not np.linalg.norm(matrix[axis]) > 0:
            raise ValueError(
                f"cell vector {axis} is zero but pbc[{axis}] is True; give that cell vector or set pbc[{axis}] = False"
            )
    vectors = matrix[periodic]
    singular = np.linalg.svd(vectors, compute_uv=False)
    if singular[-1] <= 1e-10 * singular[0]:
        raise ValueError(
            f"the periodic cell vectors {vectors.tolist()} are linearly dependent (the cell has no volume); "
            "check the cell"
        )
    return matrix, periodic


def close_pairs(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) of every pair i < j closer than ``cutoff`` (angstrom), once per lattice image.

    ``positions`` [N, 3] finite; ``cell`` and ``pbc`` as ``periodic_cell`` returns them. An atom and its own
    periodic images are not a pair. Distances are float64 and exact for any cell shape.
    """
    edge_index, shifts = neighbor_list(
        torch.from_numpy(positions), torch.from_numpy(cell), torch.from_numpy(pbc), float(cutoff)
    )
    first, second = edge_index.numpy()
    keep = first < second  # the list is full: (i, j, S) and (j, i, -S) are the same pair
    first, second = first[keep], second[keep]
    vectors = positions[second] - positions[first] + shifts.numpy()[keep] @ cell
    return first, second, np.linalg.norm(vectors, axis=1)


# ---------------------------------------------------------------------------------------------------------
# cells of a trajectory and the mdtraj boundary


def frame_cells(cell: ArrayLike, n_frames: int) -> np.ndarray:
    """``cell`` as [n_frames, 3, 3] right-handed cell matrices (one [3, 3] cell or three lengths is repeated).

    A left-handed cell becomes the right-handed cell of the same lattice (its last vector reversed). mdtraj
    treats a cell as periodic in all three directions, so a cell without volume is refused.
    """
    cells = np.asarray(cell, dtype=np.float64)
    if cells.shape in ((3,), (3, 3)):
        cells = np.repeat(cell_matrix(cells)[None], n_frames, axis=0)
    if cells.shape != (n_frames, 3, 3) or not np.isfinite(cells).all():
        raise ValueError(
            f"cell must be [3, 3], three lengths, or [n_frames={n_frames}, 3, 3] (angstrom), got shape {np.shape(cell)}"
        )
    volumes = np.linalg.det(cells)
    flat = np.nonzero(np.abs(volumes) <= 1e-10 * np.prod(np.linalg.norm(cells, axis=2), axis=1))[0]
    if flat.size:
        raise ValueError(
            f"the cell of frames {short_list(flat)} has no volume; mdtraj treats a cell as periodic in all "
            "three directions (pass cell=None for a molecule in vacuum)"
        )
    cells = cells.copy()
    cells[volumes < 0, 2] *= -1.0
    return cells


def cell_lengths_angles(cells: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Lengths [F, 3] and angles alpha (b, c), beta (a, c), gamma (a, b) [F, 3] in degrees of ``cells`` [F, 3, 3]."""
    from mdtraj.utils import box_vectors_to_lengths_and_angles

    *lengths, alpha, beta, gamma = box_vectors_to_lengths_and_angles(cells[:, 0], cells[:, 1], cells[:, 2])
    return np.stack(lengths, axis=1), np.stack([alpha, beta, gamma], axis=1)


def standard_cells(lengths: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """mdtraj's cells [F, 3, 3] of ``lengths`` and ``angles`` (degrees): a along x, b in the xy plane, c_z > 0."""
    from mdtraj.utils import lengths_and_angles_to_box_vectors

    return np.stack(lengths_and_angles_to_box_vectors(*lengths.T, *angles.T), axis=1)


def half_width(cells: np.ndarray) -> float:
    """Half the smallest distance between opposite faces of ``cells`` [F, 3, 3]: the largest r with complete shells."""
    volumes = np.abs(np.linalg.det(cells))
    faces = np.stack([np.cross(cells[:, (k + 1) % 3], cells[:, (k + 2) % 3]) for k in range(3)], axis=1)
    return float(0.5 * np.min(volumes[:, None] / np.linalg.norm(faces, axis=2)))


def mdtraj():
    """The mdtraj module, or an ImportError that says how to install it."""
    try:
        import mdtraj
    except ImportError:  # pragma: no cover - mdtraj is a dependency of physml-md
        raise ImportError("structure metrics and DCD/XTC files need mdtraj: pip install mdtraj") from None
    return mdtraj


def mdtraj_topology(symbols: Sequence[str] | None, n_atoms: int):
    """One chain, one residue "MOL", atoms named by their element symbol; virtual sites when ``symbols`` is None.

    (The atom name is the symbol: PDB atom names have 4 characters, too few for "Cu107".)
    """
    md = mdtraj()
    topology = md.Topology()
    residue = topology.add_residue("MOL", topology.add_chain())
    for symbol in [None] * n_atoms if symbols is None else symbols:
        try:
            element = md.element.virtual_site if symbol is None else md.element.get_by_symbol(str(symbol))
        except KeyError:
            raise ValueError(
                f"mdtraj does not know the element symbol {symbol!r}; use symbols such as 'Cu', 'O'"
            ) from None
        topology.add_atom(element.symbol, element, residue)
    return topology


def to_mdtraj(frames: np.ndarray, cell: ArrayLike | None, symbols: Sequence[str] | None):
    """An mdtraj Trajectory (nm) of ``frames`` [F, N, 3] (angstrom), periodic in 3D when ``cell`` is given.

    mdtraj keeps a cell as lengths and angles and rebuilds its vectors in a fixed orientation, so each frame is
    rotated into that orientation with its cell (``Cell.standard_form``). Without ``symbols`` the atoms are
    virtual sites (geometry needs no element).
    """
    topology = mdtraj_topology(symbols, frames.shape[1])
    if cell is None:
        return mdtraj().Trajectory(frames * ANGSTROM_TO_NM, topology)
    cells = frame_cells(cell, len(frames))
    rotations = np.stack([Cell(matrix).standard_form()[1] for matrix in cells])
    xyz = np.einsum("fnk,fjk->fnj", frames, rotations)
    lengths, angles = cell_lengths_angles(cells)
    return mdtraj().Trajectory(
        xyz * ANGSTROM_TO_NM, topology, unitcell_lengths=lengths * ANGSTROM_TO_NM, unitcell_angles=angles
    )
