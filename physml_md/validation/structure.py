"""MD structure: distributions of distances and angles over a trajectory, to check that a potential samples the
same structures as a reference: ``radial_distribution``, ``bond_length_distribution`` and ``dihedral_distribution``
(through mdtraj), topology from geometry (``bonds_from_positions``: ASE's covalent radii; ``dihedrals_from_bonds``);
the comparisons of ``physml_md.validation.distributions`` are re-exported here.

Units: angstrom, dihedrals in degrees on [-180, 180] (``md.geometry.to_mdtraj`` converts to mdtraj's nm and
radians). mdtraj's float32 coordinates give distances and angles a relative error of about 1e-7; the rest is float64.
"""

from __future__ import annotations

from typing import Mapping, Sequence, Tuple

import numpy as np
from ase.data import atomic_numbers, covalent_radii, missing

from physml_md.md.arrays import (
    ArrayLike,
    PbcLike,
    atom_array,
    count,
    index_array,
    positive,
    require_finite_atoms,
    short_list,
)
from physml_md.md.geometry import close_pairs, frame_cells, half_width, mdtraj, periodic_cell, to_mdtraj
from physml_md.units import ANGSTROM_TO_NM, NM_TO_ANGSTROM
from physml_md.validation.distributions import (  # the comparisons are also offered here, where they have always been
    DEFAULT_THRESHOLDS,
    RDF,
    ComparisonResult,
    Distribution,
    compare_distributions,
    histogram_edges,
    histogram_overlap,
    jensen_shannon,
    rdf_difference,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "RDF",
    "ComparisonResult",
    "Distribution",
    "bond_length_distribution",
    "bonds_from_positions",
    "compare_distributions",
    "dihedral_distribution",
    "dihedrals_from_bonds",
    "histogram_overlap",
    "jensen_shannon",
    "radial_distribution",
    "rdf_difference",
]

# How many frame-pair distances mdtraj computes at once in radial_distribution (float32, 80 MB).
_RDF_CHUNK = 20_000_000


# ---------------------------------------------------------------------------------------------------------
# topology from geometry


def bonds_from_positions(
    symbols: Sequence[str],
    positions: ArrayLike,
    scale: float = 1.2,
    radii: Mapping[str, float] | None = None,
    cell: ArrayLike | None = None,
    pbc: PbcLike = None,
) -> np.ndarray:
    """Covalent bonds [M, 2] (i < j, sorted): pairs closer than ``scale`` * (r_i + r_j).

    Radii are ASE's single-bond covalent radii (``ase.data.covalent_radii``: Cordero et al., Dalton Trans.
    2008, 2832; carbon sp3), updated by ``radii`` ({symbol: angstrom}). The factor 1.2 finds the bonds of
    organic molecules near equilibrium (C-H 1.09 against 1.28, C-C 1.54 against 1.82) without joining atoms
    two bonds apart (geminal H-H 1.78 against 0.74). ``cell`` and ``pbc`` as in ``blowups.minimum_distance``
    (bonds across the boundary are found). Pairs come from the neighbour list (O(N)).
    """
    xyz = atom_array(positions, "positions")
    symbols = [str(s) for s in symbols]
    if len(symbols) != len(xyz):
        raise ValueError(f"symbols has {len(symbols)} entries but positions has {len(xyz)} atoms")
    require_finite_atoms(xyz, "positions")
    scale = positive(scale, "scale")
    known = {s: covalent_radii[atomic_numbers[s]] for s in set(symbols) if s in atomic_numbers}
    table = {**{s: float(r) for s, r in known.items() if r != missing}, **(dict(radii) if radii else {})}
    unknown = sorted(set(symbols) - set(table))
    if unknown:
        raise ValueError(
            f"no covalent radius for {unknown} (ase.data has none); pass radii={{'{unknown[0]}': <angstrom>, ...}}"
        )
    radius = np.array([table[s] for s in symbols], dtype=np.float64)
    matrix, periodic = periodic_cell(cell, pbc)
    if len(xyz) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    first, second, distances = close_pairs(xyz, matrix, periodic, 2.0 * scale * radius.max())
    bonded = distances < scale * (radius[first] + radius[second])
    pairs = np.stack([first[bonded], second[bonded]], axis=1).astype(np.int64)
    return np.unique(pairs, axis=0)  # one row per pair (several images may be close), sorted


