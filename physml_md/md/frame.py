"""``Frame``: the one per-step record of an MD run, from the engine to the writers, the energy log and the result.

Units: angstrom, eV, eV/angstrom, fs, kelvin, velocities in angstrom/fs. A series of frames (``MDResult``,
``TrajectoryData``) names each quantity in the plural (``time_fs`` -> ``times_fs``, ``potential_energy`` ->
``potential_energies``); the thermostat's setting is ``target_temperature_k``; the CSV log keeps its own columns.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = ["Frame"]


@dataclasses.dataclass
class Frame:
    """One reported state. What a frame lacks is None (a trajectory read from a file, a frame built by hand)."""

    step: int
    time_fs: float
    positions: np.ndarray  # [N, 3] angstrom
    cell: np.ndarray | None = None  # [3, 3] angstrom, rows are the cell vectors; None without periodicity
    forces: np.ndarray | None = None  # [N, 3] eV/angstrom
    velocities: np.ndarray | None = None  # [N, 3] angstrom/fs
    potential_energy: float | None = None  # eV
    kinetic_energy: float | None = None  # eV
    temperature_k: float | None = None  # K, from the kinetic energy over 3N degrees of freedom
    forces_std: np.ndarray | None = None  # [N] eV/angstrom, a committee's per-atom force disagreement

    @property
    def max_forces_std(self) -> float | None:
        """The largest per-atom force disagreement (eV/angstrom), None without a committee."""
        return None if self.forces_std is None else float(np.max(self.forces_std))

    @property
    def total_energy(self) -> float:
        """Potential plus kinetic energy (eV)."""
        return float(self.potential_energy) + float(self.kinetic_energy)

    def checked(self, n_atoms: int) -> Frame:
        """A float64 copy after checking shapes and numbers; ValueError names what is wrong.

        Non-finite positions, forces and energies are kept (a blown-up frame is still worth writing); the step
        must be an integer and the time and cell finite.
        """
        if isinstance(self.step, bool) or not isinstance(self.step, (int, np.integer)):
            raise ValueError(f"step must be an integer, got {self.step!r}")
        time_fs = float(self.time_fs)
        if not math.isfinite(time_fs):
            raise ValueError(f"time_fs must be finite, got {time_fs}")
        if self.positions is None:
            raise ValueError("a frame needs positions [N, 3] (angstrom)")
        cell = self.cell
        if cell is not None:
            cell = np.array(cell, dtype=np.float64)
            if cell.shape != (3, 3) or not np.isfinite(cell).all():
                raise ValueError(f"cell must be a finite [3, 3] matrix (angstrom) or None, got shape {cell.shape}")
        return Frame(
            step=int(self.step),
            time_fs=time_fs,
            positions=_per_atom(self.positions, "positions", n_atoms),
            cell=cell,
            forces=_per_atom(self.forces, "forces", n_atoms),
            velocities=_per_atom(self.velocities, "velocities", n_atoms),
            potential_energy=_scalar(self.potential_energy),
            kinetic_energy=_scalar(self.kinetic_energy),
            temperature_k=_scalar(self.temperature_k),
            forces_std=_per_atom(self.forces_std, "forces_std", n_atoms, ()),
        )


def _per_atom(value: Any, name: str, n_atoms: int, row: tuple = (3,)) -> np.ndarray | None:
    """``value`` as float64 [n_atoms, *row] (None stays None)."""
    if value is None:
        return None
    array = np.array(value, dtype=np.float64)
    if array.shape != (n_atoms, *row):
        shape, each = (f"{n_atoms}, 3", "one row") if row else (f"{n_atoms}", "one value")
        raise ValueError(f"{name} must have shape [{shape}] ({each} per atom), got {array.shape}")
    return array


def _scalar(value: Any) -> float | None:
    return None if value is None else float(value)
