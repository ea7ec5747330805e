"""The trajectory formats behind ``TrajectoryWriter`` (whose module doc says what each keeps): one backend per
format with ``check(frame)`` (before the file is touched: a rejected frame leaves it as it was), ``write(frame)`` and
``close()``; here are the details (mdtraj's orientation, the PDB beside DCD and XTC, XTC's limits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import Trajectory, write

from physml_md.md.frame import Frame
from physml_md.md.geometry import cell_lengths_angles, frame_cells, mdtraj, mdtraj_topology, standard_cells
from physml_md.units import ANGSTROM_TO_NM, FS_TO_PS

__all__ = ["ASE_FORMATS", "MDTRAJ_SUFFIXES", "SUPPORTED_SUFFIXES", "BACKENDS", "pdb_topology", "topology_path"]

MDTRAJ_SUFFIXES = (".dcd", ".xtc")
ASE_FORMATS = {".traj": "traj", ".extxyz": "extxyz", ".xyz": "extxyz"}
SUPPORTED_SUFFIXES: Tuple[str, ...] = MDTRAJ_SUFFIXES + tuple(ASE_FORMATS)

_XTC_MAX_STEP = 2**31 - 1  # XTC stores the step as a 32-bit integer
# XTC stores round(x * 1000 / nm) as 32-bit integers, and their differences too: keep |x| below 1e6 nm
_XTC_MAX_ANGSTROM = 1e7
# A cell counts as already in mdtraj's orientation when its upper off-diagonal entries are below this fraction
# of its longest vector (rounding noise), and its diagonal is positive.
_LOWER_TRIANGULAR_RTOL = 1e-12
_PDB_NAME_WIDTH = 4  # characters of a PDB atom name


def pdb_topology(symbols: Sequence[str]):
    """The mdtraj topology of the PDB beside a DCD or XTC trajectory: one chain of "MOL" residues whose atom names are
    unique within their residue (OpenMM's ``PDBFile`` warns about duplicates): the element symbol and its count in
    the residue (C1, C2, O1, H1 ... H6, Cu12), at most PDB's 4 characters; a new residue starts where a name would
    be longer (after C999 or Cu99).
    """
    elements = [atom.element for atom in mdtraj_topology(symbols, len(symbols)).atoms]  # checks the symbols
    topology = mdtraj().Topology()
    chain = topology.add_chain()
    residue, counts = None, {}
    for element in elements:
        count = counts.get(element.symbol, 0) + 1
        if residue is None or len(f"{element.symbol}{count}") > _PDB_NAME_WIDTH:
            residue, counts, count = topology.add_residue("MOL", chain), {}, 1
        counts[element.symbol] = count
        topology.add_atom(f"{element.symbol}{count}", element, residue)
    return topology


def topology_path(path) -> Path:
    """The PDB written beside a DCD or XTC trajectory: ``path`` with its suffix replaced by ``.pdb``."""
    return Path(path).with_suffix(".pdb")


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
    right_handed = frame_cells(cell, 1)  # [1, 3, 3], the last vector reversed for a left-handed cell
    lengths, angles = cell_lengths_angles(right_handed)
    matrix = right_handed[0]
    upper = np.abs(matrix[np.triu_indices(3, k=1)])
    if np.all(upper <= _LOWER_TRIANGULAR_RTOL * lengths.max()) and np.all(np.diag(matrix) > 0):
        return positions, matrix, lengths[0], angles[0]
    standard = standard_cells(lengths, angles)[0]
    rotated = positions @ np.linalg.inv(matrix) @ standard
    return rotated, standard, lengths[0], angles[0]


class _MdtrajBackend:
    """DCD and XTC: the frame rotated into mdtraj's orientation; the first one also written as the PDB beside."""

    def __init__(self, temporaries: List[Path], suffix: str, symbols: Sequence[str], pbc: np.ndarray, topology):
        self.periodic = bool(pbc.any())
        self.topology = topology
        self.pdb_tmp = temporaries[1]
        self.first = True
        self.file = self._open(str(temporaries[0]))

    @staticmethod
    def check(frame: Frame) -> None:
        """Raise ValueError for a frame this format cannot store."""

    def write(self, frame: Frame) -> None:
        lengths = angles = cell = None
        positions = frame.positions
        if self.periodic:
            positions, cell, lengths, angles = _mdtraj_orientation(positions, frame.cell)
        if self.first:
            # the format class is named explicitly: the temporary file name ends in .tmp, not .pdb
            with mdtraj().formats.PDBTrajectoryFile(str(self.pdb_tmp), "w") as pdb:
                pdb.write(positions, self.topology, unitcell_lengths=lengths, unitcell_angles=angles)
            self.first = False
        self._append(frame, positions, cell, lengths, angles)

    def close(self) -> None:
        self.file.close()


class _DcdBackend(_MdtrajBackend):
    def _open(self, path: str):
        return mdtraj().formats.DCDTrajectoryFile(path, "w", force_overwrite=True)

    def _append(self, frame: Frame, positions, cell, lengths, angles) -> None:
        xyz = positions[None].astype(np.float32)  # DCD stores angstrom
        if self.periodic:
            self.file.write(xyz, cell_lengths=lengths[None], cell_angles=angles[None])
        else:
            self.file.write(xyz)


class _XtcBackend(_MdtrajBackend):
    def _open(self, path: str):
        return mdtraj().formats.XTCTrajectoryFile(path, "w", force_overwrite=True)

    @staticmethod
    def check(frame: Frame) -> None:
        # xdrfile writes -2147483.6 nm, silently, for a coordinate that is not finite or out of its range
        xyz = frame.positions
        if not np.isfinite(xyz).all() or np.abs(xyz).max() > _XTC_MAX_ANGSTROM:
            raise ValueError(
                f"positions of step {frame.step} are not finite or beyond {_XTC_MAX_ANGSTROM:g} angstrom; XTC cannot "
                "store them (write .dcd, .traj or .extxyz)"
            )
        if not 0 <= frame.step <= _XTC_MAX_STEP:
            raise ValueError(f"XTC stores the step as a 32-bit integer; step {frame.step} does not fit")

    def _append(self, frame: Frame, positions, cell, lengths, angles) -> None:
        # a zero box is what mdtraj reads back as "no unit cell" (its default box would be a 1 nm cube)
        box = cell * ANGSTROM_TO_NM if self.periodic else np.zeros((3, 3))
        self.file.write(
            (positions * ANGSTROM_TO_NM)[None].astype(np.float32),
            time=np.array([frame.time_fs * FS_TO_PS], dtype=np.float32),
            step=np.array([frame.step], dtype=np.int32),
            box=box[None].astype(np.float32),
        )


class _AseBackend:
    """.traj (ase.io.Trajectory) and extended XYZ: every quantity of the frame, float64."""

    def __init__(self, temporaries: List[Path], suffix: str, symbols: Sequence[str], pbc: np.ndarray, topology=None):
        self.format = ASE_FORMATS[suffix]
        self.symbols = list(symbols)
        self.pbc = pbc
        if self.format == "traj":
            self.file = Trajectory(str(temporaries[0]), "w")
        else:
            self.file = open(temporaries[0], "w")

    @staticmethod
    def check(frame: Frame) -> None:
        """Every frame can be stored."""

    def write(self, frame: Frame) -> None:
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
        if frame.potential_energy is not None:
            results["energy"] = frame.potential_energy
        if frame.forces is not None:
            results["forces"] = frame.forces
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        if self.format == "traj":
            # also as keywords: from the calculator alone, ase.io.Trajectory drops the results when it thinks the
            # atoms moved since the calculation, which it does for a frame with non-finite positions (nan != nan)
            self.file.write(atoms, **results)
        else:
            write(self.file, atoms, format="extxyz")

    def close(self) -> None:
        self.file.close()


# suffix -> backend class; every backend is built as cls(temporaries, suffix, symbols, pbc, mdtraj_topology)
BACKENDS: Dict[str, Any] = {".dcd": _DcdBackend, ".xtc": _XtcBackend, **dict.fromkeys(ASE_FORMATS, _AseBackend)}