def dihedrals_from_bonds(n_atoms: int, bonds: ArrayLike) -> np.ndarray:
    """Every proper dihedral [M, 4] (i, j, k, l) along bonds i-j, j-k, k-l, each once.

    A dihedral and its reverse (l, k, j, i) are the same and appear once, with j < k. Rings of three
    (i == l) give no dihedral. Sorted lexicographically by (j, k, i, l).
    """
    n_atoms = count(n_atoms, "n_atoms")
    edges = index_array(bonds, 2, "bonds", n_atoms)
    neighbours = [set() for _ in range(n_atoms)]
    for a, b in edges.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    centres = sorted({(min(a, b), max(a, b)) for a, b in edges.tolist()})
    quadruples = [
        (i, j, k, l)
        for j, k in centres
        for i in sorted(neighbours[j] - {k})
        for l in sorted(neighbours[k] - {j})  # noqa: E741 (the usual name of the fourth atom)
        if i != l
    ]
    return np.asarray(quadruples, dtype=np.int64).reshape(-1, 4)


# ---------------------------------------------------------------------------------------------------------
# distributions over a trajectory (mdtraj)


def _frames(traj_positions: ArrayLike) -> np.ndarray:
    """Positions as float64 [n_frames, n_atoms, 3] (one frame [n_atoms, 3] is accepted), finite."""
    frames = np.asarray(traj_positions, dtype=np.float64)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3 or frames.shape[2] != 3 or frames.shape[0] == 0:
        raise ValueError(
            f"traj_positions must have shape [n_frames, n_atoms, 3] (angstrom), got {np.shape(traj_positions)}"
        )
    bad = np.nonzero(~np.isfinite(frames).all(axis=(1, 2)))[0]
    if bad.size:
        raise ValueError(
            f"traj_positions are not finite (nan or inf) in frames {short_list(bad)}; drop those frames "
            "(check_frame finds where a run blew up)"
        )
    return frames


def _symbols(symbols: Sequence[str], n_atoms: int) -> list:
    symbols = [str(s) for s in symbols]
    if len(symbols) != n_atoms:
        raise ValueError(f"symbols has {len(symbols)} entries but the frames have {n_atoms} atoms")
    return symbols


def _rdf_pairs(pairs: Sequence[str] | ArrayLike | None, symbols: Sequence[str]) -> Tuple[np.ndarray, str]:
    """Atom pairs [M, 2] and a label: all unique pairs, pairs of two elements, or explicit pairs."""
    n_atoms = len(symbols)
    if pairs is None:
        first, second = np.triu_indices(n_atoms, 1)
        return np.stack([first, second], axis=1), "all"
    if len(pairs) == 2 and all(isinstance(p, str) for p in pairs):
        kinds = np.asarray(symbols)
        members = []
        for element in pairs:
            indices = np.nonzero(kinds == element)[0]
            if indices.size == 0:
                raise ValueError(f"no atom is {element!r} (the frames hold {', '.join(sorted(set(symbols)))})")
            members.append(indices)
        if pairs[0] == pairs[1]:
            first, second = np.triu_indices(len(members[0]), 1)
            chosen = np.stack([members[0][first], members[0][second]], axis=1)
        else:
            chosen = np.stack(np.meshgrid(members[0], members[1], indexing="ij"), axis=-1).reshape(-1, 2)
        return chosen, f"{pairs[0]}-{pairs[1]}"
    return index_array(pairs, 2, "pairs", n_atoms), "custom"


