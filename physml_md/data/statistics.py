"""Dataset statistics: per-element self-energies, a model's energy shift and scale, label outliers, and the shortest
distance of each element pair (below which a model extrapolates). Inputs are structure or batch dictionaries; only
labels whose mask is True count. eV, eV/angstrom; float64 numpy arithmetic whatever the tensors' dtype.
"""

from __future__ import annotations

import warnings
from typing import Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from physml_md.data import keys as K
from physml_md.data.elements import ATOMIC_NUMBERS, CHEMICAL_SYMBOLS
from physml_md.data.neighbors import batch_neighbor_list, neighbor_list

Structures = Sequence[Dict[str, Tensor]]
# A distance is below the training minimum only when more than this fraction shorter: relaxations and MD step a
# little past the closest training contact (BFGS of CH3OH, trained on 0.08 angstrom rattles: an O-H bond 2.6 %
# shorter), where smooth radial functions still carry the model; a blow-up's 0.1 angstrom contacts do not.
EXTRAPOLATION_MARGIN = 0.05

# A label is an outlier (``label_outliers``) more than OUTLIER_SPREADS robust standard deviations (1.4826 x the
# median absolute deviation) AND more than its kind's floor from the median. Generous so that real data never
# trigger it (the tests' EMT Cu forces spread ~0.5 eV/angstrom; relaxed data with a few hot MD frames have a tiny
# spread but forces under the floor); a corrupt value or a unit slip is far beyond both.
OUTLIER_SPREADS = 1000.0
FORCE_OUTLIER_FLOOR = 100.0  # eV/angstrom, deviation of one force component from the median component
ENERGY_OUTLIER_FLOOR = 10.0  # eV/atom, deviation of (E - sum_Z n_Z E_Z) / N from its median
RESIDUAL_FLOOR = 1e-9  # the robust self-energy fit weighs no residual above 1 / (this x the largest energy per atom)
_SHOW_OUTLIERS = 5  # how many outliers a warning lists


class LabelOutlierWarning(UserWarning):
    """Labels far outside the data set's own distribution (``label_outliers``): a unit slip or a corrupt value,
    which training would fit as it is."""


def _has(data: Dict[str, Tensor], label: str) -> np.ndarray:
    """[B] bool: which structures of ``data`` carry ``label`` (mask, or presence when there is no mask)."""
    n_structures = data[K.N_ATOMS].numel() if K.N_ATOMS in data else 1
    if label not in data:
        return np.zeros(n_structures, dtype=bool)
    mask = data.get(K.mask_key(label))
    if mask is None:
        return np.ones(n_structures, dtype=bool)
    return mask.detach().cpu().numpy().reshape(-1).astype(bool)


def _split(data: Dict[str, Tensor]) -> Iterator[Tuple[np.ndarray, float | None, np.ndarray | None]]:
    """Yield (atomic numbers [N_s], energy or None, forces [N_s, 3] or None) for each structure of ``data``."""
    numbers = data[K.ATOMIC_NUMBERS].detach().cpu().numpy().astype(np.int64)
    n_atoms = data[K.N_ATOMS].detach().cpu().numpy().reshape(-1) if K.N_ATOMS in data else np.array([len(numbers)])
    has_energy, has_forces = _has(data, K.ENERGY), _has(data, K.FORCES)
    energy = data[K.ENERGY].detach().cpu().numpy().astype(np.float64).reshape(-1) if has_energy.any() else None
    forces = data[K.FORCES].detach().cpu().numpy().astype(np.float64) if has_forces.any() else None
    start = 0
    for b, n in enumerate(n_atoms):
        stop = start + int(n)
        yield (
            numbers[start:stop],
            float(energy[b]) if has_energy[b] else None,
            forces[start:stop].reshape(-1, 3) if has_forces[b] else None,
        )
        start = stop


def _labelled(structures: Structures) -> Tuple[List[np.ndarray], np.ndarray, List[int]]:
    """Atomic numbers and energies of every structure that has an energy, and all elements seen anywhere."""
    numbers, energies, elements = [], [], set()
    for data in structures:
        for z, energy, _ in _split(data):
            elements.update(int(x) for x in z)
            if energy is not None:
                numbers.append(z)
                energies.append(energy)
    return numbers, np.asarray(energies, dtype=np.float64), sorted(elements)


def _counts(numbers: List[np.ndarray], species: Sequence[int]) -> np.ndarray:
    """[M, S] float64 matrix: how many atoms of each species each structure has."""
    column = {z: j for j, z in enumerate(species)}
    counts = np.zeros((len(numbers), len(species)), dtype=np.float64)
    for i, z in enumerate(numbers):
        unknown = sorted(set(int(x) for x in z) - set(column))
        if unknown:
            raise ValueError(
                f"structure {i} (with an energy) contains elements {unknown} that are not in species "
                f"{list(species)}; add them to species (or pass species=None to use every element found)"
            )
        for x in z:
            counts[i, column[int(x)]] += 1.0
    return counts


