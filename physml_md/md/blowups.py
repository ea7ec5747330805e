"""Blow-up detection for MD: ``minimum_distance`` and ``max_force`` (plain numbers), ``check_frame`` (the first
problem of one frame: non-finite numbers, atoms too close, a force too large) and ``check_progress`` (a run exploding
between two frames: an atom moving too far per step, too hot, an energy jump), each as a ``BlowUp`` with its atoms.

The ``DEFAULT_*`` limits are the blow-up criteria of every run (md/runner.py, the MD validation, ``physml-md
validate``); their reasons are in ``check_frame`` and ``check_progress``. Units: angstrom, eV, fs, kelvin; float64.
Imports numpy and this package's arrays, geometry and MD defaults only; never ASE, OpenMM, Lightning or mdtraj.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Tuple

import numpy as np

from physml_md.config.md import DEFAULT_MAX_FORCE, DEFAULT_MIN_DISTANCE
from physml_md.md.arrays import (
    ArrayLike,
    PbcLike,
    ToDict,
    atom_array,
    count,
    non_finite_atoms,
    positive,
    require_finite_atoms,
    short_list,
)
from physml_md.md.geometry import close_pairs, periodic_cell

# ---- default thresholds: DEFAULT_MIN_DISTANCE and DEFAULT_MAX_FORCE (angstrom, eV/angstrom) are the MD settings'
# defaults (physml_md.config.md), their reasons in check_frame; check_progress gives the reasons of these
DEFAULT_MAX_STEP_DISPLACEMENT: float = 1.0  # angstrom per step
DEFAULT_MAX_TEMPERATURE: float = 1.0e4  # kelvin, or DEFAULT_TEMPERATURE_FACTOR x the target when higher
DEFAULT_TEMPERATURE_FACTOR: float = 10.0
DEFAULT_MAX_ENERGY_CHANGE: float = 10.0  # eV per atom, from the first frame


# The close-contact search starts with neighbours within this radius (angstrom) and doubles it until a pair is
# found: the nearest neighbours of condensed matter are closer than 3 angstrom, and a blow-up much closer.
_SEARCH_RADIUS = 3.0


# ---------------------------------------------------------------------------------------------------------
# the result


@dataclasses.dataclass(frozen=True)
class BlowUp(ToDict):
    """The first problem ``check_frame`` found in a frame.

    ``reason`` is one of ``"non_finite_positions"``, ``"non_finite_forces"``, ``"close_contact"``,
    ``"large_force"`` (from ``check_frame``), ``"large_step"``, ``"large_displacement"``,
    ``"high_temperature"``, ``"large_energy_change"``, ``"non_finite_energy"`` (from ``check_progress``), or
    ``"engine_error"`` when the MD engine itself failed; ``detail`` holds its message; ``atoms`` are the atoms
    involved (0-based); ``value`` and ``threshold`` are the quantity and its limit (angstrom, eV/angstrom,
    angstrom per step, kelvin, eV per atom), None for non-finite numbers; ``cause`` the likely cause, when known.
    """

    reason: str
    atoms: Tuple[int, ...]
    value: float | None = None
    threshold: float | None = None
    detail: str | None = None
    cause: str | None = None

    @property
    def message(self) -> str:
        """One sentence for a log or an exception, for example 'atoms 3 and 17 are 0.21 Å apart (threshold 0.5 Å)',
        followed by '; likely cause: ...' when the cause is known."""
        what = self._what()
        return what if self.cause is None else f"{what}; likely cause: {self.cause}"

    def _what(self) -> str:
        if self.reason == "non_finite_positions":
            return f"positions are not finite (nan or inf) on atoms {short_list(self.atoms)}"
        if self.reason == "non_finite_forces":
            return f"forces are not finite (nan or inf) on atoms {short_list(self.atoms)}"
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
        if self.reason in ("large_step", "large_displacement", "high_temperature", "large_energy_change"):
            return str(self.detail)
        if self.reason == "non_finite_energy":
            return f"the {self.detail} is not finite (nan or inf)"
        return f"{self.reason} on atoms {short_list(self.atoms)}"

    def to_dict(self) -> Dict[str, Any]:
        """The fields and the message as JSON-serialisable values."""
        return {**super().to_dict(), "message": self.message}


def _number(value: float | None) -> str:
    if value is None:
        return "None"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


# ---------------------------------------------------------------------------------------------------------
# minimum-image distances (the package's neighbour list) and the largest force


def minimum_distance(
    positions: ArrayLike, cell: ArrayLike | None = None, pbc: PbcLike = None
) -> Tuple[float, Tuple[int, int]]:
    """The smallest interatomic distance (angstrom) and the pair of atoms (i < j) at that distance.

    ``positions`` [N, 3] angstrom, N >= 2. ``cell`` [3, 3] (rows are cell vectors; any triclinic shape) or
    three lengths; ``pbc`` a bool or three bools, by default periodic along all three axes when a cell is
    given. Distances are minimum-image and exact for any cell shape (every lattice image is searched). The
    distance between an atom and its own periodic image is not considered (it is fixed by the cell, not by
    the dynamics). Pairs are found with the neighbour list (O(N)), within ``_SEARCH_RADIUS`` angstrom first
    and twice as far until a pair is found; of pairs equally close (to 1e-12) the first (i, j) is named.
    """
    xyz = atom_array(positions, "positions")
    if len(xyz) < 2:
        raise ValueError(f"minimum_distance needs at least 2 atoms, got {len(xyz)}")
    require_finite_atoms(xyz, "positions")
    matrix, periodic = periodic_cell(cell, pbc)
    radius = _SEARCH_RADIUS
    first, second, distances = close_pairs(xyz, matrix, periodic, radius)
    while len(distances) == 0:
        radius *= 2.0
        first, second, distances = close_pairs(xyz, matrix, periodic, radius)
    nearest = np.nonzero(distances <= distances.min() * (1.0 + 1e-12))[0]
    chosen = nearest[np.lexsort((second[nearest], first[nearest]))[0]]
    return float(distances[chosen]), (int(first[chosen]), int(second[chosen]))


def max_force(forces: ArrayLike) -> Tuple[float, int]:
    """The largest force norm (eV/angstrom) and the atom that carries it. ``forces`` [N, 3], N >= 1, finite."""
    array = atom_array(forces, "forces")
    if len(array) == 0:
        raise ValueError("max_force needs at least one atom, got forces of shape (0, 3)")
    require_finite_atoms(array, "forces")
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
      the validation suite's closest-contact criterion is the data-aware check (against the training set).
    - ``max_force_threshold`` = 100 eV/angstrom. Thermal forces in MD are a few eV/angstrom and training
      sets rarely hold forces above 20-50 eV/angstrom. 100 eV/angstrom accelerates a hydrogen atom by
      0.96 angstrom/fs^2, that is about 0.5 angstrom of extra displacement in one 1 fs step, against a
      thermal velocity of 0.016 angstrom/fs at 300 K: no integrator follows that.
    """
    if min_distance_threshold is not None:
        min_distance_threshold = positive(min_distance_threshold, "min_distance_threshold")
    if max_force_threshold is not None:
        max_force_threshold = positive(max_force_threshold, "max_force_threshold")
    xyz = atom_array(positions, "positions")
    bad = non_finite_atoms(xyz)
    if bad.size:
        return BlowUp("non_finite_positions", tuple(int(i) for i in bad))
    force_array = None
    if forces is not None:
        force_array = atom_array(forces, "forces")
        if len(force_array) != len(xyz):
            raise ValueError(
                f"forces has {len(force_array)} atoms but positions has {len(xyz)}; pass one force per atom"
            )
        bad = non_finite_atoms(force_array)
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


