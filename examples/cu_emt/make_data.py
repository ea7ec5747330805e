"""Reference data for the Cu/EMT example: strained 32-atom fcc Cu cells sampled by Langevin MD with ASE's EMT.

Each cell is the cubic fcc Cu cell (a = 3.61 angstrom) repeated 2x2x2 and deformed by a random symmetric strain
whose principal strains lie within +-3 % (so every cell length stays within +-3 % of 7.22 angstrom). Cells run
Langevin MD (2 fs steps, friction 0.02/fs) at the given temperatures in turn; after a 200 fs equilibration a
frame is kept every 10 steps (20 fs). Each frame stores EMT's energy (eV), forces (eV/angstrom) and stress
(eV/angstrom^3, ASE's sign) in an extxyz file. The same seed gives the same file.

    python examples/cu_emt/make_data.py --n-structures 400 --seed 0
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import List, Sequence

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta

from physml_md.atomic_write import PathLike, atomic_path
from physml_md.units import QuantityLike, parse_quantity

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "cu_emt.extxyz"
LATTICE = 3.61  # angstrom, fcc Cu
MAX_STRAIN = 0.03  # largest principal strain (fraction)
TIMESTEP = 2.0  # fs
FRICTION = 0.02  # 1/fs
EQUILIBRATION_STEPS = 100
SAMPLE_EVERY = 10  # steps between kept frames
FRAMES_PER_CELL = 10
DECIMALS = 8  # extxyz writes positions with 8 decimals: labels are computed at the written positions


def random_strain(rng: np.random.Generator) -> np.ndarray:
    """I + e: e symmetric, with principal strains uniform in [-MAX_STRAIN, MAX_STRAIN] along random axes."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    principal = rng.uniform(-MAX_STRAIN, MAX_STRAIN, size=3)
    return np.eye(3) + q @ np.diag(principal) @ q.T


def labelled_frame(atoms: Atoms) -> Atoms:
    """A copy of the structure (positions rounded as extxyz writes them) carrying EMT's energy, forces, stress."""
    frame = Atoms(atoms.numbers, positions=np.round(atoms.positions, DECIMALS), cell=atoms.cell.array, pbc=True)
    frame.calc = EMT()
    energy, forces, stress = frame.get_potential_energy(), frame.get_forces(), frame.get_stress()
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces, stress=stress)
    return frame


def _temperatures(temperatures: Sequence[QuantityLike]) -> List[float]:
    values = [parse_quantity(t, "temperature", "temperatures") for t in temperatures]
    if not values or any(t <= 0 for t in values):
        raise ValueError(f"temperatures must be a non-empty list of positive temperatures in K, got {temperatures!r}")
    return values


def make_data(out: PathLike, n_structures: int, seed: int, temperatures: Sequence[QuantityLike]) -> Path:
    """Write ``n_structures`` EMT-labelled Cu32 frames to the extxyz file ``out`` (atomically); return its path.

    temperatures: K (numbers or strings such as "300 K"); cell i runs at temperatures[i % len(temperatures)].
    The frames are split over max(len(temperatures), ceil(n_structures / 10)) cells (at most n_structures).
    """
    if isinstance(n_structures, bool) or not isinstance(n_structures, int) or n_structures < 1:
        raise ValueError(f"n_structures must be a positive integer, got {n_structures!r}")
    kelvin = _temperatures(temperatures)
    rng = np.random.default_rng(seed)
    n_cells = min(n_structures, max(len(kelvin), math.ceil(n_structures / FRAMES_PER_CELL)))
    counts = [len(chunk) for chunk in np.array_split(np.arange(n_structures), n_cells)]
    base = bulk("Cu", "fcc", a=LATTICE, cubic=True).repeat(2)
    frames = []
    for cell_index, count in enumerate(counts):
        temperature = kelvin[cell_index % len(kelvin)]
        atoms = base.copy()
        atoms.set_cell(base.cell.array @ random_strain(rng), scale_atoms=True)
        atoms.calc = EMT()
        thermalize_momenta(atoms, temperature, rng=rng)  # ASE >= 3.29
        Stationary(atoms)
        dynamics = Langevin(
            atoms,
            TIMESTEP * units.fs,
            temperature_K=temperature,
            friction=FRICTION / units.fs,
            fixcm=False,
            rng=rng,
        )
        dynamics.run(EQUILIBRATION_STEPS)
        frames += _sample(dynamics, atoms, count)
    return _write(out, frames)


def _sample(dynamics, atoms: Atoms, count: int) -> List[Atoms]:
    """``count`` labelled frames, one every SAMPLE_EVERY steps of ``dynamics``."""
    frames = []
    for _ in range(count):
        dynamics.run(SAMPLE_EVERY)
        frames.append(labelled_frame(atoms))
    return frames


def _write(out: PathLike, frames: Sequence[Atoms]) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:
        write(tmp, frames, format="extxyz")
    return out


def reference_trajectory(
    out: PathLike, atoms: Atoms, temperature: float = 300.0, n_frames: int = 150, seed: int = 0
) -> Path:
    """EMT Langevin MD of ``atoms`` at ``temperature`` K (2 fs steps, 1 ps of equilibration, then a frame every
    10 steps), written to extxyz atomically: the reference that MD validation compares g(r) with."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)
    dynamics = Langevin(
        atoms, TIMESTEP * units.fs, temperature_K=temperature, friction=FRICTION / units.fs, fixcm=False, rng=rng
    )
    dynamics.run(500)
    return _write(out, _sample(dynamics, atoms, n_frames))


def summary(frames: Sequence[Atoms], seconds: float) -> str:
    """One line: count, energy range per atom, largest force, stress range, wall time."""
    energies = np.array([f.get_potential_energy() / len(f) for f in frames])
    max_force = max(float(np.abs(f.get_forces()).max()) for f in frames)
    stresses = np.concatenate([f.get_stress() for f in frames]) / units.GPa
    return (
        f"{len(frames)} structures; E/atom {energies.min():.4f} .. {energies.max():.4f} eV; "
        f"max |F| {max_force:.3f} eV/A; stress {stresses.min():.3f} .. {stresses.max():.3f} GPa; "
        f"{seconds:.1f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="extxyz file to write (default: %(default)s)")
    parser.add_argument("--n-structures", type=int, default=400, help="number of frames (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--temperatures",
        default="300,600,900,1200",
        help="comma-separated MD temperatures in K (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    temperatures = [t.strip() for t in args.temperatures.split(",") if t.strip()]
    start = time.perf_counter()
    try:
        out = make_data(args.out, args.n_structures, args.seed, temperatures)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    seconds = time.perf_counter() - start
    print(f"{out}: {summary(read(out, ':'), seconds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
