"""Reading back what an MD run wrote: ``read_trajectory`` (any trajectory or data set ASE or mdtraj reads) and
``read_energy_log`` (the CSV of ``EnergyLog``). Units are the package's (velocities in angstrom/fs, converted from
ASE's unit with ``ase.units.fs``); ``TrajectoryData`` names each quantity as a ``Frame`` does, in the plural.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
from ase import units
from ase.io import read

from physml_md.atomic_write import PathLike
from physml_md.md.frame import Frame
from physml_md.md.geometry import mdtraj, standard_cells
from physml_md.md.io.formats import MDTRAJ_SUFFIXES, topology_path
from physml_md.units import NM_TO_ANGSTROM, PS_TO_FS

__all__ = ["ENERGY_LOG_COLUMNS", "UNCERTAINTY_COLUMN", "TrajectoryData", "read_energy_log", "read_trajectory"]

# the CSV header of an energy log: time in ps, energies in eV, temperature in kelvin
ENERGY_LOG_COLUMNS: Tuple[str, ...] = ("step", "time_ps", "potential_ev", "kinetic_ev", "total_ev", "temperature_k")
UNCERTAINTY_COLUMN = "max_forces_std_ev_per_angstrom"  # a committee run's: the largest per-atom force std


@dataclasses.dataclass(eq=False)
class TrajectoryData:
    """A trajectory as numpy arrays in the package's units.

    ``cells`` is None when the file has no cell. ``potential_energies`` [F] (eV), ``forces`` [F, N, 3]
    (eV/angstrom) and ``velocities`` [F, N, 3] (angstrom/fs) are None when no frame has them and NaN in the frames
    that lack them (labels are masked, not faked); ``times_fs`` likewise. ``steps`` [F] is None unless every
    frame has one. DCD keeps neither time nor step; DCD and XTC keep no energies, forces or velocities.
    """

    positions: np.ndarray  # [F, N, 3] angstrom
    cells: np.ndarray | None  # [F, 3, 3] angstrom, rows are the cell vectors
    pbc: np.ndarray  # [3] bool
    symbols: List[str]  # [N]
    times_fs: np.ndarray | None  # [F] fs
    potential_energies: np.ndarray | None  # [F] eV
    forces: np.ndarray | None = None  # [F, N, 3] eV/angstrom
    velocities: np.ndarray | None = None  # [F, N, 3] angstrom/fs
    steps: np.ndarray | None = None  # [F] int64

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[1])

    def frame(self, index: int) -> Frame:
        """Frame ``index`` as a ``Frame`` (step -1 and time NaN where the file keeps none)."""

        def pick(series):
            return None if series is None else series[index]

        energy = pick(self.potential_energies)
        return Frame(
            step=-1 if self.steps is None else int(self.steps[index]),
            time_fs=float("nan") if self.times_fs is None else float(self.times_fs[index]),
            positions=self.positions[index],
            cell=pick(self.cells),
            forces=pick(self.forces),
            velocities=pick(self.velocities),
            potential_energy=None if energy is None else float(energy),
        )


def read_trajectory(path: PathLike, top: Any = None) -> TrajectoryData:
    """Read a trajectory or a data set of structures that all have the same atoms.

    DCD and XTC are read with mdtraj, their elements taken from ``top`` (a PDB path, an mdtraj Topology or
    Trajectory) or, by default, from the PDB beside them (``topology_path(path)``). Every other file is read
    with ``ase.io.read(path, ":")`` (``.traj``, ``.extxyz``, ``.xyz`` and whatever else ASE reads).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no trajectory at {str(path)!r}")
    if path.suffix.lower() in MDTRAJ_SUFFIXES:
        return _read_mdtraj(path, top)
    if top is not None:
        raise ValueError(f"top is only used for DCD and XTC files; {str(path)!r} carries its own elements")
    return _read_ase(path)


def _load_topology(path: Path, top: Any):
    md = mdtraj()
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
    md = mdtraj()
    topology = _load_topology(path, top)
    times_fs = steps = None
    if path.suffix.lower() == ".dcd":
        with md.formats.DCDTrajectoryFile(str(path), "r") as handle:
            xyz, lengths, angles = handle.read()
        positions = xyz.astype(np.float64)
        cells = None
        if lengths is not None:
            cells = standard_cells(lengths.astype(np.float64), angles.astype(np.float64))
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
        potential_energies=None,
        steps=steps,
    )


def _masked(values: List[np.ndarray | None], shape: Tuple[int, ...]) -> np.ndarray | None:
    """Stack per-frame values; None when no frame has one, NaN for the frames without."""
    if all(v is None for v in values):
        return None
    return np.stack([np.full(shape, np.nan) if v is None else np.asarray(v, dtype=np.float64) for v in values])


def _read_ase(path: Path) -> TrajectoryData:
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
        potential_energies=energies,
        forces=forces,
        velocities=velocities,
        steps=None if any(s is None for s in steps) else np.asarray(steps, dtype=np.int64),
    )


def read_energy_log(path: PathLike) -> Dict[str, np.ndarray]:
    """The columns of an ``EnergyLog`` file as numpy arrays (``step`` int64, the others float64); a committee run's
    log has ``UNCERTAINTY_COLUMN`` too."""
    path = Path(path)
    lines = path.read_text().splitlines()
    header = tuple(lines[0].split(",")) if lines else ()
    if header not in (ENERGY_LOG_COLUMNS, ENERGY_LOG_COLUMNS + (UNCERTAINTY_COLUMN,)):
        raise ValueError(
            f"{str(path)!r} is not an energy log: expected the header {','.join(ENERGY_LOG_COLUMNS)}, "
            f"found {lines[0] if lines else 'an empty file'}"
        )
    for number, line in enumerate(lines[1:], start=2):
        if line.count(",") != len(header) - 1:
            raise ValueError(f"line {number} of {str(path)!r} has {line.count(',') + 1} fields, expected {len(header)}")
    dtype = [(name, np.int64 if name == "step" else np.float64) for name in header]
    table = np.loadtxt(lines[1:], delimiter=",", dtype=dtype, ndmin=1) if len(lines) > 1 else np.zeros(0, dtype)
    return {name: np.ascontiguousarray(table[name]) for name in header}
