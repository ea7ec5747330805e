"""Trajectory and energy-log files of an MD run, written atomically, and the reader that loads them back.

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

DCD and XTC hold no elements, so a PDB of the first frame is written beside them (``<path without suffix>.pdb``)
and ``mdtraj.load(path, top=that_pdb)`` works. They store a cell as lengths and angles (DCD) or as box vectors
that GROMACS and mdtraj expect lower-triangular (XTC); mdtraj rebuilds a cell with a along x and b in the xy
plane. A periodic frame whose cell is not already in that orientation is therefore rotated into it (through
fractional coordinates, with the cell): a rigid rotation, so every interatomic distance is kept, but the
Cartesian positions read back are the rotated ones. A left-handed cell is stored as the right-handed cell of
the same lattice (its last vector reversed). A non-periodic frame is written without a cell; mdtraj treats a
cell as periodic in all three directions, so a partly periodic frame (a slab) is written with its full cell and
reads back as periodic in 3D. XTC's fixed precision (mdtraj writes 1000 per nm and offers no way to change it)
puts each coordinate within 0.005 angstrom of its value; DCD rounds to float32 (a relative 6e-8). XTC cannot
hold a non-finite coordinate (a blown-up frame; xdrfile would silently write -2147483.6 nm), so ``write``
refuses one with ValueError; the other formats keep such a frame, with its energy and forces.

Every file is written to a temporary name beside its target (``physml_md.atomic``) and renamed onto it when the
writer closes, so a reader never sees half a file. If the ``with`` block raises, the temporary files are removed
and the previous files at those paths (if any) are left as they were. The PDB is renamed before the trajectory,
so a reader that sees a new trajectory also sees its topology. Closing a trajectory writer that received no frame
raises ValueError (the previous file is kept): a run that wrote nothing is a mistake to report, not an empty file.

``EnergyLog`` writes the energies of a run as CSV with the columns of ``ENERGY_LOG_COLUMNS``, numbers as Python's
shortest exact representation, with the same atomic semantics; ``read_energy_log`` reads it back.

``read_trajectory`` reads any of these files (and any other file ASE reads) into a ``TrajectoryData`` of numpy
arrays: what validation uses to load reference trajectories and data sets.

Units are the package's: angstrom, eV, eV/angstrom, fs, kelvin, velocities in angstrom/fs (ASE's own velocity
unit is angstrom per ASE time unit, converted with ``ase.units.fs`` when .traj and .extxyz files are written and read).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np

from physml_md.atomic import atomic_path
from physml_md.md.structure import _frame_cells, _lengths_angles, _standard_cells
from physml_md.units import ANGSTROM_TO_NM, FS_TO_PS, NM_TO_ANGSTROM, PS_TO_FS

__all__ = [
    "ENERGY_LOG_COLUMNS",
    "SUPPORTED_SUFFIXES",
    "EnergyLog",
    "TrajectoryData",
    "TrajectoryWriter",
    "read_energy_log",
    "read_trajectory",
    "topology_path",
]

PathLike = Union[str, os.PathLike]
PbcLike = Union[bool, Sequence[bool]]

_MDTRAJ_SUFFIXES = (".dcd", ".xtc")
_ASE_FORMATS = {".traj": "traj", ".extxyz": "extxyz", ".xyz": "extxyz"}
SUPPORTED_SUFFIXES: Tuple[str, ...] = _MDTRAJ_SUFFIXES + tuple(_ASE_FORMATS)

ENERGY_LOG_COLUMNS: Tuple[str, ...] = ("step", "time_ps", "potential_ev", "kinetic_ev", "total_ev", "temperature_k")

_XTC_MAX_STEP = 2**31 - 1  # XTC stores the step as a 32-bit integer
# XTC stores round(x * 1000 / nm) as 32-bit integers, and their differences too: keep |x| below 1e6 nm
_XTC_MAX_ANGSTROM = 1e7
# A cell counts as already in mdtraj's orientation when its upper off-diagonal entries are below this fraction
# of its longest vector (rounding noise), and its diagonal is positive.
_LOWER_TRIANGULAR_RTOL = 1e-12


def topology_path(path: PathLike) -> Path:
    """The PDB written beside a DCD or XTC trajectory: ``path`` with its suffix replaced by ``.pdb``."""
    return Path(path).with_suffix(".pdb")


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        shown = repr(path.suffix) if path.suffix else "no suffix"
        raise ValueError(
            f"cannot write a trajectory to {str(path)!r}: {shown} is not a supported format; "
            f"use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return suffix


def _pbc3(pbc: PbcLike) -> np.ndarray:
    flags = np.asarray(pbc, dtype=bool).reshape(-1)
    if flags.size == 1:
        flags = np.repeat(flags, 3)
    if flags.size != 3:
        raise ValueError(f"pbc must be a bool or three bools, got {pbc!r}")
    return flags


def _mdtraj():
    try:
        import mdtraj
    except ImportError:  # pragma: no cover - mdtraj is a dependency of physml-md
        raise ImportError("DCD and XTC files need mdtraj: pip install mdtraj") from None
    return mdtraj


# ---------------------------------------------------------------------------------------------------------
# atomic writers: the shared open / close / abort machinery


def _discard(stack: contextlib.ExitStack, error: BaseException) -> None:
    """Exit the ``atomic_path`` contexts of ``stack`` as after ``error``: temporaries removed, targets untouched.

    (Closing the stack normally would rename the temporaries onto the targets.)
    """
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


@dataclasses.dataclass
class _Frame:
    positions: np.ndarray  # [N, 3] angstrom
    cell: np.ndarray | None  # [3, 3] angstrom
    time_fs: float
    step: int
    energy: float | None
    forces: np.ndarray | None
    velocities: np.ndarray | None  # angstrom / fs


def _mdtraj_orientation(
    positions: np.ndarray, cell: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positions [N, 3] and cell [3, 3] in mdtraj's orientation, and the cell's lengths [3] and angles [3].

    A cell that is already lower-triangular with a positive diagonal is left as it is (and so are the
    positions); otherwise the positions are carried through fractional coordinates onto the standard cell.
    """
    if abs(np.linalg.det(cell)) <= 1e-10 * np.prod(np.linalg.norm(cell, axis=1)):
        raise ValueError(
            f"the cell {cell.tolist()} has no volume; DCD and XTC store a 3D periodic cell (give a slab a vacuum "
            "cell vector, or write .traj / .extxyz, which keep partial periodicity)"
        )
    right_handed = _frame_cells(cell, 1)  # [1, 3, 3], the last vector reversed for a left-handed cell
    lengths, angles = _lengths_angles(right_handed)
    matrix = right_handed[0]
    upper = np.abs(matrix[np.triu_indices(3, k=1)])
    if np.all(upper <= _LOWER_TRIANGULAR_RTOL * lengths.max()) and np.all(np.diag(matrix) > 0):
        return positions, matrix, lengths[0], angles[0]
    standard = _standard_cells(lengths, angles)[0]
    rotated = positions @ np.linalg.inv(matrix) @ standard
    return rotated, standard, lengths[0], angles[0]


