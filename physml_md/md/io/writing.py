"""Trajectory and energy-log files of an MD run, written atomically (read back with ``physml_md.md.io.reading``).

``TrajectoryWriter`` picks the format from the suffix of its path:

============  =======================================  ==================================================
suffix        written with                             what a frame keeps
============  =======================================  ==================================================
``.dcd``      ``mdtraj.formats.DCDTrajectoryFile``     positions (float32 angstrom), cell (lengths, angles)
``.xtc``      ``mdtraj.formats.XTCTrajectoryFile``     positions (nm, compressed to 0.001 nm), cell, time
                                                       (float32 ps) and step
``.traj``     ``ase.io.Trajectory``                    everything, float64: positions, cell, pbc, time,
                                                       step, energy, forces, velocities
``.extxyz``,  ASE's extended XYZ, appended frame by    everything; per-atom columns printed with 8 decimals
``.xyz``      frame                                    (5e-9 angstrom), energy, time and cell exact
============  =======================================  ==================================================

DCD and XTC hold no elements: a PDB of the first frame is written beside them (``topology_path``). mdtraj rebuilds a
cell with a along x and b in the xy plane, so a periodic frame is rotated into that orientation (distances kept,
Cartesian positions rotated; a left-handed cell becomes the right-handed one of the same lattice; a slab reads back
as periodic in 3D). XTC keeps coordinates within 0.005 angstrom and refuses a non-finite one (ValueError); the other
formats keep a blown-up frame. ``EnergyLog`` writes the CSV of ``ENERGY_LOG_COLUMNS`` (shortest exact numbers).

Every file is written to a temporary name and renamed onto its target when the writer closes (the PDB before the
trajectory); a ``with`` block that raises leaves the previous files as they were, and closing a trajectory writer
that received no frame raises ValueError: a run that wrote nothing is a mistake to report, not an empty file.
"""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path
from typing import Any, List, Sequence

import numpy as np

from physml_md.atomic_write import PathLike, atomic_path
from physml_md.md.arrays import PbcLike
from physml_md.md.frame import Frame
from physml_md.md.geometry import pbc_flags
from physml_md.md.io.formats import BACKENDS, MDTRAJ_SUFFIXES, SUPPORTED_SUFFIXES, pdb_topology, topology_path
from physml_md.md.io.reading import (
    ENERGY_LOG_COLUMNS,
    UNCERTAINTY_COLUMN,
    TrajectoryData,
    read_energy_log,
    read_trajectory,
)
from physml_md.units import FS_TO_PS

