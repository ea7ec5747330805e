"""MD run metrics: plain numbers computed from the positions, forces, energies and temperatures of a run.

A trained potential is judged by the dynamics it produces, not only by its test errors. This module turns a
trajectory (numpy arrays from any engine: ASE, OpenMM, a file) into the few numbers that say whether the run
was sound:

- energy conservation (NVE): ``energy_drift`` fits a line to the total energy, drift in meV/atom/ps;
- thermostat sanity (NVT): ``temperature_statistics``, with the canonical spread when the atom count is known;
- blow-ups: ``minimum_distance``, ``max_force`` and ``check_frame``, which names the first problem of a frame
  (non-finite numbers, atoms too close, a force too large) and the atoms involved;
  ``distance_threshold_from_reference`` derives a distance threshold from reference structures.

Whether a run samples the same structures as a reference is measured in ``physml_md.md.structure``, which
reuses this module's result base class, input checks and minimum-image distance search.

Units are the package's (ASE's): angstrom, eV, fs, kelvin; everything is float64.

This module imports numpy, the standard library and ``physml_md.units``. Never torch, ASE, OpenMM, Lightning or
mdtraj: these are numbers, usable on any trajectory.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Dict, Iterator, Sequence, Tuple, Union

import numpy as np

from physml_md.units import PS_TO_FS

MEV_PER_EV: float = 1000.0

# ---- default thresholds (see check_frame for the reasoning)
DEFAULT_MIN_DISTANCE: float = 0.5  # angstrom
DEFAULT_MAX_FORCE: float = 100.0  # eV/angstrom

# How many pair displacement vectors are held in memory at once by the O(N^2) distance searches
# (2**19 vectors of 3 float64 = 12 MB; the temporaries of one block take a few times that).
_BLOCK_PAIRS = 1 << 19

ArrayLike = Union[np.ndarray, Sequence[Any]]
PbcLike = Union[bool, Sequence[bool], None]  # one flag for all axes or one per axis


# ---------------------------------------------------------------------------------------------------------
# results


def _jsonable(value: Any) -> Any:
    """``value`` with numpy arrays, numpy scalars and tuples turned into lists and Python numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