def fit_self_energies(structures: Structures, species: Sequence[int] | None = None) -> Dict[int, float]:
    """Per-element reference energies ``{Z: E_Z}`` (eV) minimising sum_s (E_s - sum_Z n_sZ E_Z)^2.

    ``species`` (atomic numbers) defaults to every element found, labelled or not; a labelled structure holding an
    element outside ``species`` is a ValueError. A rank-deficient problem (one composition throughout, or counts
    always proportional) gets the minimum-norm least-squares solution (``numpy.linalg.lstsq``), without a warning:
    it reproduces every composition spanned by the data, splits what the data cannot tell apart in proportion to
    the counts (Cu2Al at energy E: E_Cu = 2E/5, E_Al = E/5), and gives 0.0 to an element without an energy.
    """
    numbers, energies, elements = _labelled(structures)
    if len(energies) == 0:
        raise ValueError(
            "no structure has an energy (every energy mask is False); self-energies need energies — check "
            "LabelKeys.energy when reading the data"
        )
    species = elements if species is None else sorted(int(z) for z in species)
    if len(set(species)) != len(species):
        raise ValueError(f"species has repeated elements: {list(species)}")
    counts = _counts(numbers, species)
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {int(z): float(e) for z, e in zip(species, solution, strict=True)}


def check_self_energies(elements, self_energies: Mapping[int, float]) -> None:
    """A ValueError naming the ``elements`` that have no entry in ``self_energies``."""
    missing = sorted({int(z) for z in elements} - {int(z) for z in self_energies})
    if missing:
        raise ValueError(
            f"no self-energy for elements {missing}; pass them in self_energies (0.0 if you want no reference) or "
            "fit them with fit_self_energies"
        )


def statistics_summary(residual: np.ndarray, forces_sq_sum: float, n_force_components: int) -> Dict[str, float | None]:
    """``energy_statistics``' dict from the per-atom residual energies and the sum of squared force components."""
    return {
        "energy_per_atom_mean": float(residual.mean()) if residual.size else None,
        "energy_per_atom_std": float(residual.std()) if residual.size else None,
        "forces_rms": float(np.sqrt(forces_sq_sum / n_force_components)) if n_force_components else None,
        "n_energies": int(residual.size),
        "n_force_components": int(n_force_components),
    }


def energy_statistics(structures: Structures, self_energies: Mapping[int, float]) -> Dict[str, float | None]:
    """``energy_per_atom_mean`` and ``energy_per_atom_std`` (eV/atom, ddof=0) of (E - sum_Z n_Z E_Z) / N over the
    structures with an energy, ``forces_rms`` (eV/angstrom, sqrt(mean(F_ia^2)) over every force component; each
    None without data), ``n_energies`` and ``n_force_components``. An element without a self-energy is a ValueError.
    """
    residuals, squares = [], []
    for data in structures:
        for z, energy, forces in _split(data):
            if energy is not None:
                check_self_energies(z, self_energies)
                reference = sum(float(self_energies[int(x)]) for x in z)
                residuals.append((energy - reference) / len(z))
            if forces is not None:
                squares.append((forces**2).reshape(-1))
    square = np.concatenate(squares) if squares else np.zeros(0)
    return statistics_summary(np.asarray(residuals, dtype=np.float64), float(square.sum()), square.size)


def _far(values: np.ndarray, floor: float) -> Tuple[np.ndarray, float, float]:
    """(bool mask of the values far from their median, the median, the robust standard deviation)."""
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    return np.abs(values - median) > max(OUTLIER_SPREADS * spread, floor), median, spread


def _robust_residuals(numbers: List[np.ndarray], energies: np.ndarray) -> np.ndarray:
    """Per-atom residual energies (E - sum_Z n_Z E_Z) / N with self-energies fitted by least absolute deviations
    (iteratively reweighted least squares): a few absurd energies do not drag the fit, as in least squares."""
    species = sorted({int(x) for z in numbers for x in z})
    n_atoms = np.array([len(z) for z in numbers], dtype=np.float64)
    design, target = _counts(numbers, species) / n_atoms[:, None], energies / n_atoms
    weights = np.ones_like(target)
    for _ in range(50):
        root = np.sqrt(weights)
        solution, *_ = np.linalg.lstsq(design * root[:, None], target * root, rcond=None)
        residual = target - design @ solution
        floor = RESIDUAL_FLOOR * max(float(np.abs(target).max()), 1.0)
        weights = 1.0 / np.maximum(np.abs(residual), floor)
    return residual


