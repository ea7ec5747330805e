"""LAMMPS over MPI (pair_style metatomic, the plugin of `make lammps`) against ASE (PhysMLCalculator), side by side
in one run, on a periodic metal and a molecular liquid.

Model: an untrained float64 PaiNN (32 features, 2 interactions, 4.5 angstrom cutoff, ZBL so that atoms stay
apart; interaction_range 9 angstrom), one for Cu, one for H and O, exported twice: TorchScript for ASE,
metatomic for LAMMPS. Systems:
  metal   fcc Cu 20x8x7 cubic cells (4 480 atoms, 72.2 x 28.9 x 25.3 angstrom), rattled, 300 K velocities;
          long in x, where LAMMPS' 2x1x1 grid splits it (in a 36 angstrom cube of 4 000 atoms each half plus its
          10 angstrom shells is the whole box: no speed-up is possible)
  liquid  216 water molecules on a grid at 1 g/cm3, random orientations (648 atoms, 18.6 angstrom)
For each: step-0 forces of LAMMPS at 1 and 2 ranks against ASE (max |dF|, eV/angstrom); ms/step of NVE (0.5 fs)
for ASE, LAMMPS 1 rank and 2 ranks (one torch thread per rank; ASE on one thread too); the 1->2-rank speed-up
against the ghost-shell estimate: a rank evaluates the atoms it owns plus those within interaction_range + skin
of its domain (periodic, each atom once), so the estimate is N / max over ranks of that count (2 ranks split the
box in x, as LAMMPS' 2x1x1 grid does).
Energy drift over --drift-steps (default 1 000) NVE steps runs on smaller cells so that it finishes: Cu 3x3x3
(108 atoms) and 27 water molecules (81 atoms); drift = max |E_tot(t) - E_tot(0)| / atoms (eV/atom), LAMMPS
(1 and 2 ranks) beside ASE from the same positions and velocities.

    make lammps && .venv/bin/python benchmarks/bench_lammps.py [--quick] [--drift-steps 1000] [--time-steps 5]

--quick: Cu 8x4x4 (512 atoms), 27 water molecules, 100 drift steps on 32 Cu atoms and 8 water molecules.
Wall times depend on what else runs: the "CPU" columns (LAMMPS' "% CPU use" x loop time; ASE's process time) are
what a free core would give. Here (2 cores at a load of ~10) the default run took 16 min, --quick 4 min.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lammps_run import find_lammps, run_lammps  # noqa: E402

try:
    from physml_md import PhysMLCalculator, export_potential
    from physml_md.models import build_model
except ImportError:  # a checkout that was not `pip install -e`d
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from physml_md import PhysMLCalculator, export_potential
    from physml_md.models import build_model

TIMESTEP_FS = 0.5
SKIN = 1.0  # angstrom, LAMMPS' neighbor skin
MODEL = {"features": 32, "n_interactions": 2, "cutoff": 4.5, "zbl": True, "dtype": "float64", "seed": 0}


def copper(repeat: int, seed: int = 0) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=seed)
    return thermalise(atoms, seed)


def water(n_side: int, seed: int = 0) -> Atoms:
    """n_side**3 water molecules on a cubic grid at 1 g/cm3 (29.9 angstrom^3 each), randomly oriented."""
    rng = np.random.default_rng(seed)
    length = (n_side**3 * 18.015 / 0.602214) ** (1.0 / 3.0)
    spacing = length / n_side
    template = molecule("H2O")
    template.positions -= template.get_center_of_mass()
    atoms = Atoms(cell=[length] * 3, pbc=True)
    for index in np.ndindex(n_side, n_side, n_side):
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        piece = template.copy()
        piece.positions = piece.positions @ rotation.T + (np.array(index) + 0.5) * spacing
        atoms += piece
    return thermalise(atoms, seed)


def thermalise(atoms: Atoms, seed: int) -> Atoms:
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    Stationary(atoms)
    return atoms


def shell_estimate(atoms: Atoms, reach: float, ranks: int = 2) -> tuple:
    """(atoms the busiest rank evaluates, speed-up estimate N / that) for ``ranks`` slabs in x."""
    fractional = atoms.get_scaled_positions()[:, 0]
    length = atoms.cell.lengths()[0]
    counts = []
    for rank in range(ranks):
        low, high = rank / ranks, (rank + 1) / ranks
        centre = 0.5 * (low + high)
        distance = np.abs((fractional - centre + 0.5) % 1.0 - 0.5) - 0.5 * (high - low)  # to the slab, fractional
        counts.append(int(np.count_nonzero(distance * length <= reach)))
    busiest = max(counts)
    return busiest, len(atoms) / busiest


def ase_run(path: Path, atoms: Atoms, steps: int, every: int = 10) -> dict:
    atoms = atoms.copy()
    atoms.calc = PhysMLCalculator(path, num_threads=1)
    forces = atoms.get_forces()
    energy = atoms.get_potential_energy()
    dyn = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    totals = [atoms.get_total_energy()]
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(every, steps + 1, every):
        dyn.run(every)
        totals.append(atoms.get_total_energy())
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    per_step = 1000 / max(steps, 1)
    return {
        "forces": forces,
        "energy": energy,
        "totals": np.array(totals),
        "ms": seconds * per_step,
        "cpu_ms": cpu * per_step,
    }


def drift(totals: np.ndarray, n_atoms: int) -> float:
    return float(np.abs(totals - totals[0]).max() / n_atoms)


def bench_system(name, atoms, drift_atoms, species, setup, folder, time_steps, drift_steps):
    potential = build_model("painn", species=species, **MODEL).eval()
    torchscript = export_potential(potential, folder / f"{name}.pt")
    metatomic = export_potential(potential, folder / f"{name}_metatomic.pt", format="metatomic")
    reach = 2 * MODEL["cutoff"] + SKIN  # interaction_range (2 interactions) + skin
    row = {"system": name, "atoms": len(atoms)}
    ase = ase_run(torchscript, atoms, time_steps, every=time_steps)
    row["ase_ms"], row["ase_cpu_ms"] = ase["ms"], ase["cpu_ms"]
    for ranks in (1, 2):
        result = run_lammps(
            setup,
            metatomic,
            atoms,
            folder / f"{name}_{ranks}",
            ranks=ranks,
            steps=time_steps,
            skin=SKIN,
            thermo_every=time_steps,
        )
        row[f"dF{ranks}"] = float(np.abs(result.forces - ase["forces"]).max())
        row[f"lmp{ranks}_ms"] = result.ms_per_step
        row[f"lmp{ranks}_cpu_ms"] = result.cpu_ms_per_step
        row[f"ghosts{ranks}"] = result.ghost_atoms
    busiest, estimate = shell_estimate(atoms, reach)
    row["evaluated_per_rank"] = busiest
    row["speedup"] = row["lmp1_ms"] / row["lmp2_ms"]
    row["cpu_speedup"] = row["lmp1_cpu_ms"] / row["lmp2_cpu_ms"]
    row["speedup_estimate"] = estimate
    # energy drift, smaller cell
    ase_drift = ase_run(torchscript, drift_atoms, drift_steps)
    row["drift_atoms"] = len(drift_atoms)
    row["drift_ase"] = drift(ase_drift["totals"], len(drift_atoms))
    for ranks in (1, 2):
        result = run_lammps(
            setup, metatomic, drift_atoms, folder / f"{name}_drift{ranks}", ranks=ranks, steps=drift_steps, skin=SKIN
        )
        row[f"drift_lmp{ranks}"] = drift(result.total_energy, len(drift_atoms))
    return row


def print_table(rows, drift_steps):
    print(
        f"\n{'system':8} {'atoms':>6} {'max|dF| 1 rank':>15} {'2 ranks':>9} {'eval/rank':>9} {'ghosts 1/2':>12} "
        f"{'shell est.':>10}"
    )
    for r in rows:
        print(
            f"{r['system']:8} {r['atoms']:6d} {r['dF1']:15.1e} {r['dF2']:9.1e} {r['evaluated_per_rank']:9d} "
            f"{r['ghosts1']:>5d}/{r['ghosts2']:<6d} {r['speedup_estimate']:10.2f}"
        )
    print("\nms/step (wall | CPU of one process or the average rank; CPU is what a free core would give):")
    print(f"{'system':8} {'ASE':>15} {'LAMMPS 1 rank':>15} {'LAMMPS 2 ranks':>15} {'LMP1/ASE':>11} {'1->2 ranks':>11}")
    for r in rows:
        cells = [f"{r[k + '_ms']:7.0f}|{r[k + '_cpu_ms']:<7.0f}" for k in ("ase", "lmp1", "lmp2")]
        ratio = f"{r['lmp1_ms'] / r['ase_ms']:.2f}|{r['lmp1_cpu_ms'] / r['ase_cpu_ms']:.2f}"
        speedup = f"{r['speedup']:.2f}|{r['cpu_speedup']:.2f}"
        print(f"{r['system']:8} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} {ratio:>11} {speedup:>11}")
    print(f"\nNVE energy drift over {drift_steps} steps of {TIMESTEP_FS} fs, max |E(t) - E(0)| per atom (eV/atom):")
    print(f"{'system':8} {'atoms':>6} {'ASE':>10} {'LMP 1 rank':>11} {'LMP 2 ranks':>12} {'2 ranks/ASE':>12}")
    for r in rows:
        print(
            f"{r['system']:8} {r['drift_atoms']:6d} {r['drift_ase']:10.2e} {r['drift_lmp1']:11.2e} "
            f"{r['drift_lmp2']:12.2e} {r['drift_lmp2'] / r['drift_ase']:12.2f}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller systems, 100 drift steps")
    parser.add_argument("--time-steps", type=int, default=5, help="NVE steps timed per engine")
    parser.add_argument("--drift-steps", type=int, default=None, help="NVE steps for the drift (1000; quick 100)")
    args = parser.parse_args(argv)
    setup = find_lammps()
    if isinstance(setup, str):
        sys.exit(f"no LAMMPS with pair_style metatomic: {setup}")
    drift_steps = args.drift_steps or (100 if args.quick else 1000)
    metal, liquid = (copper((8, 4, 4)), water(3)) if args.quick else (copper((20, 8, 7)), water(6))
    small = 2 if args.quick else 3
    drift_metal, drift_liquid = copper(small, seed=1), water(small, seed=1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_lammps_") as tmp:
        rows = [
            bench_system("metal", metal, drift_metal, ["Cu"], setup, Path(tmp), args.time_steps, drift_steps),
            bench_system("liquid", liquid, drift_liquid, ["H", "O"], setup, Path(tmp), args.time_steps, drift_steps),
        ]
    print_table(rows, drift_steps)
    print(f"\n(1 torch thread per rank and for ASE; {time.perf_counter() - start:.0f} s in all)")
    return rows


if __name__ == "__main__":
    main()
