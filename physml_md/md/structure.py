"""MD structure comparison: distributions of distances and angles over a trajectory, and how far two are apart.

Besides a sound run (``physml_md.md.metrics``), a trained potential should sample the same structures as a
reference (a run of the reference method, or the training set). This module turns trajectories (numpy arrays
from any engine: ASE, OpenMM, a file) into distributions and compares them:

- structure: ``radial_distribution``, ``bond_length_distribution`` and ``dihedral_distribution`` through
  mdtraj, the distances between two distributions (``histogram_overlap``, ``jensen_shannon``,
  ``rdf_difference``) and ``compare_distributions``, which applies a threshold (``DEFAULT_THRESHOLDS``);
- topology from geometry: ``bonds_from_positions`` (covalent radii) and ``dihedrals_from_bonds``.

Units are the package's (ASE's): angstrom; dihedrals in degrees on [-180, 180]. mdtraj works in nm and radians
and is converted at its boundary (``_to_mdtraj``) with the named factors of ``physml_md.units``. mdtraj stores
coordinates in float32, so the distances and angles it returns carry a relative error of about 1e-7 (a few
1e-6 angstrom); everything else here is float64.

This module imports numpy, the standard library, ``physml_md.units`` and ``physml_md.md.metrics`` (input
checks and the minimum-image distance search); mdtraj is imported inside the functions that use it. Never
torch, ASE, OpenMM or Lightning: these are numbers, usable on any trajectory.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

from physml_md.md.metrics import (
    ArrayLike,
    PbcLike,
    _atom_array,
    _box,
    _count,
    _image_squared,
    _pair_blocks,
    _positive,
    _require_finite_atoms,
    _short_list,
    _ToDict,
)
from physml_md.units import ANGSTROM_TO_NM, NM_TO_ANGSTROM

# ---- default thresholds (see compare_distributions for the reasoning)
DEFAULT_THRESHOLDS: Dict[str, float] = {
    "jensen_shannon": 0.02,  # bits; pass when value <= threshold
    "overlap": 0.9,  # pass when value >= threshold
    "rdf_difference": 0.1,  # mean |g1 - g2| over r; pass when value <= threshold
}
_HIGHER_IS_BETTER = {"jensen_shannon": False, "overlap": True, "rdf_difference": False}

# Single-bond covalent radii in angstrom (Cordero et al., Dalton Trans. 2008, 2832; carbon sp3), the values
# ASE also uses. Pass ``radii`` to bonds_from_positions for other elements.
COVALENT_RADII: Dict[str, float] = {
    "H": 0.31,
    "B": 0.84,
    "C": 0.76,
    "N": 0.71,
    "O": 0.66,
    "F": 0.57,
    "Si": 1.11,
    "P": 1.07,
    "S": 1.05,
    "Cl": 1.02,
    "Br": 1.20,
    "I": 1.39,
}

# How many frame-pair distances mdtraj computes at once in radial_distribution (float32, 80 MB).
_RDF_CHUNK = 20_000_000


# ---------------------------------------------------------------------------------------------------------
# results


@dataclasses.dataclass(frozen=True)
class RDF(_ToDict):
    """A radial distribution function averaged over frames: g(r) at bin centres r (angstrom)."""

    r: np.ndarray  # [n_bins] bin centres, angstrom
    g: np.ndarray  # [n_bins]
    label: str  # "all", "O-H", or "custom" for explicit pairs
    n_pairs: int
    n_frames: int
    r_range: Tuple[float, float]  # angstrom


@dataclasses.dataclass(frozen=True)
class Distribution(_ToDict):
    """Values of a geometric quantity over frames and terms, and their histogram.

    ``values`` [n_frames, n_terms] are kept for ``compare_distributions`` (which may re-bin) but left out of
    ``to_dict``; ``n_outside`` counts the values that fell outside ``edges``.
    """

    name: str  # "bond length" or "dihedral"
    unit: str  # "angstrom" or "degree"
    values: np.ndarray
    edges: np.ndarray
    counts: np.ndarray
    n_outside: int

    @property
    def probabilities(self) -> np.ndarray:
        """The counts normalised to sum to 1."""
        total = self.counts.sum()
        return self.counts / total if total > 0 else self.counts.astype(np.float64)

    def to_dict(self) -> Dict[str, Any]:
        """Name, unit, histogram (edges, counts), sizes; the raw values are left out (they can be large)."""
        n_frames, n_terms = self.values.shape
        return {
            "name": self.name,
            "unit": self.unit,
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "n_outside": int(self.n_outside),
            "n_frames": int(n_frames),
            "n_terms": int(n_terms),
        }


@dataclasses.dataclass(frozen=True)
class ComparisonResult(_ToDict):
    """A distance between a reference and a sample distribution, and whether it is within ``threshold``."""

    name: str
    metric: str  # "jensen_shannon", "overlap" or "rdf_difference"
    value: float
    threshold: float
    passed: bool

    @property
    def message(self) -> str:
        """For example 'bond length: jensen_shannon = 0.004 (pass when <= 0.02): passed'."""
        relation = ">=" if _HIGHER_IS_BETTER[self.metric] else "<="
        verdict = "passed" if self.passed else "FAILED"
        return f"{self.name}: {self.metric} = {self.value:.3g} (pass when {relation} {self.threshold:.3g}): {verdict}"


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

    Radii come from ``COVALENT_RADII`` (H, B, C, N, O, F, Si, P, S, Cl, Br, I), updated by ``radii``
    ({symbol: angstrom}). The factor 1.2 finds the bonds of organic molecules near equilibrium (C-H 1.09
    against 1.28, C-C 1.54 against 1.82) without joining atoms two bonds apart (geminal H-H 1.78 against
    0.74). ``cell`` and ``pbc`` as in ``minimum_distance`` (bonds across the boundary are found).
    """
    xyz = _atom_array(positions, "positions")
    symbols = [str(s) for s in symbols]
    if len(symbols) != len(xyz):
        raise ValueError(f"symbols has {len(symbols)} entries but positions has {len(xyz)} atoms")
    _require_finite_atoms(xyz, "positions")
    scale = _positive(scale, "scale")
    table = {**COVALENT_RADII, **(dict(radii) if radii else {})}
    unknown = sorted(set(symbols) - set(table))
    if unknown:
        raise ValueError(
            f"no covalent radius for {unknown}; pass radii={{'{unknown[0]}': <angstrom>, ...}} "
            f"(known: {', '.join(sorted(table))})"
        )
    radius = np.array([table[s] for s in symbols], dtype=np.float64)
    box = _box(cell, pbc)
    if len(xyz) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    shifts = box.image_shifts(2.0 * scale * radius.max()) if box is not None else np.zeros((0, 3))
    found = []
    for start, displacement, valid in _pair_blocks(xyz, box):
        rows, columns = valid.shape
        i = start + np.arange(rows)[:, None]
        j = start + 1 + np.arange(columns)[None, :]
        limit = scale * (radius[i] + radius[j])
        close = valid & (_image_squared(displacement, shifts) < limit**2)
        row, column = np.nonzero(close)
        found.append(np.stack([start + row, start + 1 + column], axis=1))
    bonds = np.concatenate(found).astype(np.int64)
    return bonds[np.lexsort((bonds[:, 1], bonds[:, 0]))]