def label_outliers(structures: Structures) -> List[str]:
    """The labels far outside the data's own distribution, each named for a message ("structure 3, atom 7: force
    (0.1, -0.2, 1e+10) eV/angstrom, 2.4e+10 robust standard deviations from the median component").

    Force components are compared with the median component; energies per atom, less self-energies fitted by least
    absolute deviations, with their median. An energy whose composition no other structure shares is fitted
    exactly, never named. Structures count from 0 in the order given (a batch as its structures).
    """
    numbers, energies, energy_index, forces, force_index = [], [], [], [], []
    s = -1
    for data in structures:
        for z, energy, force in _split(data):
            s += 1
            if len(z) == 0:
                continue
            if energy is not None:
                numbers.append(z)
                energies.append(energy)
                energy_index.append(s)
            if force is not None:
                forces.append(force)
                force_index.extend((s, a) for a in range(len(z)))
    found: List[str] = []
    if forces:
        stacked = np.concatenate(forces)
        far, median, spread = _far(stacked.reshape(-1), FORCE_OUTLIER_FLOOR)
        deviation = np.abs(stacked - median).max(axis=1)
        for row in np.flatnonzero(far.reshape(-1, 3).any(axis=1)):
            structure, atom = force_index[row]
            vector = ", ".join(f"{v:.4g}" for v in stacked[row])
            found.append(
                f"structure {structure}, atom {atom}: force ({vector}) eV/angstrom, {_spreads(deviation[row], spread)} "
                f"from the median component ({median:.3g} eV/angstrom)"
            )
    if energies:
        residual = _robust_residuals(numbers, np.asarray(energies, dtype=np.float64))
        far, median, spread = _far(residual, ENERGY_OUTLIER_FLOOR)
        for i in np.flatnonzero(far):
            found.append(
                f"structure {energy_index[i]}: energy {energies[i]:.6g} eV, {residual[i]:+.4g} eV/atom from the "
                f"fitted self-energies, {_spreads(abs(residual[i] - median), spread)} from the median "
                f"({median:+.3g} eV/atom)"
            )
    return found


def _spreads(deviation: float, spread: float) -> str:
    if spread > 0:
        return f"{deviation / spread:.3g} robust standard deviations ({spread:.3g})"
    return f"{deviation:.4g} away, with the rest of the data at its median"


def warn_label_outliers(structures: Structures, where: str) -> None:
    """A ``LabelOutlierWarning`` naming the labels of ``label_outliers`` (where the data came from first)."""
    found = label_outliers(structures)
    if not found:
        return
    more = len(found) - _SHOW_OUTLIERS
    warnings.warn(
        f"{where}: {len(found)} label(s) lie far outside the data's own distribution (over {OUTLIER_SPREADS:g} robust "
        f"standard deviations, 1.4826 x the median absolute deviation, from the median, and over "
        f"{FORCE_OUTLIER_FLOOR:g} eV/angstrom or {ENERGY_OUTLIER_FLOOR:g} eV/atom): "
        + "; ".join(found[:_SHOW_OUTLIERS])
        + (f"; and {more} more" if more > 0 else "")
        + ". A corrupt value or a unit slip? Training fits them as they are: fix or remove those structures",
        LabelOutlierWarning,
        stacklevel=3,
    )


def pair_key(z_a: int, z_b: int) -> str:
    """The name of an element pair in ``shortest_pair_distances``: symbols by increasing atomic number, "H-O"."""
    low, high = sorted((int(z_a), int(z_b)))
    return f"{CHEMICAL_SYMBOLS[low]}-{CHEMICAL_SYMBOLS[high]}"


def _inputs(structures: Structures) -> Dict[str, Tensor]:
    """positions, atomic numbers, cell, pbc, n_atoms and batch of structure (or batch) dicts, concatenated (float64)."""
    n_atoms = torch.cat(
        [d[K.N_ATOMS].reshape(-1).cpu() if K.N_ATOMS in d else torch.tensor([len(d[K.POSITIONS])]) for d in structures]
    ).to(torch.int64)
    return {
        K.POSITIONS: torch.cat([d[K.POSITIONS].detach().to("cpu", torch.float64) for d in structures]),
        K.ATOMIC_NUMBERS: torch.cat([d[K.ATOMIC_NUMBERS].cpu() for d in structures]).to(torch.int64),
        K.CELL: torch.cat([d[K.CELL].detach().to("cpu", torch.float64).reshape(-1, 3, 3) for d in structures]),
        K.PBC: torch.cat([d[K.PBC].cpu().reshape(-1, 3) for d in structures]),
        K.N_ATOMS: n_atoms,
        K.BATCH: torch.repeat_interleave(torch.arange(len(n_atoms)), n_atoms),
    }


