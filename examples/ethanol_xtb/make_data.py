"""Reference data for the ethanol/GFN2-xTB example: Langevin MD of ethanol with GFN2-xTB (tblite), labelled frames.

Two files, both computed here by a real engine (tblite's ASE calculator, ``TBLite(method="GFN2-xTB")``):

- ``ethanol_xtb_500K.extxyz``, the training data: ethanol (``ase.build.molecule("CH3CH2OH")``) runs Langevin MD
  at 500 K (0.5 fs steps, friction 0.01/fs); after 0.5 ps (1000 steps) of equilibration a frame is kept every
  20 steps (10 fs). 500 K, hotter than the 300 K at which the potential is used, samples the torsions (methyl
  rotation, OH gauche/trans) and stretched bonds that 300 K MD visits only rarely.
- ``ethanol_xtb_300K_reference.extxyz``, the reference for the MD validation: the same MD at 300 K from another
  seed, a frame every 10 steps (5 fs, the interval at which the validation records its own frames) after 0.5 ps;
  2000 frames (10 ps) by default.

Each kept frame carries GFN2-xTB's energy (eV) and forces (eV/angstrom), computed by a fresh calculator at the
positions rounded to the 8 decimals that extxyz writes, so the file's labels are those of its positions; the
info of each frame holds the temperature, MD step, time and seed. Files are written atomically (a temporary
name, then a rename). The same seed gives the same files.

Measured on this machine (2 CPU cores): one GFN2-xTB energy+forces call on ethanol takes 1.0-1.2 ms, an MD step
1.2-1.3 ms (ASE's Langevin adds ~0.1 ms), a labelled frame with a fresh calculator 1.4 ms, all with one OpenMP
thread. With two threads an MD step took anything from 1.3 to 210 ms, depending on what else ran on the
cores, so tblite runs on one thread here (``openmp_threads``). The defaults, 1000 frames at 500 K (21 000 MD
steps) and 2000 reference frames at 300 K (21 000 steps), take about 60 s.

    python examples/ethanol_xtb/make_data.py                       # the defaults, into examples/ethanol_xtb/output/data
    python examples/ethanol_xtb/make_data.py --frames 100 --reference-frames 200 --out /tmp/ethanol
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import List, NamedTuple, Sequence

import numpy as np
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.io import read, write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

from physml_md.atomic_write import PathLike, atomic_path
from physml_md.learning.labelling import openmp_threads as labelling_threads

DEFAULT_OUT = Path(__file__).resolve().parent / "output" / "data"
DATA_NAME = "ethanol_xtb_500K.extxyz"
REFERENCE_NAME = "ethanol_xtb_300K_reference.extxyz"
METHOD = "GFN2-xTB"
TIMESTEP = 0.5  # fs
FRICTION = 0.01  # 1/fs
EQUILIBRATION_STEPS = 1000  # 0.5 ps
TEMPERATURE = 500.0  # K, training data
SAMPLE_EVERY = 20  # steps between training frames (10 fs)
REFERENCE_TEMPERATURE = 300.0  # K, the validation's temperature
REFERENCE_EVERY = 10  # steps between reference frames (5 fs)
REFERENCE_SEED_OFFSET = 1000  # the reference MD uses seed + this: independent of the training MD
DECIMALS = 8  # extxyz writes positions with 8 decimals: labels are computed at the written positions
DEFAULT_FRAMES = 1000
DEFAULT_REFERENCE_FRAMES = 2000


class DataFiles(NamedTuple):
    """The two files ``make_data`` writes."""

    data: Path  # training frames at 500 K
    reference: Path  # 300 K reference trajectory for the MD validation


def xtb_calculator():
    """tblite's ASE calculator for GFN2-xTB, silent."""
    from tblite.ase import TBLite

    return TBLite(method=METHOD, verbosity=0)


@contextlib.contextmanager
def openmp_threads(n: int):
    """Run tblite with ``n`` OpenMP threads inside the block (physml_md.learning.labelling.openmp_threads).

    For a 9-atom molecule one thread is fastest: measured here 1.2 ms per MD step with one thread, and with two
    anything from 1.3 to 210 ms per step, depending on what else runs on the 2 cores (the OpenMP threads wait
    for each other). tblite is imported first, so that the OpenMP runtime set is the one it uses.
    """
    import tblite.ase  # noqa: F401  (loads the OpenMP runtime tblite uses)

    with labelling_threads(n):
        yield