def _index_array(values: ArrayLike, width: int, name: str, n_atoms: int) -> np.ndarray:
    """``values`` as an int64 [M, width] array of distinct atom indices within range."""
    array = np.asarray(values)
    if array.size == 0:
        return np.zeros((0, width), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != width or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integer atom indices of shape [M, {width}], got {array.dtype} {array.shape}")
    out_of_range = np.nonzero(((array < 0) | (array >= n_atoms)).any(axis=1))[0]
    if out_of_range.size:
        row = int(out_of_range[0])
        raise ValueError(f"{name}[{row}] = {array[row].tolist()} refers to atoms outside 0..{n_atoms - 1}")
    repeated = np.zeros(len(array), dtype=bool)
    for first, second in itertools.combinations(range(width), 2):
        repeated |= array[:, first] == array[:, second]
    if repeated.any():
        row = int(np.argmax(repeated))
        raise ValueError(f"{name}[{row}] = {array[row].tolist()} repeats an atom")
    return array.astype(np.int64)


def dihedrals_from_bonds(n_atoms: int, bonds: ArrayLike) -> np.ndarray:
    """Every proper dihedral [M, 4] (i, j, k, l) along bonds i-j, j-k, k-l, each once.

    A dihedral and its reverse (l, k, j, i) are the same and appear once, with j < k. Rings of three
    (i == l) give no dihedral. Sorted lexicographically by (j, k, i, l).
    """
    n_atoms = _count(n_atoms, "n_atoms")
    edges = _index_array(bonds, 2, "bonds", n_atoms)
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
# mdtraj boundary


def _mdtraj():
    try:
        import mdtraj
    except ImportError:  # pragma: no cover - mdtraj is a dependency of physml-md
        raise ImportError("structure metrics need mdtraj: pip install mdtraj") from None
    return mdtraj


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
            f"traj_positions are not finite (nan or inf) in frames {_short_list(bad)}; drop those frames "
            "(check_frame finds where a run blew up)"
        )
    return frames