class _ToDict:
    def to_dict(self) -> Dict[str, Any]:
        """The fields as JSON-serialisable values (lists and Python numbers)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class DriftResult(_ToDict):
    """Linear fit of the total energy against time (see ``energy_drift``)."""

    drift_mev_per_atom_per_ps: float  # slope of the fit
    intercept_ev: float  # fitted total energy at time_fs = 0
    residual_rms_mev_per_atom: float  # RMS distance of the energies from the fitted line
    max_deviation_mev_per_atom: float  # max |E(t) - E(t_0)|
    n_atoms: int
    n_points: int
    duration_ps: float


@dataclasses.dataclass(frozen=True)
class TemperatureResult(_ToDict):
    """Mean and spread of the temperature after equilibration (see ``temperature_statistics``)."""

    mean_k: float
    std_k: float  # population standard deviation (ddof=0) of the kept samples
    target_k: float
    deviation_k: float  # mean_k - target_k
    relative_deviation: float  # deviation_k / target_k
    n_samples: int  # samples used
    n_skipped: int  # samples discarded as equilibration
    n_atoms: int | None = None
    expected_std_k: float | None = None  # canonical spread sqrt(2 / (3 N)) * target_k, when n_atoms is given
    std_ratio: float | None = None  # std_k / expected_std_k


@dataclasses.dataclass(frozen=True)
class BlowUp(_ToDict):
    """The first problem ``check_frame`` found in a frame.

    ``reason`` is one of ``"non_finite_positions"``, ``"non_finite_forces"``, ``"close_contact"``,
    ``"large_force"`` (or ``"engine_error"`` when the MD engine itself failed; ``detail`` holds its message);
    ``atoms`` are the atoms involved (0-based); ``value`` and ``threshold`` are the distance (angstrom) or
    force (eV/angstrom) and its limit, None for non-finite numbers.
    """

    reason: str
    atoms: Tuple[int, ...]
    value: float | None = None
    threshold: float | None = None
    detail: str | None = None

    @property
    def message(self) -> str:
        """One sentence for a log or an exception, for example 'atoms 3 and 17 are 0.21 Å apart (threshold 0.5 Å)'."""
        if self.reason == "non_finite_positions":
            return f"positions are not finite (nan or inf) on atoms {_short_list(self.atoms)}"
        if self.reason == "non_finite_forces":
            return f"forces are not finite (nan or inf) on atoms {_short_list(self.atoms)}"
        if self.reason == "close_contact":
            i, j = self.atoms
            return f"atoms {i} and {j} are {_number(self.value)} Å apart (threshold {_number(self.threshold)} Å)"
        if self.reason == "large_force":
            return (
                f"force on atom {self.atoms[0]} is {_number(self.value)} eV/Å "
                f"(threshold {_number(self.threshold)} eV/Å)"
            )
        if self.reason == "engine_error":
            return f"the MD engine failed: {self.detail}"
        return f"{self.reason} on atoms {_short_list(self.atoms)}"

    def to_dict(self) -> Dict[str, Any]:
        """The fields and the message as JSON-serialisable values."""
        return {**super().to_dict(), "message": self.message}


# ---------------------------------------------------------------------------------------------------------
# input checks


def _short_list(indices: Sequence[int], limit: int = 10) -> str:
    items = [int(i) for i in indices]
    if len(items) <= limit:
        return str(items)
    return f"[{', '.join(str(i) for i in items[:limit])}, ... and {len(items) - limit} more]"


def _number(value: float | None) -> str:
    if value is None:
        return "None"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _series(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a 1-D float64 array of finite numbers."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per frame), got shape {array.shape}")
    bad = np.nonzero(~np.isfinite(array))[0]
    if bad.size:
        raise ValueError(
            f"{name} is not finite (nan or inf) at indices {_short_list(bad)}; cut the series before the "
            "first bad frame (check_frame finds where a run blew up)"
        )
    return array


def _atom_array(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a float64 [n_atoms, 3] array (finiteness is not checked here)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{name} must have shape [n_atoms, 3], got {array.shape}")
    return array


def _non_finite_atoms(array: np.ndarray) -> np.ndarray:
    return np.nonzero(~np.isfinite(array).all(axis=1))[0]


def _require_finite_atoms(array: np.ndarray, name: str) -> None:
    bad = _non_finite_atoms(array)
    if bad.size:
        raise ValueError(
            f"{name} are not finite (nan or inf) on atoms {_short_list(bad)}; use check_frame to detect a "
            "blown-up frame before measuring it"
        )


def _positive(value: float, name: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------------------
# energy and temperature


def energy_drift(time_fs: ArrayLike, total_energy_ev: ArrayLike, n_atoms: int) -> DriftResult:
    """Least-squares line through the total energy of an NVE run, per atom.

    ``time_fs`` [n] (strictly increasing) and ``total_energy_ev`` [n] (potential + kinetic, eV, the whole
    system), n >= 3. The drift is the slope in meV/atom/ps; ``intercept_ev`` is the fitted energy at
    time 0; ``residual_rms_mev_per_atom`` measures the scatter about the line (integration noise) and
    ``max_deviation_mev_per_atom`` the largest |E(t) - E(t_0)|. A usable NVE run with a smooth potential
    drifts by well under 1 meV/atom/ps.
    """
    time = _series(time_fs, "time_fs")
    energy = _series(total_energy_ev, "total_energy_ev")
    if len(time) != len(energy):
        raise ValueError(
            f"time_fs has {len(time)} values but total_energy_ev has {len(energy)}; pass one time per energy"
        )
    if len(time) < 3:
        raise ValueError(f"energy_drift needs at least 3 points (a line through 2 has no residual), got {len(time)}")
    n_atoms = _count(n_atoms, "n_atoms")
    steps = np.nonzero(np.diff(time) <= 0)[0]
    if steps.size:
        i = int(steps[0])
        raise ValueError(
            f"time_fs must increase strictly, but time_fs[{i + 1}] = {time[i + 1]} follows time_fs[{i}] = {time[i]}; "
            "pass the simulation time of each frame (not a step counter that restarts)"
        )
    centred = time - time.mean()
    slope = float(centred @ (energy - energy.mean()) / (centred @ centred))  # eV/fs
    intercept = float(energy.mean() - slope * time.mean())
    residual = energy - (intercept + slope * time)
    per_atom = MEV_PER_EV / n_atoms
    return DriftResult(
        drift_mev_per_atom_per_ps=slope * PS_TO_FS * per_atom,
        intercept_ev=intercept,
        residual_rms_mev_per_atom=float(np.sqrt(np.mean(residual**2))) * per_atom,
        max_deviation_mev_per_atom=float(np.max(np.abs(energy - energy[0]))) * per_atom,
        n_atoms=n_atoms,
        n_points=len(time),
        duration_ps=float(time[-1] - time[0]) / PS_TO_FS,
    )


def temperature_statistics(
    temperature_k: ArrayLike, target_k: float, skip_fraction: float = 0.2, n_atoms: int | None = None
) -> TemperatureResult:
    """Mean and standard deviation of the temperature after the first ``skip_fraction`` of the samples.

    The first ``floor(skip_fraction * n)`` samples are treated as equilibration and dropped; at least 2
    must remain. ``std_k`` is the population standard deviation (ddof=0). When ``n_atoms`` is given,
    ``expected_std_k`` = sqrt(2 / (3 N)) * target_k is the spread of the instantaneous kinetic temperature
    in the canonical ensemble (3N degrees of freedom; with the centre of mass fixed it is 3N - 3, 5 % more
    spread for N = 30 and less above), and ``std_ratio`` = std_k / expected_std_k: near 1 for a thermostat
    that samples the canonical ensemble (Langevin, Nosé-Hoover chains), well below 1 for one that
    suppresses fluctuations (Berendsen). The ratio is only meaningful for samples further apart than the
    kinetic-energy correlation time.
    """
    temperature = _series(temperature_k, "temperature_k")
    negative = np.nonzero(temperature < 0)[0]
    if negative.size:
        raise ValueError(f"temperature_k is negative at indices {_short_list(negative)}; temperatures are in kelvin")
    target = _positive(target_k, "target_k")
    if not 0.0 <= skip_fraction < 1.0:
        raise ValueError(
            f"skip_fraction must be in [0, 1) (the fraction discarded as equilibration), got {skip_fraction}"
        )
    n_skipped = int(math.floor(skip_fraction * len(temperature)))
    kept = temperature[n_skipped:]
    if len(kept) < 2:
        raise ValueError(
            f"only {len(kept)} temperature sample(s) left after skipping {n_skipped} of {len(temperature)}; "
            "need at least 2 (record more samples or lower skip_fraction)"
        )
    mean, std = float(kept.mean()), float(kept.std())
    expected = None
    if n_atoms is not None:
        n_atoms = _count(n_atoms, "n_atoms")
        expected = math.sqrt(2.0 / (3.0 * n_atoms)) * target
    return TemperatureResult(
        mean_k=mean,
        std_k=std,
        target_k=target,
        deviation_k=mean - target,
        relative_deviation=(mean - target) / target,
        n_samples=len(kept),
        n_skipped=n_skipped,
        n_atoms=n_atoms,
        expected_std_k=expected,
        std_ratio=None if expected is None else std / expected,
    )


# ---------------------------------------------------------------------------------------------------------
# minimum-image distances (numpy, blocks of rows)


@dataclasses.dataclass(frozen=True)
class _Box:
    """A cell prepared for minimum-image searches.

    ``matrix`` rows are the cell vectors; along non-periodic axes they are replaced by an orthonormal basis of
    the complement of the periodic vectors (those axes are never wrapped, the basis only splits a vector into
    components). ``inverse`` maps Cartesian to fractional coordinates.
    """

    matrix: np.ndarray
    inverse: np.ndarray
    periodic: np.ndarray

    def wrap(self, displacement: np.ndarray) -> np.ndarray:
        """Displacements [..., 3] moved by lattice vectors: each periodic fractional component in [-1/2, 1/2]."""
        fractional = displacement @ self.inverse
        fractional[..., self.periodic] -= np.round(fractional[..., self.periodic])
        return fractional @ self.matrix

    def image_shifts(self, bound: float) -> np.ndarray:
        """[S, 3] lattice translations other than 0 that can bring a wrapped displacement to length <= ``bound``.

        A vector with fractional component f_i has length >= |f_i| * h_i, where h_i = 1 / |column i of inverse| is
        the distance between lattice planes i. A wrapped component has |f_i| <= 1/2, so an image n with length
        <= bound needs |n_i| <= 1/2 + bound / h_i.
        """
        reach = np.linalg.norm(self.inverse, axis=0)
        limits = np.where(self.periodic, np.floor(0.5 + bound * reach), 0).astype(np.int64)
        ranges = [range(-int(k), int(k) + 1) for k in limits]
        shifts = [s for s in itertools.product(*ranges) if any(s)]
        return np.asarray(shifts, dtype=np.float64).reshape(-1, 3) @ self.matrix


def _pbc_flags(pbc: PbcLike, cell: ArrayLike | None) -> np.ndarray:
    if pbc is None:
        return np.full(3, cell is not None)
    flags = np.asarray(pbc, dtype=bool).reshape(-1)
    if flags.size == 1:
        flags = np.repeat(flags, 3)
    if flags.size != 3:
        raise ValueError(f"pbc must be a bool or three bools, got {pbc!r}")
    return flags


def _cell_matrix(cell: ArrayLike) -> np.ndarray:
    matrix = np.asarray(cell, dtype=np.float64)
    if matrix.shape == (3,):
        matrix = np.diag(matrix)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        raise ValueError(
            f"cell must be a finite [3, 3] matrix (rows are the cell vectors, angstrom) or three lengths, got {cell!r}"
        )
    return matrix


def _box(cell: ArrayLike | None, pbc: PbcLike) -> _Box | None:
    """The minimum-image box for ``cell`` and ``pbc``, or None when nothing is periodic.

    ``pbc=None`` means periodic in all three directions when a cell is given, and not periodic otherwise.
    """
    periodic = _pbc_flags(pbc, cell)
    if not periodic.any():
        return None
    if cell is None:
        raise ValueError(f"pbc is {periodic.tolist()} but no cell was given; pass the cell (angstrom) or pbc=False")
    matrix = _cell_matrix(cell).copy()
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
    if not periodic.all():
        _, _, right = np.linalg.svd(vectors)
        matrix[~periodic] = right[len(vectors) :]  # orthonormal complement of the periodic vectors
    return _Box(matrix=matrix, inverse=np.linalg.inv(matrix), periodic=periodic)


def _pair_blocks(positions: np.ndarray, box: _Box | None) -> Iterator[Tuple[int, np.ndarray, np.ndarray]]:
    """Blocks covering every pair i < j once: (start, displacements [b, m, 3], valid [b, m]).

    Row r of a block is atom i = start + r, column c is atom j = start + 1 + c; ``valid`` is j > i.
    Displacements r_j - r_i are wrapped into the cell when ``box`` is given.
    """
    n = len(positions)
    rows = max(1, _BLOCK_PAIRS // max(n, 1))
    for start in range(0, n - 1, rows):
        stop = min(start + rows, n - 1)
        displacement = positions[None, start + 1 :] - positions[start:stop, None]
        if box is not None:
            displacement = box.wrap(displacement)
        valid = np.arange(n - start - 1)[None, :] >= np.arange(stop - start)[:, None]
        yield start, displacement, valid


def _squared(displacement: np.ndarray) -> np.ndarray:
    return np.einsum("...k,...k->...", displacement, displacement)


def _image_squared(displacement: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Smallest squared length of ``displacement`` [b, m, 3] over itself and its images by ``shifts``."""
    best = _squared(displacement)
    for shift in shifts:
        np.minimum(best, _squared(displacement + shift), out=best)
    return best


