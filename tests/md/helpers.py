"""Helpers shared by the tests of physml_md.md: trajectories to write and read back (with the tolerance each
format keeps), and the JSON form of the analysis results."""

import json
import math

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule
from ase.geometry import get_distances

from physml_md.md.frame import Frame
from physml_md.md.io.writing import TrajectoryWriter
from tests.helpers import random_rotation

A_CU = 3.61


def json_round_trip(result):
    return json.loads(json.dumps(result.to_dict()))


# Tolerances (angstrom), from what each format stores:
# DCD keeps float32 angstrom: a relative 6e-8, below 1e-6 angstrom for these coordinates (< 15 angstrom).
DCD_ANGSTROM = 1e-5
# XTC keeps round(x * 1000 / nm): each coordinate within 0.0005 nm = 0.005 angstrom, and mdtraj gives no
# way to ask for a finer precision; the 1e-5 is float32 rounding on top.
XTC_ANGSTROM = 5e-3 + 1e-5
# A distance moves by at most the norm of the two position errors: 2 * sqrt(3) * per-coordinate error.
XTC_DISTANCE = 2 * math.sqrt(3) * XTC_ANGSTROM
DCD_DISTANCE = 1e-4  # float32 positions and a cell rebuilt from float32 lengths and angles
# extxyz prints per-atom columns (positions, momenta, forces) with 8 decimals; the comment line (cell,
# energy, time) is printed exactly.
EXTXYZ_COLUMN = 5e-9 + 1e-12
MDTRAJ_TOLERANCE = {".dcd": DCD_ANGSTROM, ".xtc": XTC_ANGSTROM}
ASE_SUFFIXES = (".traj", ".extxyz", ".xyz")
N_FRAMES = 3


def cu_frames(rng, cell_kind="cubic"):
    """32 rattled fcc Cu atoms in N_FRAMES frames; the cell changes a little from frame to frame (as in NPT).

    cell_kind: "cubic" (orthorhombic, diagonal: already in mdtraj's orientation), "triclinic" (sheared and rotated, so
    not lower-triangular) or "left_handed" (the triclinic cell with two vectors swapped).
    """
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    positions, cells = [], []
    for _ in range(N_FRAMES):
        if cell_kind == "cubic":
            strain = np.diag(1.0 + 0.01 * rng.normal(size=3))  # orthorhombic
        else:
            strain = np.eye(3) + 0.12 * rng.normal(size=(3, 3))
        cell = atoms.cell.array @ strain
        if cell_kind != "cubic":
            cell = cell @ random_rotation(rng).T
        if cell_kind == "left_handed":
            cell = cell[[1, 0, 2]]
        fractional = atoms.get_scaled_positions() + rng.normal(scale=0.01, size=(len(atoms), 3))
        positions.append(fractional @ cell)
        cells.append(cell)
    if cell_kind != "cubic":
        assert not np.allclose(cells[0], np.tril(cells[0]))
    return atoms.get_chemical_symbols(), np.array(positions), np.array(cells)


def ethanol_frames(rng):
    atoms = molecule("CH3CH2OH")
    positions = atoms.positions + rng.normal(scale=0.05, size=(N_FRAMES, len(atoms), 3))
    return atoms.get_chemical_symbols(), positions, None


def labels(rng, n_atoms):
    """Per-frame times (fs), steps, energies (eV), forces (eV/A) and velocities (A/fs), awkward decimals."""
    return {
        "times": 0.5 * np.arange(N_FRAMES) * 10 + rng.uniform(0, 0.1, N_FRAMES),
        "steps": 10 * np.arange(N_FRAMES) + 3,
        "energies": rng.normal(-100.0, 1.0, N_FRAMES),
        "forces": rng.normal(size=(N_FRAMES, n_atoms, 3)),
        "velocities": rng.normal(scale=0.01, size=(N_FRAMES, n_atoms, 3)),
    }


def make_frame(positions, cell, time_fs, step, **quantities):
    return Frame(step=step, time_fs=time_fs, positions=positions, cell=cell, **quantities)


def labelled_frame(positions, cells, data, i):
    return make_frame(
        positions[i],
        None if cells is None else cells[i],
        data["times"][i],
        int(data["steps"][i]),
        potential_energy=data["energies"][i],
        forces=data["forces"][i],
        velocities=data["velocities"][i],
    )


def write_frames(path, symbols, positions, cells, pbc, data):
    with TrajectoryWriter(path, symbols, pbc) as writer:
        for i in range(len(positions)):
            writer.write(labelled_frame(positions, cells, data, i))
    return writer


def mic_distances(positions, cell):
    return Atoms(positions=positions, cell=cell, pbc=True).get_all_distances(mic=True)


def triple_product(positions, cell):
    """Signed volume of the minimum-image vectors from atom 0 to atoms 1, 2, 3 (nearest neighbours in fcc)."""
    vectors, _ = get_distances(positions[0], positions[1:4], cell=cell, pbc=True)
    return float(np.linalg.det(vectors[0]))


def dir_listing(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())