def _frame_cells(cell: ArrayLike, n_frames: int) -> np.ndarray:
    """``cell`` as [n_frames, 3, 3] right-handed cell matrices (one [3, 3] cell is repeated)."""
    cells = np.asarray(cell, dtype=np.float64)
    if cells.shape == (3,):
        cells = np.diag(cells)
    if cells.shape == (3, 3):
        cells = np.repeat(cells[None], n_frames, axis=0)
    if cells.shape != (n_frames, 3, 3) or not np.isfinite(cells).all():
        raise ValueError(
            f"cell must be [3, 3], three lengths, or [n_frames={n_frames}, 3, 3] (angstrom), got shape {np.shape(cell)}"
        )
    volumes = np.linalg.det(cells)
    flat = np.nonzero(np.abs(volumes) <= 1e-10 * np.prod(np.linalg.norm(cells, axis=2), axis=1))[0]
    if flat.size:
        raise ValueError(
            f"the cell of frames {_short_list(flat)} has no volume; mdtraj treats a cell as periodic in all "
            "three directions (pass cell=None for a molecule in vacuum)"
        )
    cells = cells.copy()
    cells[volumes < 0, 2] *= -1.0  # same lattice, right-handed: the map to mdtraj's frame is then a rotation
    return cells


def _lengths_angles(cells: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Cell lengths [F, 3] and angles alpha (b, c), beta (a, c), gamma (a, b) [F, 3] in degrees."""
    lengths = np.linalg.norm(cells, axis=2)
    a, b, c = cells[:, 0], cells[:, 1], cells[:, 2]

    def angle(u: np.ndarray, v: np.ndarray, nu: np.ndarray, nv: np.ndarray) -> np.ndarray:
        return np.degrees(np.arccos(np.clip(np.einsum("fk,fk->f", u, v) / (nu * nv), -1.0, 1.0)))

    la, lb, lc = lengths.T
    angles = np.stack([angle(b, c, lb, lc), angle(a, c, la, lc), angle(a, b, la, lb)], axis=1)
    return lengths, angles


def _standard_cells(lengths: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """mdtraj's cell orientation: a along x, b in the xy plane, c with positive z (rows, [F, 3, 3])."""
    alpha, beta, gamma = np.radians(angles).T
    la, lb, lc = lengths.T
    cells = np.zeros((len(lengths), 3, 3))
    cells[:, 0, 0] = la
    cells[:, 1, 0] = lb * np.cos(gamma)
    cells[:, 1, 1] = lb * np.sin(gamma)
    cells[:, 2, 0] = lc * np.cos(beta)
    cells[:, 2, 1] = lc * (np.cos(alpha) - np.cos(beta) * np.cos(gamma)) / np.sin(gamma)
    cells[:, 2, 2] = np.sqrt(np.maximum(lc**2 - cells[:, 2, 0] ** 2 - cells[:, 2, 1] ** 2, 0.0))
    return cells


def _to_mdtraj(frames: np.ndarray, cell: ArrayLike | None, symbols: Sequence[str] | None):
    """An mdtraj Trajectory (nm) of ``frames`` [F, N, 3] (angstrom), periodic in 3D when ``cell`` is given.

    mdtraj keeps a cell as lengths and angles and rebuilds its vectors in a fixed orientation, so the
    positions are carried into that orientation through fractional coordinates (a rotation: distances and
    dihedral angles are unchanged). Without ``symbols`` the atoms are virtual sites (geometry needs no element).
    """
    md = _mdtraj()
    n_atoms = frames.shape[1]
    topology = md.Topology()
    residue = topology.add_residue("MOL", topology.add_chain())
    if symbols is None:
        elements = [md.element.virtual_site] * n_atoms
    else:
        elements = []
        for symbol in symbols:
            try:
                elements.append(md.element.get_by_symbol(str(symbol)))
            except KeyError:
                raise ValueError(
                    f"mdtraj does not know the element symbol {symbol!r}; use symbols such as 'Cu', 'O'"
                ) from None
    for index, element in enumerate(elements):
        topology.add_atom(f"{element.symbol}{index}", element, residue)
    if cell is None:
        return md.Trajectory(frames * ANGSTROM_TO_NM, topology)
    cells = _frame_cells(cell, len(frames))
    lengths, angles = _lengths_angles(cells)
    fractional = np.einsum("fnk,fkj->fnj", frames, np.linalg.inv(cells))
    xyz = np.einsum("fnk,fkj->fnj", fractional, _standard_cells(lengths, angles))
    return md.Trajectory(
        xyz * ANGSTROM_TO_NM, topology, unitcell_lengths=lengths * ANGSTROM_TO_NM, unitcell_angles=angles
    )


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
    return _index_array(pairs, 2, "pairs", n_atoms), "custom"


def _half_width(cells: np.ndarray) -> float:
    """Half the smallest distance between opposite faces over the frames: the largest r with complete shells."""
    volumes = np.abs(np.linalg.det(cells))
    faces = np.stack([np.cross(cells[:, (k + 1) % 3], cells[:, (k + 2) % 3]) for k in range(3)], axis=1)
    return float(0.5 * np.min(volumes[:, None] / np.linalg.norm(faces, axis=2)))


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
    limit = _half_width(_frame_cells(cell, len(frames)))
    low, high = (0.0, limit) if r_range is None else (float(r_range[0]), float(r_range[1]))
    if not 0.0 <= low < high:
        raise ValueError(f"r_range must be (r_min, r_max) with 0 <= r_min < r_max (angstrom), got {r_range}")
    if high > limit * (1.0 + 1e-9):
        raise ValueError(
            f"r_range goes to {high:.4g} Å but this cell only holds complete minimum-image shells up to "
            f"{limit:.4g} Å (half the smallest distance between opposite faces); lower r_max or use a larger supercell"
        )
    n_bins = _count(n_bins, "n_bins")
    md = _mdtraj()
    traj = _to_mdtraj(frames, cell, symbols)
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


def _edges(bins: int | ArrayLike, values: np.ndarray, default_range: Tuple[float, float] | None) -> np.ndarray:
    """Histogram edges from a bin count (over ``default_range`` or the data range) or from explicit edges."""
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        n_bins = _count(bins, "bins")
        if default_range is not None:
            return np.linspace(default_range[0], default_range[1], n_bins + 1)
        if values.size == 0:
            raise ValueError("cannot choose bin edges for an empty set of values; pass explicit edges as bins")
        return np.histogram_bin_edges(values, bins=n_bins)
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.isfinite(edges).all() or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be a positive bin count or strictly increasing finite edges, got {bins!r}")
    return edges


def _distribution(name: str, unit: str, values: np.ndarray, edges: np.ndarray) -> Distribution:
    counts, _ = np.histogram(values, bins=edges)
    return Distribution(
        name=name,
        unit=unit,
        values=values,
        edges=edges,
        counts=counts.astype(np.float64),
        n_outside=int(values.size - counts.sum()),
    )


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
    frames = _frames(traj_positions)
    indices = _index_array(bonds, 2, "bonds", frames.shape[1])
    if len(indices) == 0:
        raise ValueError("bonds is empty; find bonds with bonds_from_positions")
    md = _mdtraj()
    traj = _to_mdtraj(frames, cell, None)
    values = md.compute_distances(traj, indices, periodic=cell is not None).astype(np.float64) * NM_TO_ANGSTROM
    return _distribution("bond length", "angstrom", values, _edges(bins, values, None))


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
    frames = _frames(traj_positions)
    indices = _index_array(quadruples, 4, "quadruples", frames.shape[1])
    if len(indices) == 0:
        raise ValueError("quadruples is empty; find dihedrals with dihedrals_from_bonds")
    md = _mdtraj()
    traj = _to_mdtraj(frames, cell, None)
    values = np.degrees(md.compute_dihedrals(traj, indices, periodic=cell is not None).astype(np.float64))
    return _distribution("dihedral", "degree", values, _edges(bins, values, (-180.0, 180.0)))


# ---------------------------------------------------------------------------------------------------------
# distances between distributions


def _normalised(p: ArrayLike, q: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Two histograms of the same shape, each scaled to sum to 1."""
    first = np.asarray(p, dtype=np.float64).reshape(-1)
    second = np.asarray(q, dtype=np.float64).reshape(-1)
    if np.shape(p) != np.shape(q):
        raise ValueError(f"the two histograms differ in shape: {np.shape(p)} and {np.shape(q)}; use the same bins")
    out = []
    for name, histogram in (("p", first), ("q", second)):
        if not np.isfinite(histogram).all() or (histogram < 0).any():
            raise ValueError(f"{name} must hold finite non-negative counts or probabilities")
        total = histogram.sum()
        if not total > 0:
            raise ValueError(f"{name} is empty (sums to 0): no value fell inside the bins")
        out.append(histogram / total)
    return out[0], out[1]


def histogram_overlap(p: ArrayLike, q: ArrayLike) -> float:
    """Sum over bins of the smaller of the two normalised histograms: 1 for identical, 0 for disjoint.

    ``p`` and ``q`` are counts or probabilities on the same bins (normalised here). 1 - overlap is the total
    variation distance.
    """
    first, second = _normalised(p, q)
    return float(np.minimum(first, second).sum())


def jensen_shannon(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen-Shannon divergence in bits (base 2) of two histograms on the same bins: 0 identical, 1 disjoint.

    JS = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2 and 0 log 0 = 0. Symmetric and always finite.
    This is the divergence, not its square root (the Jensen-Shannon distance).
    """
    first, second = _normalised(p, q)
    middle = 0.5 * (first + second)

    def kl(a: np.ndarray) -> float:
        used = a > 0
        return float(np.sum(a[used] * np.log2(a[used] / middle[used])))

    return float(np.clip(0.5 * (kl(first) + kl(second)), 0.0, 1.0))


def rdf_difference(r: ArrayLike, g1: ArrayLike, g2: ArrayLike) -> float:
    """Mean absolute difference of two g(r) over their r range: integral |g1 - g2| dr / (r range).

    Each point is weighted by its bin width (from the spacing of ``r``), so for a g(r) resolved by its
    bins the value does not depend on the number of bins, and a threshold can be stated once: g(r) is
    dimensionless, and 0.1 means g differs by 0.1 on average. Statistical noise adds to it (the noise per
    bin grows as the bins get finer); compare g(r) computed with the same bins and the same r range (a
    range that includes the empty region below the first peak dilutes the value).
    """
    radius = np.asarray(r, dtype=np.float64)
    first = np.asarray(g1, dtype=np.float64)
    second = np.asarray(g2, dtype=np.float64)
    if radius.ndim != 1 or radius.size < 2:
        raise ValueError(f"r must be one-dimensional with at least 2 points, got shape {radius.shape}")
    if first.shape != radius.shape or second.shape != radius.shape:
        raise ValueError(f"r, g1 and g2 must have the same shape, got {radius.shape}, {first.shape}, {second.shape}")
    if not (np.isfinite(radius).all() and np.isfinite(first).all() and np.isfinite(second).all()):
        raise ValueError("r, g1 and g2 must be finite")
    if np.any(np.diff(radius) <= 0):
        raise ValueError("r must increase strictly (bin centres)")
    widths = np.gradient(radius)
    return float(np.sum(widths * np.abs(first - second)) / np.sum(widths))


def _values(item: Distribution | ArrayLike, name: str) -> np.ndarray:
    values = item.values if isinstance(item, Distribution) else np.asarray(item, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"{name} must hold at least one value, all finite")
    return values


def _histogram_with_outside(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts on ``edges`` with one more bin on each side for the values below and above them."""
    inside, _ = np.histogram(values, bins=edges)
    return np.concatenate([[np.sum(values < edges[0])], inside, [np.sum(values > edges[-1])]])


def compare_distributions(
    reference: RDF | Distribution | ArrayLike,
    sample: RDF | Distribution | ArrayLike,
    bins: int | ArrayLike | None = None,
    threshold: float | None = None,
    metric: str | None = None,
    name: str | None = None,
) -> ComparisonResult:
    """Compare a sample distribution with a reference and apply a threshold.

    Two ``RDF`` (same r grid) are compared with ``rdf_difference``. Otherwise ``reference`` and ``sample`` are
    ``Distribution`` results or raw values (any shape, flattened), histogrammed on common edges: ``bins``
    as explicit edges, a bin count (over -180..180 for dihedrals, else over the range of both sets), or
    None to use the reference Distribution's edges. Dihedral values are wrapped into [-180, 180). Values
    outside the edges are counted in one extra bin on each side, so a sample that leaves the reference's
    range is penalised, not ignored. ``metric`` is
    "jensen_shannon" (default; pass when value <= threshold) or "overlap" (pass when value >= threshold).

    Default thresholds (``DEFAULT_THRESHOLDS``), and why. Measured on 108-atom fcc Cu with ASE's EMT
    (Langevin, 5 fs steps, 15 frames 40 fs apart after 200 fs; the test_two_runs_* tests of
    tests/md/test_structure.py), two 300 K runs from different seeds against each other and against a
    600 K run, for three sets of seeds:

    - ``rdf_difference`` <= 0.1 (all pairs, 200 bins up to 5.4 angstrom): two 300 K runs differ by
      0.02-0.04 (sampling noise of two short runs), 300 K against 600 K by 0.21-0.27.
    - ``jensen_shannon`` <= 0.02 bits (the 648 nearest-neighbour bond lengths, 50 bins over 2.0-3.4
      angstrom, 9 720 values per run): two 300 K runs give 0.001-0.0015, 300 K against 600 K 0.033-0.05.
    - ``overlap`` >= 0.9 (same histograms): two 300 K runs give 0.97-0.98, 300 K against 600 K 0.81-0.85.

    Histogram measures are biased by finite sampling: for two sets of n independent values on the same
    distribution, JS is about (bins - 1) / (4 n ln 2) bits on average (1 - overlap shrinks only as
    sqrt(bins / n)). Keep about 100 independent values per bin (MD frames closer than the correlation time
    count as fewer) or the default thresholds fail two runs of the same potential; with less data use
    fewer bins or state a looser threshold.
    """
    if isinstance(reference, RDF) or isinstance(sample, RDF):
        if not (isinstance(reference, RDF) and isinstance(sample, RDF)):
            raise ValueError("an RDF can only be compared with another RDF")
        metric = metric or "rdf_difference"
        if metric != "rdf_difference":
            raise ValueError(f"two RDFs are compared with metric 'rdf_difference', not {metric!r}")
        if reference.r.shape != sample.r.shape or not np.allclose(reference.r, sample.r, rtol=0, atol=1e-6):
            raise ValueError("the two RDFs have different r grids; compute both with the same r_range and n_bins")
        value = rdf_difference(reference.r, reference.g, sample.g)
        name = name or f"g(r) {reference.label}"
    else:
        metric = metric or "jensen_shannon"
        if metric not in ("jensen_shannon", "overlap"):
            raise ValueError(f"metric must be 'jensen_shannon' or 'overlap' for histograms, got {metric!r}")
        first, second = _values(reference, "reference"), _values(sample, "sample")
        periodic = any(isinstance(x, Distribution) and x.unit == "degree" for x in (reference, sample))
        if periodic:  # angles: 181 degrees is -179 degrees
            first, second = (first + 180.0) % 360.0 - 180.0, (second + 180.0) % 360.0 - 180.0
        if bins is None:
            if not isinstance(reference, Distribution):
                raise ValueError("pass bins (a count or edges) when the reference is raw values")
            edges = reference.edges
        else:
            edges = _edges(bins, np.concatenate([first, second]), (-180.0, 180.0) if periodic else None)
        p, q = _histogram_with_outside(first, edges), _histogram_with_outside(second, edges)
        value = jensen_shannon(p, q) if metric == "jensen_shannon" else histogram_overlap(p, q)
        if name is None:
            name = reference.name if isinstance(reference, Distribution) else "distribution"
    limit = DEFAULT_THRESHOLDS[metric] if threshold is None else float(threshold)
    passed = value >= limit if _HIGHER_IS_BETTER[metric] else value <= limit
    return ComparisonResult(name=name, metric=metric, value=float(value), threshold=limit, passed=bool(passed))
