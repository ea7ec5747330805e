"""Neighbour lists for one structure or a batch, computed with vesin-torch.

Conventions (those of ``ase.neighborlist.neighbor_list("ijS", ..., self_interaction=False)``): ``edge_index`` [2, E]
int64 (row 0 the centre i, row 1 the neighbour j) and ``cell_shifts`` [E, 3] int64, ``r_ij = x[j] - x[i] +
cell_shifts @ cell`` (rows of ``cell`` the lattice vectors). The list is full (i -> j and j -> i) and holds every
pair with ``|r_ij| < cutoff``; ``(i, i, 0)`` never, periodic images ``(i, i, S != 0)`` yes. Shifts along
non-periodic directions are 0, so such a cell vector may be zero; positions need not be wrapped.

Bounds: a list estimated (``estimated_pairs``) above ``MAX_PAIRS`` (10^8 pairs, ~5.6 GB at 56 bytes a pair; 10^6
Cu atoms at 5 angstrom make ~4.4e7) is refused. vesin-torch 0.6.2 dies (SIGFPE) when its cell grid degenerates (a
structure stretched along one or two axes gets 0 cells in some direction): ``vesin_cell_grid`` repeats its
arithmetic so such input is refused first; positions beyond ``MAX_COORDINATE`` overflow its int32 cell index.

Indices only: computed on detached tensors, no gradient; models recompute ``r_ij`` differentiably. Outputs are on
the device of ``positions``. Both public functions compile with ``torch.jit.script`` (they run in exported models).
"""

import math
from typing import List, Tuple

import torch
from torch import Tensor
from vesin_torch import NeighborList


def _check_structure(positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float):
    """Raise a ValueError naming the problem and the fix for input that vesin would choke on."""
    if not (cutoff > 0.0) or cutoff == float("inf"):
        raise ValueError(f"cutoff must be a positive finite number of angstrom, got {cutoff}")
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {positions.shape}")
    if cell.dim() != 2 or cell.shape[0] != 3 or cell.shape[1] != 3:
        raise ValueError(f"cell must have shape [3, 3] for one structure, got {cell.shape}")
    if pbc.dim() != 1 or pbc.shape[0] != 3:
        raise ValueError(f"pbc must have shape [3] for one structure, got {pbc.shape}")
    if not bool(torch.isfinite(positions).all()):
        bad: List[int] = torch.nonzero(~torch.isfinite(positions).all(dim=1)).flatten().tolist()
        raise ValueError(
            f"positions contain NaN or inf ({len(bad)} atoms, the first {bad[:10]}): give finite positions "
            "(a NaN usually means the simulation or the optimisation that produced them diverged)"
        )
    _check_coordinates(positions)
    periodic = cell[pbc]  # [P, 3], the lattice vectors that matter
    if periodic.shape[0] > 0:
        lengths = torch.linalg.vector_norm(periodic, dim=1)
        singular = not bool(torch.isfinite(periodic).all()) or bool((lengths == 0.0).any())
        if not singular:
            # Singular: the volume spanned by the unit lattice vectors (the sine of the angle between two of
            # them, |det| for three) is below 1e-6. vesin kills the process (SIGFPE) on an exactly singular
            # periodic cell, and returns garbage or runs without end on a nearly singular one.
            unit = periodic / lengths.unsqueeze(1)
            singular = float(torch.linalg.det(unit @ unit.T)) < 1e-12
        if singular:
            pbc_list: List[bool] = pbc.tolist()
            cell_list: List[List[float]] = cell.tolist()
            raise ValueError(
                f"cell is singular in its periodic directions (pbc={pbc_list}, cell={cell_list}): "
                "give finite, non-zero, linearly independent lattice vectors for every periodic direction, "
                "or set pbc False for the directions that are not periodic"
            )


MAX_COORDINATE = 1.0e6  # angstrom (100 micrometres): only a broken structure or a blown-up MD run reaches it