class _DcdBackend:
    def __init__(self, tmp: Path, periodic: bool):
        self.file = _mdtraj().formats.DCDTrajectoryFile(str(tmp), "w", force_overwrite=True)
        self.periodic = periodic

    def write(self, positions: np.ndarray, cell: np.ndarray | None, lengths, angles, frame: _Frame) -> None:
        xyz = positions[None].astype(np.float32)  # DCD stores angstrom
        if self.periodic:
            self.file.write(xyz, cell_lengths=lengths[None], cell_angles=angles[None])
        else:
            self.file.write(xyz)

    def close(self) -> None:
        self.file.close()


class _XtcBackend:
    def __init__(self, tmp: Path, periodic: bool):
        self.file = _mdtraj().formats.XTCTrajectoryFile(str(tmp), "w", force_overwrite=True)
        self.periodic = periodic

    def write(self, positions: np.ndarray, cell: np.ndarray | None, lengths, angles, frame: _Frame) -> None:
        # a zero box is what mdtraj reads back as "no unit cell" (its default box would be a 1 nm cube)
        box = cell * ANGSTROM_TO_NM if self.periodic else np.zeros((3, 3))
        self.file.write(
            (positions * ANGSTROM_TO_NM)[None].astype(np.float32),
            time=np.array([frame.time_fs * FS_TO_PS], dtype=np.float32),
            step=np.array([frame.step], dtype=np.int32),
            box=box[None].astype(np.float32),
        )

    def close(self) -> None:
        self.file.close()