def labelled_frame(atoms: Atoms, info: dict) -> Atoms:
    """A copy of ``atoms`` (positions rounded as extxyz writes them) carrying a fresh GFN2-xTB energy and forces."""
    frame = Atoms(atoms.numbers, positions=np.round(atoms.positions, DECIMALS), info=dict(info))
    frame.calc = xtb_calculator()
    energy, forces = frame.get_potential_energy(), frame.get_forces()
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
    return frame


def sample_md(n_frames: int, temperature: float, every: int, seed: int) -> List[Atoms]:
    """Langevin MD of ethanol with GFN2-xTB at ``temperature`` K: ``n_frames`` labelled frames, ``every`` steps
    apart, after ``EQUILIBRATION_STEPS`` steps."""
    rng = np.random.default_rng(seed)
    atoms = molecule("CH3CH2OH")
    atoms.calc = xtb_calculator()
    atoms.set_constraint(FixCom())  # the molecule does not drift (ASE's recommended form of Langevin's fixcm)
    thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dynamics = Langevin(
        atoms, TIMESTEP * units.fs, temperature_K=temperature, friction=FRICTION / units.fs, fixcm=False, rng=rng
    )
    dynamics.run(EQUILIBRATION_STEPS)
    frames = []
    for _ in range(n_frames):
        dynamics.run(every)
        step = dynamics.nsteps
        info = {"temperature_K": temperature, "step": step, "time_fs": step * TIMESTEP, "seed": seed, "method": METHOD}
        frames.append(labelled_frame(atoms, info))
    return frames


def _write(path: Path, frames: Sequence[Atoms]) -> Path:
    with atomic_path(path) as tmp:
        write(tmp, frames, format="extxyz")
    return path


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def make_data(
    out_dir: PathLike = DEFAULT_OUT,
    n_frames: int = DEFAULT_FRAMES,
    n_reference_frames: int = DEFAULT_REFERENCE_FRAMES,
    seed: int = 0,
) -> DataFiles:
    """Write the 500 K training frames and the 300 K reference trajectory into ``out_dir``; return their paths."""
    n_frames = _count(n_frames, "n_frames")
    n_reference_frames = _count(n_reference_frames, "n_reference_frames")
    out_dir = Path(out_dir)
    with openmp_threads(1):
        frames = sample_md(n_frames, TEMPERATURE, SAMPLE_EVERY, seed)
        reference_frames = sample_md(
            n_reference_frames, REFERENCE_TEMPERATURE, REFERENCE_EVERY, seed + REFERENCE_SEED_OFFSET
        )
    data = _write(out_dir / DATA_NAME, frames)
    reference = _write(out_dir / REFERENCE_NAME, reference_frames)
    return DataFiles(data, reference)


def existing_data(
    out_dir: PathLike = DEFAULT_OUT,
    n_frames: int = DEFAULT_FRAMES,
    n_reference_frames: int = DEFAULT_REFERENCE_FRAMES,
    seed: int = 0,
) -> DataFiles | None:
    """The files in ``out_dir`` when ``make_data`` with these arguments wrote them (frame counts and seeds
    match), else None."""
    files = DataFiles(Path(out_dir) / DATA_NAME, Path(out_dir) / REFERENCE_NAME)
    wanted = ((files.data, n_frames, seed), (files.reference, n_reference_frames, seed + REFERENCE_SEED_OFFSET))
    for path, count, frame_seed in wanted:
        if not path.is_file():
            return None
        frames = read(path, ":")
        if len(frames) != count or any(frame.info.get("seed") != frame_seed for frame in frames):
            return None
    return files


def summary(path: Path) -> str:
    """One line: frames, energy range, largest force component."""
    frames = read(path, ":")
    energies = np.array([f.get_potential_energy() for f in frames])
    max_force = max(float(np.abs(f.get_forces()).max()) for f in frames)
    return (
        f"{len(frames)} frames at {frames[0].info['temperature_K']:g} K; E {energies.min():.3f} .. "
        f"{energies.max():.3f} eV; max |F| component {max_force:.2f} eV/A"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="500 K frames (default: %(default)s)")
    parser.add_argument(
        "--reference-frames",
        type=int,
        default=DEFAULT_REFERENCE_FRAMES,
        help="300 K reference frames (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        files = make_data(args.out, args.frames, args.reference_frames, args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    seconds = time.perf_counter() - start
    for path in files:
        print(f"{path}: {summary(path)}")
    print(f"{seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