def _check_coordinates(positions: Tensor, bound: float = MAX_COORDINATE):
    """Refuse finite positions beyond MAX_COORDINATE (vesin's int32 cell indices overflow: a wrong list)."""
    if positions.shape[0] == 0:
        return
    largest_per_atom = positions.abs().max(dim=1).values
    largest = float(largest_per_atom.max())
    if largest > bound:
        atom = int(torch.argmax(largest_per_atom))
        raise ValueError(
            f"positions reach {_scientific(largest)} angstrom (atom {atom}), beyond the "
            f"{_scientific(bound)} angstrom no structure needs (physml_md.data.neighbors.MAX_COORDINATE): "
            "the structure is broken, or the MD run that made it blew up (check the structure; for MD, a shorter "
            "time step or a model that covers the geometries visited)"
        )


# vesin's cell list caps its cells at this many in all (vesin/src/cpu_cell_list.cpp, MAX_NUMBER_OF_CELLS)
_VESIN_MAX_CELLS = 1.0e5


def _trunc(x: float) -> float:
    """``x`` >= 0 rounded towards zero, as a float (no int overflow for huge ``x``)."""
    return x - math.fmod(x, 1.0)


def _unit(v: Tensor) -> Tensor:
    return v / torch.linalg.vector_norm(v)


def vesin_cell_grid(
    positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float, max_cells: float = _VESIN_MAX_CELLS
) -> Tuple[List[float], List[int]]:
    """(box widths in angstrom, cells per direction) of vesin-torch 0.6's CPU cell list, computed as vesin does
    (face distance, or the atoms' extent +1 % for a non-periodic axis; ``width // cutoff``, scaled down above 1e5
    cells). A count of 0 makes vesin divide by zero (SIGFPE). ``cell``/``pbc``: CPU float64 / bool, non-singular."""
    flags: List[bool] = pbc.tolist()
    indices: List[int] = []
    for d in range(3):
        if flags[d]:
            indices.append(d)
    matrix = cell.clone()
    if len(indices) == 0:
        matrix = torch.eye(3, dtype=torch.float64)
    elif len(indices) == 1:
        a = matrix[indices[0]]
        b = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
        if float(torch.dot(_unit(a), b).abs()) > 0.9:
            b = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        c = _unit(torch.linalg.cross(a, b))
        matrix[(indices[0] + 1) % 3] = _unit(torch.linalg.cross(c, a))
        matrix[(indices[0] + 2) % 3] = c
    elif len(indices) == 2:
        matrix[3 - indices[0] - indices[1]] = _unit(torch.linalg.cross(matrix[indices[0]], matrix[indices[1]]))
    widths: List[float] = []
    for d in range(3):
        if flags[d]:
            normal = _unit(torch.linalg.cross(matrix[(d + 1) % 3], matrix[(d + 2) % 3]))
            widths.append(float(torch.dot(normal, matrix[d]).abs()))
        else:
            along = positions[:, d].detach().to(torch.float64)
            extent = float(along.max() - along.min()) if positions.shape[0] > 0 else 0.0
            if extent < 1e-6:
                extent = 1.0
            widths.append(max(extent * 1.01, 1.0))
    counts: List[float] = [max(_trunc(width / cutoff), 1.0) for width in widths]
    if counts[0] * counts[1] * counts[2] > max_cells:
        ratio_x_y = counts[0] / counts[1]
        ratio_y_z = counts[1] / counts[2]
        counts[2] = _trunc((max_cells / (ratio_x_y * ratio_y_z * ratio_y_z)) ** (1.0 / 3.0))
        counts[1] = _trunc(ratio_y_z * counts[2])
        counts[0] = _trunc(ratio_x_y * counts[1])
    return widths, [int(count) for count in counts]