class _AseBackend:
    def __init__(self, tmp: Path, suffix: str, symbols: List[str], pbc: np.ndarray):
        self.format = _ASE_FORMATS[suffix]
        self.symbols = symbols
        self.pbc = pbc
        if self.format == "traj":
            from ase.io import Trajectory

            self.file = Trajectory(str(tmp), "w")
        else:
            self.file = open(tmp, "w")

    def write(self, frame: _Frame) -> None:
        from ase import Atoms, units
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms(
            symbols=self.symbols,
            positions=frame.positions,
            cell=frame.cell if frame.cell is not None else np.zeros((3, 3)),
            pbc=self.pbc,
            info={"time_fs": frame.time_fs, "step": frame.step},
        )
        if frame.velocities is not None:
            atoms.set_velocities(frame.velocities / units.fs)  # angstrom/fs -> angstrom per ASE time unit
        results: Dict[str, Any] = {}
        if frame.energy is not None:
            results["energy"] = frame.energy
        if frame.forces is not None:
            results["forces"] = frame.forces
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        if self.format == "traj":
            # also as keywords: from the calculator alone, ase.io.Trajectory drops the results when it thinks the
            # atoms moved since the calculation, which it does for a frame with non-finite positions (nan != nan)
            self.file.write(atoms, **results)
        else:
            from ase.io import write

            write(self.file, atoms, format="extxyz")

    def close(self) -> None:
        self.file.close()


def _per_atom(value: Any, name: str, n_atoms: int) -> np.ndarray | None:
    if value is None:
        return None
    array = np.array(value, dtype=np.float64)
    if array.shape != (n_atoms, 3):
        raise ValueError(f"{name} must have shape [{n_atoms}, 3] (one row per atom), got {array.shape}")
    return array