__all__ = [
    "ENERGY_LOG_COLUMNS",
    "SUPPORTED_SUFFIXES",
    "EnergyLog",
    "Frame",
    "TrajectoryData",
    "TrajectoryWriter",
    "read_energy_log",
    "read_trajectory",
    "topology_path",
]


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        shown = repr(path.suffix) if path.suffix else "no suffix"
        raise ValueError(
            f"cannot write a trajectory to {str(path)!r}: {shown} is not a supported format; "
            f"use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return suffix


# ---------------------------------------------------------------------------------------------------------
# atomic writers: the shared open / close / abort machinery


def _discard(stack: contextlib.ExitStack, error: BaseException) -> None:
    """Exit the ``atomic_path`` contexts of ``stack`` as after ``error`` (temporaries removed, targets untouched),
    where closing it normally would rename the temporaries onto the targets."""
    stack.__exit__(type(error), error, error.__traceback__)


class _AtomicWriter:
    """Files written under temporary names and renamed onto their targets by ``close``; ``abort`` removes them.

    Subclasses list their targets in ``_targets`` (renamed in reverse order: the first is renamed last) and
    open and close their file handles in ``_start`` and ``_stop``.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self._stack: contextlib.ExitStack | None = None
        self._closed = False

    # -- subclass hooks
    def _targets(self) -> List[Path]:
        return [self.path]

    def _start(self, temporaries: List[Path]) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def _check_complete(self) -> None:
        """Raise when closing now would replace the target with a file that should not exist."""

    # -- machinery
    def open(self) -> None:
        """Start writing (``with`` calls this); nothing appears at the target paths before ``close``."""
        if self._closed:
            raise ValueError(f"the writer for {str(self.path)!r} is closed; make a new one")
        if self._stack is not None:
            return
        stack = contextlib.ExitStack()
        try:
            temporaries = [stack.enter_context(atomic_path(target)) for target in self._targets()]
            self._start(temporaries)
        except BaseException as error:
            _discard(stack, error)
            raise
        self._stack = stack

    def _ensure_open(self) -> None:
        if self._stack is None:
            self.open()

    def close(self) -> None:
        """Finish the files and rename them onto their targets. Calling it again does nothing."""
        if self._closed:
            return
        if self._stack is None:
            self.open()
        try:
            self._check_complete()
        except BaseException as error:
            self.abort(error)
            raise
        stack, self._stack = self._stack, None
        self._closed = True
        with stack:  # renames on exit; if _stop fails, the temporaries are removed instead
            self._stop()

    def abort(self, error: BaseException | None = None) -> None:
        """Remove the temporary files and leave the targets as they were."""
        if self._closed:
            return
        stack, self._stack = self._stack, None
        self._closed = True
        if stack is None:
            return
        try:
            with contextlib.suppress(Exception):  # the file is being thrown away; its close may fail too
                self._stop()
        finally:
            _discard(stack, error if error is not None else RuntimeError(f"writing {str(self.path)!r} was aborted"))

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc)
        return False


# ---------------------------------------------------------------------------------------------------------
# trajectories


class TrajectoryWriter(_AtomicWriter):
    """Write an MD trajectory frame by frame; the format comes from the suffix of ``path`` (see the module doc).

    ``symbols``: one element symbol per atom. ``pbc``: one flag or three, the same for every frame.
    Use it as a context manager (``with TrajectoryWriter(path, symbols, pbc) as w: w.write(frame)``) or call
    ``open``/``close`` yourself; nothing appears at ``path`` until ``close``, and a ``with`` block that raises
    leaves ``path`` as it was. For DCD and XTC the PDB at ``topology_path(path)`` is written (atomically) too.
    """

    def __init__(self, path: PathLike, symbols: Sequence[str], pbc: PbcLike):
        super().__init__(path)
        self.suffix = _suffix(self.path)
        self.symbols = [str(s) for s in symbols]
        if not self.symbols:
            raise ValueError("symbols is empty: a trajectory needs at least one atom")
        self.pbc = pbc_flags(pbc)
        self.n_frames = 0
        self._backend: Any = None
        self._backend_class = BACKENDS[self.suffix]
        self._mdtraj = self.suffix in MDTRAJ_SUFFIXES
        self._topology = pdb_topology(self.symbols) if self._mdtraj else None

    @property
    def topology_path(self) -> Path | None:
        """The PDB written beside a DCD or XTC trajectory; None for the ASE formats."""
        return topology_path(self.path) if self._mdtraj else None

    def _targets(self) -> List[Path]:
        # exited in reverse order: the PDB is renamed before the trajectory
        return [self.path, topology_path(self.path)] if self._mdtraj else [self.path]

    def _start(self, temporaries: List[Path]) -> None:
        self._backend = self._backend_class(temporaries, self.suffix, self.symbols, self.pbc, self._topology)

    def _stop(self) -> None:
        if self._backend is not None:
            self._backend.close()

    def _check_complete(self) -> None:
        if self.n_frames == 0:
            raise ValueError(f"no frame was written to {str(self.path)!r}; the file was not created or changed")

    def write(self, frame: Frame) -> None:
        """Append one ``Frame``: its positions, cell (None when not periodic), time, step and, where the format
        keeps them, potential energy, forces and velocities. DCD and XTC keep no energy, forces or velocities
        (DCD no time or step either).

        The frame is checked before anything is written, so a rejected frame (ValueError) leaves the file as
        it was and the writer usable.
        """
        if self._closed:
            raise ValueError(f"the writer for {str(self.path)!r} is closed; make a new one")
        frame = frame.checked(len(self.symbols))
        if self.pbc.any() and frame.cell is None:
            raise ValueError(f"pbc is {self.pbc.tolist()} but cell is None; pass the cell (angstrom)")
        self._backend_class.check(frame)
        self._ensure_open()
        self._backend.write(frame)
        self.n_frames += 1


# ---------------------------------------------------------------------------------------------------------
# energy log


class EnergyLog(_AtomicWriter):
    """CSV of the energies of a run, columns ``ENERGY_LOG_COLUMNS``; total = potential + kinetic. When the first
    frame carries a committee's uncertainty, one more column, ``UNCERTAINTY_COLUMN``: its ``max_forces_std``.

    Same atomic semantics as ``TrajectoryWriter``: the file appears at ``path`` when the log closes (so it
    cannot be followed while the run goes on), and a ``with`` block that raises leaves ``path`` as it was.
    A log closed without rows holds the header only.
    """

    def __init__(self, path: PathLike):
        super().__init__(path)
        self.n_rows = 0
        self._file = None
        self._writer = None
        self._uncertainty: bool | None = None  # decided by the first frame, which writes the header

    def _start(self, temporaries: List[Path]) -> None:
        self._file = open(temporaries[0], "w", newline="")
        self._writer = csv.writer(self._file, lineterminator="\n")

    def _header(self, uncertainty: bool) -> None:
        self._uncertainty = uncertainty
        self._writer.writerow(ENERGY_LOG_COLUMNS + ((UNCERTAINTY_COLUMN,) if uncertainty else ()))

    def _stop(self) -> None:
        if self._file is not None:
            if self._uncertainty is None:
                self._header(False)
            self._file.close()

    def write(self, frame: Frame) -> None:
        """Append the row of ``frame`` (step, time, energies, temperature); the time is written in ps."""
        if self._closed:
            raise ValueError(f"the energy log {str(self.path)!r} is closed; make a new one")
        if isinstance(frame.step, bool) or not isinstance(frame.step, (int, np.integer)):
            raise ValueError(f"step must be an integer, got {frame.step!r}")
        missing = [
            name for name in ("potential_energy", "kinetic_energy", "temperature_k") if getattr(frame, name) is None
        ]
        if missing:
            raise ValueError(f"the energy log needs the frame's {', '.join(missing)}; step {frame.step} has none")
        energies = [float(frame.potential_energy), float(frame.kinetic_energy), frame.total_energy]
        row = [float(frame.time_fs) * FS_TO_PS, *energies, float(frame.temperature_k)]
        self._ensure_open()
        if self._uncertainty is None:
            self._header(frame.forces_std is not None)
        if self._uncertainty:
            row.append(float("nan") if frame.forces_std is None else frame.max_forces_std)
        self._writer.writerow([str(int(frame.step))] + [repr(value) for value in row])
        self.n_rows += 1