def _check_cell_grid(positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float):
    """Refuse a structure that vesin's cell list would divide into zero cells along some direction (it would kill
    the process): atoms spread far along one or two axes only, e.g. one atom that flew away from a molecule."""
    widths, counts = vesin_cell_grid(positions, cell, pbc, cutoff)
    if min(counts) < 1:
        largest_per_atom = positions.detach().abs().max(dim=1).values
        atom = int(torch.argmax(largest_per_atom))
        spans = " x ".join([_scientific(width) for width in widths])
        raise ValueError(
            f"the structure spans {spans} angstrom (largest coordinate {_scientific(float(largest_per_atom.max()))} "
            f"angstrom, atom {atom}): too stretched for the neighbour list at a {cutoff} angstrom cutoff "
            "(vesin-torch's cell list would divide by zero and kill the process): atoms this far apart mean the "
            "structure is broken, or the MD run that made it blew up or let an atom fly away; remove the distant "
            "atoms or check the structure (for MD, a shorter time step)"
        )


MAX_PAIRS = 100_000_000  # 56 bytes a pair: edge_index (2 x int64) + its transposed copy + cell_shifts (3 x int64)


def _scientific(x: float) -> str:
    """``x`` > 0 as "1.2e+10" (TorchScript has no format specifications)."""
    exponent = int(math.floor(math.log10(x)))
    tenths = int(x / 10.0**exponent * 10.0 + 0.5)  # the mantissa in tenths, 10..100
    if tenths >= 100:
        tenths, exponent = tenths // 10, exponent + 1
    return f"{tenths // 10}.{tenths % 10}e+{exponent}"


def estimated_pairs(positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float) -> float:
    """About how many (i, j, S) pairs the list of one structure holds: N^2 times the fraction of the periodic cell
    (length, area or volume) covered by the cutoff sphere's projection, times, per non-periodic direction, the
    fraction of the atoms' extent within 2 cutoffs. Within 10 % for bulk fcc Cu; ~2-3x over for molecules, clusters
    and slabs. ``cell``/``pbc``: CPU float64 / bool, checked (not singular in its periodic directions)."""
    n = float(positions.shape[0])
    periodic = cell[pbc]  # [P, 3]
    n_periodic = periodic.shape[0]
    fraction = 1.0
    if n_periodic > 0:
        measure = float(torch.sqrt(torch.linalg.det(periodic @ periodic.T).abs()))  # length, area or volume
        ball = [2.0 * cutoff, math.pi * cutoff**2, 4.0 / 3.0 * math.pi * cutoff**3][n_periodic - 1]
        fraction = ball / measure
    if n_periodic < 3 and positions.shape[0] > 1:
        # extent of the atoms along an orthonormal basis of the non-periodic directions
        projector = torch.eye(3, dtype=torch.float64)
        if n_periodic > 0:
            projector = projector - periodic.T @ torch.linalg.solve(periodic @ periodic.T, periodic)
        basis = torch.linalg.eigh(projector)[1][:, n_periodic:]  # eigenvalues 0 (periodic) then 1
        along = positions.detach().to(torch.float64) @ basis.to(positions.device)  # only 3 extents leave the device
        extents: List[float] = (along.max(dim=0).values - along.min(dim=0).values).tolist()
        for extent in extents:
            if extent > 2.0 * cutoff:
                fraction *= 2.0 * cutoff / extent
    return n * n * fraction