class TrajectoryWriter(_AtomicWriter):
    """Write an MD trajectory frame by frame; the format comes from the suffix of ``path`` (see the module doc).

    ``symbols``: one element symbol per atom. ``pbc``: one flag or three, the same for every frame.
    Use it as a context manager (``with TrajectoryWriter(path, symbols, pbc) as w: w.write(...)``) or call
    ``open``/``close`` yourself; nothing appears at ``path`` until ``close``, and a ``with`` block that raises
    leaves ``path`` as it was. For DCD and XTC the PDB at ``topology_path(path)`` is written (atomically) too.
    """

    def __init__(self, path: PathLike, symbols: Sequence[str], pbc: PbcLike):
        super().__init__(path)
        self.suffix = _suffix(self.path)
        self.symbols = [str(s) for s in symbols]
        if not self.symbols:
            raise ValueError("symbols is empty: a trajectory needs at least one atom")
        self.pbc = _pbc3(pbc)
        self.n_frames = 0
        self._backend: Any = None
        self._pdb_tmp: Path | None = None
        if self.suffix in _MDTRAJ_SUFFIXES:
            self._topology = self._mdtraj_topology()

    @property
    def topology_path(self) -> Path | None:
        """The PDB written beside a DCD or XTC trajectory; None for the ASE formats."""
        return topology_path(self.path) if self.suffix in _MDTRAJ_SUFFIXES else None

    def _mdtraj_topology(self):
        md = _mdtraj()
        topology = md.Topology()
        residue = topology.add_residue("MOL", topology.add_chain())
        for symbol in self.symbols:
            try:
                element = md.element.get_by_symbol(symbol)
            except KeyError:
                raise ValueError(
                    f"mdtraj does not know the element symbol {symbol!r}; DCD and XTC need element symbols "
                    "such as 'Cu', 'O' (or write .traj / .extxyz)"
                ) from None
            # the atom name is the symbol: PDB atom names have 4 characters, too few for "Cu107"
            topology.add_atom(element.symbol, element, residue)
        return topology

    def _targets(self) -> List[Path]:
        # exited in reverse order: the PDB is renamed before the trajectory
        return [self.path, topology_path(self.path)] if self.suffix in _MDTRAJ_SUFFIXES else [self.path]

    def _start(self, temporaries: List[Path]) -> None:
        if self.suffix == ".dcd":
            self._backend = _DcdBackend(temporaries[0], bool(self.pbc.any()))
            self._pdb_tmp = temporaries[1]
        elif self.suffix == ".xtc":
            self._backend = _XtcBackend(temporaries[0], bool(self.pbc.any()))
            self._pdb_tmp = temporaries[1]
        else:
            self._backend = _AseBackend(temporaries[0], self.suffix, self.symbols, self.pbc)

    def _stop(self) -> None:
        if self._backend is not None:
            self._backend.close()

    def _check_complete(self) -> None:
        if self.n_frames == 0:
            raise ValueError(f"no frame was written to {str(self.path)!r}; the file was not created or changed")

    def write(
        self,
        positions: Any,
        cell: Any,
        time_fs: float,
        step: int,
        energy: float | None = None,
        forces: Any = None,
        velocities: Any = None,
    ) -> None:
        """Append one frame: positions [N, 3] angstrom, cell [3, 3] angstrom (rows are the cell vectors) or
        None, time in fs, step number, potential energy (eV), forces [N, 3] (eV/angstrom), velocities [N, 3]
        (angstrom/fs). DCD and XTC keep no energy, forces or velocities (DCD no time or step either).

        The frame is checked before anything is written, so a rejected frame (ValueError) leaves the file as
        it was and the writer usable.
        """
        if self._closed:
            raise ValueError(f"the writer for {str(self.path)!r} is closed; make a new one")
        frame = self._frame(positions, cell, time_fs, step, energy, forces, velocities)
        self._ensure_open()
        if self.suffix in _MDTRAJ_SUFFIXES:
            self._write_mdtraj(frame)
        else:
            self._backend.write(frame)
        self.n_frames += 1

    def _frame(self, positions, cell, time_fs, step, energy, forces, velocities) -> _Frame:
        n_atoms = len(self.symbols)
        xyz = _per_atom(positions, "positions", n_atoms)
        if cell is not None:
            cell = np.array(cell, dtype=np.float64)
            if cell.shape != (3, 3) or not np.isfinite(cell).all():
                raise ValueError(f"cell must be a finite [3, 3] matrix (angstrom) or None, got shape {cell.shape}")
        if self.pbc.any() and cell is None:
            raise ValueError(f"pbc is {self.pbc.tolist()} but cell is None; pass the cell (angstrom)")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ValueError(f"step must be an integer, got {step!r}")
        time_fs = float(time_fs)
        if not math.isfinite(time_fs):
            raise ValueError(f"time_fs must be finite, got {time_fs}")
        if self.suffix == ".xtc":
            # xdrfile writes -2147483.6 nm, silently, for a coordinate that is not finite or out of its range
            if not np.isfinite(xyz).all() or np.abs(xyz).max() > _XTC_MAX_ANGSTROM:
                raise ValueError(
                    f"positions of step {step} are not finite or beyond {_XTC_MAX_ANGSTROM:g} angstrom; XTC cannot "
                    "store them (write .dcd, .traj or .extxyz)"
                )
            if not 0 <= int(step) <= _XTC_MAX_STEP:
                raise ValueError(f"XTC stores the step as a 32-bit integer; step {step} does not fit")
        return _Frame(
            positions=xyz,
            cell=cell,
            time_fs=time_fs,
            step=int(step),
            energy=None if energy is None else float(energy),
            forces=_per_atom(forces, "forces", n_atoms),
            velocities=_per_atom(velocities, "velocities", n_atoms),
        )

    def _write_mdtraj(self, frame: _Frame) -> None:
        lengths = angles = cell = None
        positions = frame.positions
        if self.pbc.any():
            positions, cell, lengths, angles = _mdtraj_orientation(positions, frame.cell)
        if self.n_frames == 0:
            self._write_pdb(positions, lengths, angles)
        self._backend.write(positions, cell, lengths, angles, frame)

    def _write_pdb(self, positions: np.ndarray, lengths: np.ndarray | None, angles: np.ndarray | None) -> None:
        """The first frame as a PDB (angstrom, 3 decimals), with a CRYST1 record when periodic."""
        # the format class is named explicitly: the temporary file name ends in .tmp, not .pdb
        with _mdtraj().formats.PDBTrajectoryFile(str(self._pdb_tmp), "w") as pdb:
            pdb.write(positions, self._topology, unitcell_lengths=lengths, unitcell_angles=angles)


# ---------------------------------------------------------------------------------------------------------
# reading