def check_progress(
    previous: Any,
    frame: Any,
    timestep_fs: float,
    target_temperature_k: float,
    n_atoms: int,
    reference_energy: float | None = None,
    max_step_displacement: float = DEFAULT_MAX_STEP_DISPLACEMENT,
    max_energy_change: float = DEFAULT_MAX_ENERGY_CHANGE,
) -> BlowUp | None:
    """The first sign that a run is exploding at ``frame`` (a ``Frame``), or None; ``check_frame`` comes first.

    ``previous`` is the frame reported before it (None for the first one) and ``reference_energy`` the potential
    energy the run started from (eV; default the previous frame's). Checked in this order: a non-finite potential
    energy or temperature; an atom that moved more than ``max_step_displacement`` angstrom per step on average
    since ``previous`` (then some step moved it further); an atom whose speed times the timestep, the distance
    the next step will move it, exceeds that limit (when the frame has velocities: caught before the model sees
    the positions); a temperature above ``DEFAULT_MAX_TEMPERATURE`` or ``DEFAULT_TEMPERATURE_FACTOR`` times the
    target, whichever is higher; a potential energy more than ``max_energy_change`` eV per atom away from the
    reference. Each names its likely cause.

    Defaults, and why: a thermal hydrogen atom moves 0.03 angstrom/fs at 300 K (0.1 at 3000 K), so 1 angstrom per
    step needs a timestep of ~10 fs or more; bonds vibrate by ~0.1 angstrom, and an integrator moving atoms by
    1 angstrom per step follows no vibration. Covalent bonds do not survive 10 000 K, and a thermostat set to T
    keeps the kinetic temperature within a few sqrt(2 / 3N) of it. Cohesive and atomisation energies are 2-8 eV
    per atom: a change of 10 eV per atom has left every structure the potential was trained on.
    """
    timestep_fs = positive(timestep_fs, "timestep_fs")
    for name, value in (("potential energy", frame.potential_energy), ("temperature", frame.temperature_k)):
        if value is not None and not math.isfinite(value):
            return BlowUp("non_finite_energy", (), detail=name, cause=_UNSTABLE.format(timestep=_number(timestep_fs)))
    too_long = f"the timestep ({timestep_fs:g} fs) is too long"
    if previous is not None and frame.step > previous.step:
        steps = frame.step - previous.step
        moved = np.linalg.norm(np.asarray(frame.positions) - np.asarray(previous.positions), axis=1)
        atom = int(np.argmax(moved))
        per_step = float(moved[atom]) / steps
        if per_step > max_step_displacement:
            detail = (
                f"atom {atom} moved {_number(float(moved[atom]))} Å in {steps} steps ({_number(per_step)} Å per "
                f"step, limit {_number(max_step_displacement)} Å per step)"
            )
            return BlowUp("large_displacement", (atom,), per_step, max_step_displacement, detail, too_long)
    if frame.velocities is not None:
        step_length = np.linalg.norm(np.asarray(frame.velocities), axis=1) * timestep_fs
        atom = int(np.argmax(step_length))
        if step_length[atom] > max_step_displacement:
            detail = (
                f"atom {atom} would move {_number(float(step_length[atom]))} Å per step (its speed times the "
                f"timestep; limit {_number(max_step_displacement)} Å per step)"
            )
            return BlowUp(
                "large_step", (atom,), float(step_length[atom]), max_step_displacement, detail, too_long
            )  # fmt: skip
    ceiling = max(DEFAULT_MAX_TEMPERATURE, DEFAULT_TEMPERATURE_FACTOR * float(target_temperature_k))
    if frame.temperature_k is not None and frame.temperature_k > ceiling:
        detail = f"the temperature is {_number(frame.temperature_k)} K (limit {_number(ceiling)} K)"
        cause = _UNSTABLE.format(timestep=_number(timestep_fs))
        return BlowUp("high_temperature", (), float(frame.temperature_k), ceiling, detail, cause)
    if reference_energy is None and previous is not None:
        reference_energy = previous.potential_energy
    if reference_energy is not None and frame.potential_energy is not None:
        change = (float(frame.potential_energy) - float(reference_energy)) / count(n_atoms, "n_atoms")
        if abs(change) > max_energy_change:
            detail = (
                f"the potential energy changed by {_number(change)} eV per atom since the start "
                f"(limit {_number(max_energy_change)} eV per atom)"
            )
            cause = _UNSTABLE.format(timestep=_number(timestep_fs))
            return BlowUp("large_energy_change", (), change, max_energy_change, detail, cause)
    return None


_UNSTABLE = (
    "the integration is unstable (the timestep, {timestep} fs, too long for the fastest motion) or the potential "
    "is extrapolating far from its training data"
)