def neighbor_list(
    positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float, max_pairs: int = MAX_PAIRS
) -> Tuple[Tensor, Tensor]:
    """Full neighbour list of one structure.

    Args:
        positions: [N, 3] float, angstrom (keys.POSITIONS of one structure).
        cell: [3, 3] float, angstrom, rows are the lattice vectors (one structure of keys.CELL).
        pbc: [3] bool (one structure of keys.PBC).
        cutoff: angstrom; pairs with ``|r_ij| < cutoff`` are listed.
        max_pairs: refuse a list estimated (``estimated_pairs``) to hold more pairs than this.

    Returns:
        ``edge_index`` [2, E] int64 and ``cell_shifts`` [E, 3] int64, with
        ``r_ij = positions[j] - positions[i] + cell_shifts @ cell`` (see the module docstring).

    Raises:
        ValueError: for cutoff <= 0, non-finite positions, a singular cell in a periodic direction, wrong
        shapes, or a list estimated longer than ``max_pairs``. Under TorchScript it surfaces as
        ``torch.jit.Error`` (an Exception, not a ValueError) whose message ends with the same text.
    """
    device = positions.device
    # The checks run on CPU float64 copies: cell and pbc are tiny, and vesin reads pbc on the CPU anyway.
    cpu = torch.device("cpu")
    cell_cpu = cell.detach().to(device=cpu, dtype=torch.float64)
    pbc_cpu = pbc.detach().to(device=cpu, dtype=torch.bool)
    _check_structure(positions.detach(), cell_cpu, pbc_cpu, cutoff)
    if positions.shape[0] == 0:  # vesin refuses an empty array
        no_edges = torch.zeros((2, 0), dtype=torch.long, device=device)
        return no_edges, torch.zeros((0, 3), dtype=torch.long, device=device)
    _check_cell_grid(positions, cell_cpu, pbc_cpu, cutoff)
    pairs_estimate = estimated_pairs(positions, cell_cpu, pbc_cpu, cutoff)
    if pairs_estimate > max_pairs:
        raise ValueError(
            f"the neighbour list of {positions.shape[0]} atoms at a {cutoff} angstrom cutoff would hold about "
            f"{_scientific(pairs_estimate)} pairs (~{_scientific(pairs_estimate * 56.0)} bytes), more "
            f"than the bound of {_scientific(float(max_pairs))} (physml_md.data.neighbors.MAX_PAIRS): use a "
            "shorter cutoff (check its unit) or a smaller system"
        )
    calculator = NeighborList(cutoff=cutoff, full_list=True)
    pairs, shifts = calculator.compute(
        points=positions.detach().to(torch.float64),
        box=cell_cpu.to(device),
        periodic=pbc_cpu,
        quantities="PS",
        copy=True,
    )
    return pairs.T.contiguous(), shifts.to(torch.long)


def batch_neighbor_list(
    positions: Tensor, cell: Tensor, pbc: Tensor, n_atoms: Tensor, cutoff: float, max_pairs: int = MAX_PAIRS
) -> Tuple[Tensor, Tensor]:
    """Full neighbour lists of B structures, concatenated, in global atom indices.

    Args:
        positions: [N, 3] float, angstrom (keys.POSITIONS); structure b owns the contiguous block
            ``offsets[b] : offsets[b] + n_atoms[b]`` with ``offsets = cumsum(n_atoms) - n_atoms``.
        cell: [B, 3, 3] float (keys.CELL). pbc: [B, 3] bool (keys.PBC). n_atoms: [B] int64 (keys.N_ATOMS).
        cutoff: angstrom. max_pairs: the bound of each structure's list (see :func:`neighbor_list`).

    Returns:
        ``edge_index`` [2, E] int64 (global indices, edges of structure 0 first) and ``cell_shifts`` [E, 3]
        int64, each structure following the conventions of :func:`neighbor_list` with its own cell.
    """
    device = positions.device
    if cell.dim() != 3 or pbc.dim() != 2 or n_atoms.dim() != 1 or cell.shape[0] != n_atoms.shape[0]:
        raise ValueError(
            f"batch_neighbor_list expects cell [B, 3, 3], pbc [B, 3] and n_atoms [B], got {cell.shape}, "
            f"{pbc.shape} and {n_atoms.shape}"
        )
    counts: List[int] = n_atoms.tolist()
    if sum(counts) != positions.shape[0] or bool((n_atoms < 0).any()):
        raise ValueError(
            f"n_atoms {counts} (sum {sum(counts)}) does not split positions with {positions.shape[0]} rows"
        )
    edges: List[Tensor] = [torch.zeros((2, 0), dtype=torch.long, device=device)]
    shifts: List[Tensor] = [torch.zeros((0, 3), dtype=torch.long, device=device)]
    offset = 0
    for b, count in enumerate(counts):
        edge_index, cell_shifts = neighbor_list(positions[offset : offset + count], cell[b], pbc[b], cutoff, max_pairs)
        edges.append(edge_index + offset)
        shifts.append(cell_shifts)
        offset += count
    return torch.cat(edges, dim=1), torch.cat(shifts, dim=0)