def radial_distribution(
    traj_positions: ArrayLike,
    cell: ArrayLike,
    symbols: Sequence[str],
    pairs: Tuple[str, str] | ArrayLike | None = None,
    r_range: Tuple[float, float] | None = None,
    n_bins: int = 200,
) -> RDF:
    """g(r) over the frames of a periodic trajectory, by ``mdtraj.compute_rdf`` (minimum image).

    ``traj_positions`` [n_frames, n_atoms, 3] angstrom; ``cell`` [3, 3] or [n_frames, 3, 3] (NPT), any
    triclinic shape; ``symbols`` one element symbol per atom. ``pairs``: None for every unique pair, two
    symbols such as ("O", "H") for a partial g(r), or explicit atom pairs [M, 2]. ``r_range`` (angstrom)
    defaults to (0, half the smallest distance between opposite cell faces), which is also its upper
    limit: beyond it minimum-image shells are incomplete and g(r) would fall off. mdtraj normalises each
    shell by the pair count and the mean inverse volume (as cpptraj and gmx rdf do), so an ideal gas gives 1.
    """
    frames = _frames(traj_positions)
    if cell is None:
        raise ValueError(
            "radial_distribution needs the periodic cell (g(r) is normalised by its volume); for a molecule "
            "in vacuum use bond_length_distribution"
        )
    symbols = _symbols(symbols, frames.shape[1])
    chosen, label = _rdf_pairs(pairs, symbols)
    if len(chosen) == 0:
        raise ValueError("no atom pairs to histogram: g(r) needs at least 2 atoms")
    limit = half_width(frame_cells(cell, len(frames)))
    low, high = (0.0, limit) if r_range is None else (float(r_range[0]), float(r_range[1]))
    if not 0.0 <= low < high:
        raise ValueError(f"r_range must be (r_min, r_max) with 0 <= r_min < r_max (angstrom), got {r_range}")
    if high > limit * (1.0 + 1e-9):
        raise ValueError(
            f"r_range goes to {high:.4g} Å but this cell only holds complete minimum-image shells up to "
            f"{limit:.4g} Å (half the smallest distance between opposite faces); lower r_max or use a larger supercell"
        )
    n_bins = count(n_bins, "n_bins")
    md = mdtraj()
    traj = to_mdtraj(frames, cell, symbols)
    inverse_volumes = 1.0 / traj.unitcell_volumes
    chunk = max(1, _RDF_CHUNK // len(chosen))
    weighted, total = np.zeros(n_bins), 0.0
    for start in range(0, len(frames), chunk):  # g of a chunk is normalised by that chunk's sum of 1/V
        part = traj[start : start + chunk]
        r_nm, g = md.compute_rdf(
            part, chosen, r_range=np.array([low, high]) * ANGSTROM_TO_NM, n_bins=n_bins, periodic=True
        )
        weight = float(np.sum(inverse_volumes[start : start + chunk]))
        weighted += g.astype(np.float64) * weight
        total += weight
    return RDF(
        r=np.asarray(r_nm, dtype=np.float64) * NM_TO_ANGSTROM,
        g=weighted / total,
        label=label,
        n_pairs=len(chosen),
        n_frames=len(frames),
        r_range=(low, high),
    )


def _over_frames(function: str, traj_positions: ArrayLike, terms: ArrayLike, name: str, finder: str, cell):
    """float64 [n_frames, n_terms] of ``mdtraj.<function>`` (distances: 2 atoms a term, dihedrals: 4)."""
    frames = _frames(traj_positions)
    width = 2 if function == "compute_distances" else 4
    indices = index_array(terms, width, name, frames.shape[1])
    if len(indices) == 0:
        raise ValueError(f"{name} is empty; find {'bonds' if width == 2 else 'dihedrals'} with {finder}")
    compute = getattr(mdtraj(), function)
    return compute(to_mdtraj(frames, cell, None), indices, periodic=cell is not None).astype(np.float64)


def bond_length_distribution(
    traj_positions: ArrayLike,
    bonds: ArrayLike,
    bins: int | ArrayLike = 100,
    cell: ArrayLike | None = None,
) -> Distribution:
    """Lengths (angstrom) of ``bonds`` [M, 2] in every frame, by ``mdtraj.compute_distances``, and their histogram.

    ``bins``: a bin count (spanning the values found) or explicit edges (angstrom; use the same edges for
    a reference and a sample). With ``cell`` ([3, 3] or [n_frames, 3, 3]) lengths are minimum-image.
    """
    values = _over_frames("compute_distances", traj_positions, bonds, "bonds", "bonds_from_positions", cell)
    values = values * NM_TO_ANGSTROM
    return Distribution.of("bond length", "angstrom", values, histogram_edges(bins, values, None))


def dihedral_distribution(
    traj_positions: ArrayLike,
    quadruples: ArrayLike,
    bins: int | ArrayLike = 72,
    cell: ArrayLike | None = None,
) -> Distribution:
    """Dihedral angles (degrees, -180..180) of ``quadruples`` [M, 4] in every frame, by ``mdtraj.compute_dihedrals``.

    The sign follows the IUPAC convention (positive clockwise looking along j -> k). ``bins``: a bin count
    over the periodic range -180..180 (72 bins of 5 degrees by default) or explicit edges in degrees.
    """
    values = _over_frames("compute_dihedrals", traj_positions, quadruples, "quadruples", "dihedrals_from_bonds", cell)
    values = np.degrees(values)
    return Distribution.of("dihedral", "degree", values, histogram_edges(bins, values, (-180.0, 180.0)))