def minimum_distance(
    positions: ArrayLike, cell: ArrayLike | None = None, pbc: PbcLike = None
) -> Tuple[float, Tuple[int, int]]:
    """The smallest interatomic distance (angstrom) and the pair of atoms (i < j) at that distance.

    ``positions`` [N, 3] angstrom, N >= 2. ``cell`` [3, 3] (rows are cell vectors; any triclinic shape) or
    three lengths; ``pbc`` a bool or three bools, by default periodic along all three axes when a cell is
    given. Distances are minimum-image and exact for any cell shape: the wrapped displacements give an
    upper bound, then every lattice image that could be shorter is checked. The distance between an atom
    and its own periodic image is not considered (it is fixed by the cell, not by the dynamics). O(N^2)
    in blocks of rows: 0.2 s for 3000 atoms in a large cell on this machine.
    """
    xyz = _atom_array(positions, "positions")
    if len(xyz) < 2:
        raise ValueError(f"minimum_distance needs at least 2 atoms, got {len(xyz)}")
    _require_finite_atoms(xyz, "positions")
    box = _box(cell, pbc)
    best, pair = math.inf, (0, 1)

    def update(start: int, squared: np.ndarray, valid: np.ndarray) -> None:
        nonlocal best, pair
        squared = np.where(valid, squared, np.inf)
        index = int(np.argmin(squared))
        row, column = divmod(index, squared.shape[1])
        if squared[row, column] < best:
            best, pair = float(squared[row, column]), (start + row, start + 1 + column)

    for start, displacement, valid in _pair_blocks(xyz, box):
        update(start, _squared(displacement), valid)
    shifts = box.image_shifts(math.sqrt(best)) if box is not None else np.zeros((0, 3))
    if len(shifts):  # small or skewed cells: an image other than the wrapped one may be closer
        for start, displacement, valid in _pair_blocks(xyz, box):
            update(start, _image_squared(displacement, shifts), valid)
    return math.sqrt(best), pair