def pair_minima(
    structures: Structures, cutoff: float, lists: Tuple[Tensor, Tensor] | None = None
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(structure, pair code 256 Z_low + Z_high, shortest distance) of each element pair of each structure closer
    than ``cutoff`` (periodic images included; one neighbour list for all, float64). A batch dict counts as its
    structures. ``lists``: their ``batch_neighbor_list`` at ``cutoff`` or beyond, when already computed."""
    batch = _inputs(structures)
    if lists is None:
        lists = batch_neighbor_list(batch[K.POSITIONS], batch[K.CELL], batch[K.PBC], batch[K.N_ATOMS], cutoff)
    edges, shifts = lists
    i, j = edges[0], edges[1]
    owner = batch[K.BATCH][i]
    x, z = batch[K.POSITIONS], batch[K.ATOMIC_NUMBERS]
    offset = torch.einsum("ek,ekl->el", shifts.to(torch.float64), batch[K.CELL][owner])
    distance = torch.linalg.vector_norm(x[j] - x[i] + offset, dim=1).numpy()
    code = (256 * torch.minimum(z[i], z[j]) + torch.maximum(z[i], z[j])).numpy()
    keep = distance < cutoff
    key = owner.numpy()[keep] * 65536 + code[keep]
    unique, inverse = np.unique(key, return_inverse=True)
    shortest = np.full(len(unique), np.inf)
    np.minimum.at(shortest, inverse, distance[keep])
    return unique // 65536, unique % 65536, shortest


def shortest_pair_distances(structures: Structures, cutoff: float) -> Dict[str, float]:
    """The shortest distance (angstrom) between two atoms of each element pair in ``structures``, ``{"H-O": 0.94}``.

    Pairs are found within ``cutoff`` (periodic images included, ``pair_minima``, 1000 structures at a time). A
    pair never closer than ``cutoff`` has no entry. A model is extrapolating when a structure brings a pair closer
    than its entry: the training data never showed it that distance.
    """
    structures = list(structures)
    shortest: Dict[int, float] = {}
    for start in range(0, len(structures), 1000):
        _, codes, distances = pair_minima(structures[start : start + 1000], cutoff)
        for code, distance in zip(codes.tolist(), distances.tolist()):
            shortest[code] = min(distance, shortest.get(code, distance))
    return {pair_key(code // 256, code % 256): shortest[code] for code in sorted(shortest)}


class PairDistanceFloor:
    """``pairs_closer_than``'s yes/no, cheap enough for every calculation: one vectorised comparison of the distances
    against a [Z, Z] table of floors (the calculator asks ``pairs_closer_than`` to name the pairs only on a yes)."""

    def __init__(self, shortest: Mapping[str, float]):
        self.reach = max(shortest.values(), default=0.0) * (1.0 + 1e-9) + 1e-9
        self.floors = torch.full((len(CHEMICAL_SYMBOLS), len(CHEMICAL_SYMBOLS)), -1.0, dtype=torch.float64)
        for pair, distance in shortest.items():
            low, high = (ATOMIC_NUMBERS[symbol] for symbol in pair.split("-"))
            floor = float(distance) * (1.0 - EXTRAPOLATION_MARGIN)
            self.floors[low, high] = self.floors[high, low] = floor

    def breached(self, positions: Tensor, numbers: Tensor, cell: Tensor, pbc: Tensor) -> bool:
        """positions [N, 3], numbers [N], cell [3, 3], pbc [3] of one structure (float64, angstrom)."""
        if self.reach <= 1e-9:
            return False
        if not bool(pbc.any()) and positions.shape[0] <= 256:  # a molecule: all pairs at once beat a list
            distances = torch.cdist(positions, positions)
            distances.fill_diagonal_(float("inf"))
            return bool((distances < self.floors[numbers.unsqueeze(1), numbers.unsqueeze(0)]).any())
        edges, shifts = neighbor_list(positions, cell, pbc, self.reach)
        i, j = edges[0], edges[1]
        distances = torch.linalg.vector_norm(positions[j] - positions[i] + shifts.to(torch.float64) @ cell, dim=1)
        return bool((distances < self.floors[numbers[i], numbers[j]]).any())


def pairs_closer_than(
    shortest: Mapping[str, float], structures: Structures, cutoff: float | None = None
) -> Dict[str, Tuple[float, float]]:
    """The element pairs of ``structures`` closer than ``shortest`` (the training data's ``shortest_pair_distances``)
    less ``EXTRAPOLATION_MARGIN``: ``{"Cu-Cu": (shortest distance found, training minimum)}``. Pairs without an
    entry are not judged; ``cutoff`` (default: the largest entry) bounds the search."""
    if not shortest:
        return {}
    reach = max(shortest.values()) if cutoff is None else cutoff
    found = shortest_pair_distances(structures, reach * (1.0 + 1e-9) + 1e-9)
    return {
        pair: (distance, float(shortest[pair]))
        for pair, distance in found.items()
        if pair in shortest and distance < float(shortest[pair]) * (1.0 - EXTRAPOLATION_MARGIN)
    }