@dataclasses.dataclass(eq=False)
class TrajectoryData:
    """A trajectory as numpy arrays in the package's units.

    ``cells`` is None when the file has no cell. ``energies`` [F] (eV), ``forces`` [F, N, 3] (eV/angstrom) and
    ``velocities`` [F, N, 3] (angstrom/fs) are None when no frame has them and NaN in the frames that lack them
    (labels are masked, not faked); ``times_fs`` likewise. ``steps`` [F] is None unless every frame has one.
    DCD keeps neither time nor step; DCD and XTC keep no energies, forces or velocities.
    """

    positions: np.ndarray  # [F, N, 3] angstrom
    cells: np.ndarray | None  # [F, 3, 3] angstrom, rows are the cell vectors
    pbc: np.ndarray  # [3] bool
    symbols: List[str]  # [N]
    times_fs: np.ndarray | None  # [F] fs
    energies: np.ndarray | None  # [F] eV
    forces: np.ndarray | None = None  # [F, N, 3] eV/angstrom
    velocities: np.ndarray | None = None  # [F, N, 3] angstrom/fs
    steps: np.ndarray | None = None  # [F] int64

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[1])


def read_trajectory(path: PathLike, top: Any = None) -> TrajectoryData:
    """Read a trajectory or a data set of structures that all have the same atoms.

    DCD and XTC are read with mdtraj, their elements taken from ``top`` (a PDB path, an mdtraj Topology or
    Trajectory) or, by default, from the PDB beside them (``topology_path(path)``). Every other file is read
    with ``ase.io.read(path, ":")`` (``.traj``, ``.extxyz``, ``.xyz`` and whatever else ASE reads).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no trajectory at {str(path)!r}")
    if path.suffix.lower() in _MDTRAJ_SUFFIXES:
        return _read_mdtraj(path, top)
    if top is not None:
        raise ValueError(f"top is only used for DCD and XTC files; {str(path)!r} carries its own elements")
    return _read_ase(path)


def _load_topology(path: Path, top: Any):
    md = _mdtraj()
    if top is None:
        top = topology_path(path)
        if not top.exists():
            raise FileNotFoundError(
                f"{str(path)!r} holds no elements and there is no {top.name!r} beside it; pass top= (a PDB path "
                "or an mdtraj Topology)"
            )
    if isinstance(top, md.Topology):
        return top
    if isinstance(top, md.Trajectory):
        return top.topology
    return md.load_topology(str(top))


def _read_mdtraj(path: Path, top: Any) -> TrajectoryData:
    md = _mdtraj()
    topology = _load_topology(path, top)
    times_fs = steps = None
    if path.suffix.lower() == ".dcd":
        with md.formats.DCDTrajectoryFile(str(path), "r") as handle:
            xyz, lengths, angles = handle.read()
        positions = xyz.astype(np.float64)
        cells = None
        if lengths is not None:
            cells = _standard_cells(lengths.astype(np.float64), angles.astype(np.float64))
    else:
        with md.formats.XTCTrajectoryFile(str(path), "r") as handle:
            xyz, time_ps, step, box = handle.read()
        positions = xyz.astype(np.float64) * NM_TO_ANGSTROM
        cells = None if box is None else box.astype(np.float64) * NM_TO_ANGSTROM
        times_fs = time_ps.astype(np.float64) * PS_TO_FS
        steps = step.astype(np.int64)
    if positions.shape[1] != topology.n_atoms:
        raise ValueError(
            f"{str(path)!r} has {positions.shape[1]} atoms but its topology has {topology.n_atoms}; "
            "pass the matching top="
        )
    symbols = [atom.element.symbol if atom.element is not None else "X" for atom in topology.atoms]
    return TrajectoryData(
        positions=positions,
        cells=cells,
        pbc=np.full(3, cells is not None),
        symbols=symbols,
        times_fs=times_fs,
        energies=None,
        steps=steps,
    )


def _masked(values: List[np.ndarray | None], shape: Tuple[int, ...]) -> np.ndarray | None:
    """Stack per-frame values; None when no frame has one, NaN for the frames without."""
    if all(v is None for v in values):
        return None
    return np.stack([np.full(shape, np.nan) if v is None else np.asarray(v, dtype=np.float64) for v in values])


def _read_ase(path: Path) -> TrajectoryData:
    from ase import units
    from ase.io import read

    images = read(str(path), ":")
    if not images:
        raise ValueError(f"{str(path)!r} holds no structure")
    symbols = images[0].get_chemical_symbols()
    pbc = np.asarray(images[0].pbc, dtype=bool)
    for index, atoms in enumerate(images):
        if atoms.get_chemical_symbols() != symbols:
            raise ValueError(
                f"frame {index} of {str(path)!r} has different atoms from frame 0; read_trajectory needs the same "
                "atoms in every frame (read such a data set with ase.io.read)"
            )
        if not np.array_equal(atoms.pbc, pbc):
            raise ValueError(f"frame {index} of {str(path)!r} has pbc {atoms.pbc.tolist()}, frame 0 {pbc.tolist()}")
    n_atoms = len(symbols)
    cells = np.stack([atoms.cell.array for atoms in images]).astype(np.float64)
    if not pbc.any() and not cells.any():
        cells = None

    def result(atoms, key: str):
        calc = atoms.calc
        return None if calc is None else calc.results.get(key)

    def info(key: str) -> List[Any]:
        return [atoms.info.get(key) for atoms in images]

    energies = _masked([result(atoms, "energy") for atoms in images], ())
    forces = _masked([result(a, "forces") for a in images], (n_atoms, 3))
    velocities = _masked(  # ASE's velocity unit is angstrom per ASE time unit; 1 fs is units.fs of those
        [atoms.get_velocities() * units.fs if "momenta" in atoms.arrays else None for atoms in images], (n_atoms, 3)
    )
    times = _masked(info("time_fs"), ())
    steps = info("step")
    return TrajectoryData(
        positions=np.stack([atoms.positions for atoms in images]).astype(np.float64),
        cells=cells,
        pbc=pbc,
        symbols=symbols,
        times_fs=times,
        energies=energies,
        forces=forces,
        velocities=velocities,
        steps=None if any(s is None for s in steps) else np.asarray(steps, dtype=np.int64),
    )


# ---------------------------------------------------------------------------------------------------------
# energy log


class EnergyLog(_AtomicWriter):
    """CSV of the energies of a run, columns ``ENERGY_LOG_COLUMNS``; total = potential + kinetic.

    Same atomic semantics as ``TrajectoryWriter``: the file appears at ``path`` when the log closes (so it
    cannot be followed while the run goes on), and a ``with`` block that raises leaves ``path`` as it was.
    A log closed without rows holds the header only.
    """

    def __init__(self, path: PathLike):
        super().__init__(path)
        self.n_rows = 0
        self._file = None
        self._writer = None

    def _start(self, temporaries: List[Path]) -> None:
        self._file = open(temporaries[0], "w", newline="")
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow(ENERGY_LOG_COLUMNS)

    def _stop(self) -> None:
        if self._file is not None:
            self._file.close()

    def write(self, step: int, time_fs: float, potential_ev: float, kinetic_ev: float, temperature_k: float) -> None:
        """Append one row; the time is given in fs and written in ps."""
        if self._closed:
            raise ValueError(f"the energy log {str(self.path)!r} is closed; make a new one")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ValueError(f"step must be an integer, got {step!r}")
        potential, kinetic = float(potential_ev), float(kinetic_ev)
        row = [int(step), float(time_fs) * FS_TO_PS, potential, kinetic, potential + kinetic, float(temperature_k)]
        self._ensure_open()
        self._writer.writerow([str(row[0])] + [repr(value) for value in row[1:]])
        self.n_rows += 1


def read_energy_log(path: PathLike) -> Dict[str, np.ndarray]:
    """The columns of an ``EnergyLog`` file as numpy arrays (``step`` int64, the others float64)."""
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or tuple(rows[0]) != ENERGY_LOG_COLUMNS:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise ValueError(
            f"{str(path)!r} is not an energy log: expected the header {','.join(ENERGY_LOG_COLUMNS)}, found {found}"
        )
    body = rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != len(ENERGY_LOG_COLUMNS):
            raise ValueError(
                f"line {number} of {str(path)!r} has {len(row)} fields, expected {len(ENERGY_LOG_COLUMNS)}"
            )
    columns: Dict[str, np.ndarray] = {}
    for index, name in enumerate(ENERGY_LOG_COLUMNS):
        values = [row[index] for row in body]
        if name == "step":
            columns[name] = np.array([int(v) for v in values], dtype=np.int64)
        else:
            columns[name] = np.array([float(v) for v in values], dtype=np.float64)
    return columns