def max_force(forces: ArrayLike) -> Tuple[float, int]:
    """The largest force norm (eV/angstrom) and the atom that carries it. ``forces`` [N, 3], N >= 1, finite."""
    array = _atom_array(forces, "forces")
    if len(array) == 0:
        raise ValueError("max_force needs at least one atom, got forces of shape (0, 3)")
    _require_finite_atoms(array, "forces")
    norms = np.linalg.norm(array, axis=1)
    atom = int(np.argmax(norms))
    return float(norms[atom]), atom


# ---------------------------------------------------------------------------------------------------------
# blow-up detection


def check_frame(
    positions: ArrayLike,
    forces: ArrayLike | None = None,
    cell: ArrayLike | None = None,
    pbc: PbcLike = None,
    min_distance_threshold: float | None = DEFAULT_MIN_DISTANCE,
    max_force_threshold: float | None = DEFAULT_MAX_FORCE,
) -> BlowUp | None:
    """The first sign that an MD frame has blown up, or None when the frame looks sound.

    Checked in this order: non-finite positions, non-finite forces (when ``forces`` is given), two atoms
    closer than ``min_distance_threshold`` angstrom, a force norm above ``max_force_threshold`` eV/angstrom.
    A threshold of None switches its check off. ``cell`` and ``pbc`` as in ``minimum_distance``.

    Defaults, and why:

    - ``min_distance_threshold`` = 0.5 angstrom, absolute. The shortest bond in chemistry, H-H in H2, is
      0.74 angstrom, and X-H bonds are 0.95 angstrom or longer, so no sound structure of any composition
      has two atoms within 0.5 angstrom; a potential that lets them get there has failed (that region is
      absent from training data). An absolute value needs no reference data and behaves the same in every
      frame and every run. It is loose for materials (nearest neighbours in Cu are 2.55 angstrom apart):
      ``distance_threshold_from_reference`` gives the stricter, data-aware alternative, half of the
      smallest distance seen in reference structures (for example the training set).
    - ``max_force_threshold`` = 100 eV/angstrom. Thermal forces in MD are a few eV/angstrom and training
      sets rarely hold forces above 20-50 eV/angstrom. 100 eV/angstrom accelerates a hydrogen atom by
      0.96 angstrom/fs^2, that is about 0.5 angstrom of extra displacement in one 1 fs step, against a
      thermal velocity of 0.016 angstrom/fs at 300 K: no integrator follows that.
    """
    if min_distance_threshold is not None:
        min_distance_threshold = _positive(min_distance_threshold, "min_distance_threshold")
    if max_force_threshold is not None:
        max_force_threshold = _positive(max_force_threshold, "max_force_threshold")
    xyz = _atom_array(positions, "positions")
    bad = _non_finite_atoms(xyz)
    if bad.size:
        return BlowUp("non_finite_positions", tuple(int(i) for i in bad))
    force_array = None
    if forces is not None:
        force_array = _atom_array(forces, "forces")
        if len(force_array) != len(xyz):
            raise ValueError(
                f"forces has {len(force_array)} atoms but positions has {len(xyz)}; pass one force per atom"
            )
        bad = _non_finite_atoms(force_array)
        if bad.size:
            return BlowUp("non_finite_forces", tuple(int(i) for i in bad))
    if min_distance_threshold is not None and len(xyz) >= 2:
        distance, pair = minimum_distance(xyz, cell, pbc)
        if distance < min_distance_threshold:
            return BlowUp("close_contact", pair, distance, min_distance_threshold)
    if max_force_threshold is not None and force_array is not None and len(force_array) > 0:
        largest, atom = max_force(force_array)
        if largest > max_force_threshold:
            return BlowUp("large_force", (atom,), largest, max_force_threshold)
    return None


def distance_threshold_from_reference(
    reference_positions: Sequence[ArrayLike],
    cell: ArrayLike | None = None,
    pbc: PbcLike = None,
    fraction: float = 0.5,
) -> float:
    """``fraction`` times the smallest interatomic distance (angstrom) over the reference frames.

    ``reference_positions`` is a sequence of [N_k, 3] arrays (for example the structures of the training
    set, molecules or cells of the same shape); ``cell`` and ``pbc`` apply to every frame. Use the result
    as ``min_distance_threshold`` in ``check_frame`` when the reference covers the chemistry of the run.
    """
    fraction = _positive(fraction, "fraction")
    frames = list(reference_positions)
    if not frames:
        raise ValueError("reference_positions is empty; pass at least one frame")
    smallest = min(minimum_distance(frame, cell, pbc)[0] for frame in frames)
    return fraction * smallest
