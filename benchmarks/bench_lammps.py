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
box in x, as LAMMPS' 2x1x1 grid does). What else the measured speed-up loses is measured beside it: two 1-rank
jobs run side by side (two processes sharing the memory bandwidth and cache of this machine slow each other down),
and the share of the 2-rank loop that LAMMPS puts in "Comm" (exchanges, waiting for the slower rank); "explained" =
estimate x (1 - Comm share) / side-by-side slowdown. Timings are interleaved --repeats times: ms/step are medians,
ratios the median of each repeat's own ratio (with their range), since this machine's speed drifts.
Energy drift over --drift-steps (default 1 000) NVE steps runs on smaller cells so that it finishes: Cu 3x3x3
(108 atoms) and 27 water molecules (81 atoms); drift = max |E_tot(t) - E_tot(0)| / atoms (eV/atom), LAMMPS
(1 and 2 ranks) beside ASE from the same positions and velocities.

    make lammps && .venv/bin/python benchmarks/bench_lammps.py [--quick] [--drift-steps 1000] [--time-steps 10]
        [--repeats 3]

--quick: Cu 8x4x4 (512 atoms), 27 water molecules, 100 drift steps on 32 Cu atoms and 8 water molecules.
Every process (ASE's here, each rank) keeps the memory it frees (lammps_run.KEEP_FREED_MEMORY). "CPU" is LAMMPS'
"% CPU use" x loop time (user time only) and ASE's process time (user + kernel); wall time is what counts, and on a
quiet machine the two agree within a few %. Here (2 cores, quiet) the default run took about 14 min, --quick 4 min.
"""

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lammps_run import find_lammps, keep_freed_memory, run_lammps  # noqa: E402

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


def side_by_side(setup, model: Path, atoms: Atoms, folder: Path, steps: int) -> float:
    """ms/step of a one-rank job while an identical one runs beside it (the mean of the two): what two processes
    sharing this machine's memory bandwidth and cache cost each other, without MPI."""
    with ThreadPoolExecutor(2) as pool:
        options = {"steps": steps, "skin": SKIN, "thermo_every": steps}
        jobs = [pool.submit(run_lammps, setup, model, atoms, folder / f"side{k}", **options) for k in range(2)]
        return float(np.mean([job.result().ms_per_step for job in jobs]))


def explained_speedup(shell: float, side_factor: float, comm_fraction: float) -> float:
    """The 1->2-rank speed-up the measured causes predict: a rank computes 1/shell of one rank's work, side_factor
    times slower, as one rank is with a second process beside it, and spends comm_fraction of its loop in Comm."""
    return shell * (1.0 - comm_fraction) / side_factor


def median_ratio(numerators: list, denominators: list) -> tuple:
    """(median, min, max) of the ratios of one repeat's timings: neighbours in time share the machine's speed."""
    ratios = np.array(numerators) / np.array(denominators)
    return float(np.median(ratios)), float(ratios.min()), float(ratios.max())


def bench_system(name, atoms, drift_atoms, species, setup, folder, time_steps, drift_steps, repeats):
    potential = build_model("painn", species=species, **MODEL).eval()
    torchscript = export_potential(potential, folder / f"{name}.pt")
    metatomic = export_potential(potential, folder / f"{name}_metatomic.pt", format="metatomic")
    reach = 2 * MODEL["cutoff"] + SKIN  # interaction_range (2 interactions) + skin
    row = {"system": name, "atoms": len(atoms)}
    keys = ("ase_ms", "ase_cpu_ms", "lmp1_ms", "lmp1_cpu_ms", "lmp2_ms", "lmp2_cpu_ms", "comm2", "side_ms")
    times = {key: [] for key in keys}
    for repeat in range(repeats):  # interleaved: this machine's speed drifts by 10-30 % from minute to minute
        ase = ase_run(torchscript, atoms, time_steps, every=time_steps)
        times["ase_ms"].append(ase["ms"])
        times["ase_cpu_ms"].append(ase["cpu_ms"])
        for ranks in (1, 2):
            options = {"ranks": ranks, "steps": time_steps, "skin": SKIN, "thermo_every": time_steps}
            result = run_lammps(setup, metatomic, atoms, folder / f"{name}_{ranks}_{repeat}", **options)
            row[f"dF{ranks}"] = float(np.abs(result.forces - ase["forces"]).max())
            times[f"lmp{ranks}_ms"].append(result.ms_per_step)
            times[f"lmp{ranks}_cpu_ms"].append(result.cpu_ms_per_step)
            row[f"ghosts{ranks}"] = result.ghost_atoms
        times["comm2"].append(result.comm_fraction)
        times["side_ms"].append(side_by_side(setup, metatomic, atoms, folder / f"{name}_side{repeat}", time_steps))
    row.update({key: float(np.median(values)) for key, values in times.items()})
    busiest, estimate = shell_estimate(atoms, reach)
    row["evaluated_per_rank"] = busiest
    row["speedup"], *row["speedup_range"] = median_ratio(times["lmp1_ms"], times["lmp2_ms"])
    row["cpu_speedup"] = median_ratio(times["lmp1_cpu_ms"], times["lmp2_cpu_ms"])[0]
    row["side_factor"], *row["side_range"] = median_ratio(times["side_ms"], times["lmp1_ms"])
    row["speedup_estimate"] = estimate
    row["speedup_explained"] = explained_speedup(estimate, row["side_factor"], row["comm2"])
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
    print("\nms/step, medians (wall | CPU: ASE's process time, LAMMPS' average rank's user time):")
    print(f"{'system':8} {'ASE':>15} {'LAMMPS 1 rank':>15} {'LAMMPS 2 ranks':>15} {'LMP1/ASE':>11} {'1->2 ranks':>11}")
    for r in rows:
        cells = [f"{r[k + '_ms']:7.0f}|{r[k + '_cpu_ms']:<7.0f}" for k in ("ase", "lmp1", "lmp2")]
        ratio = f"{r['lmp1_ms'] / r['ase_ms']:.2f}|{r['lmp1_cpu_ms'] / r['ase_cpu_ms']:.2f}"
        speedup = f"{r['speedup']:.2f}|{r['cpu_speedup']:.2f}"
        print(f"{r['system']:8} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} {ratio:>11} {speedup:>11}")
    print("\n1->2 ranks (wall): the ghost-shell estimate, what a second process beside a rank costs it (1 rank side by")
    print("side with another / alone), the share of the 2-rank loop in Comm, their product, and the measured speed-up:")
    print("(medians of the repeats' ratios, their range in brackets)")
    print(f"{'system':8} {'shell est.':>10} {'side by side':>20} {'Comm':>6} {'explained':>10} {'measured':>18}")
    for r in rows:
        side = f"{r['side_factor']:.2f}x [{r['side_range'][0]:.2f}-{r['side_range'][1]:.2f}]"
        measured = f"{r['speedup']:.2f} [{r['speedup_range'][0]:.2f}-{r['speedup_range'][1]:.2f}]"
        print(
            f"{r['system']:8} {r['speedup_estimate']:10.2f} {side:>20} {100 * r['comm2']:5.1f}% "
            f"{r['speedup_explained']:10.2f} {measured:>18}"
        )
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
    parser.add_argument("--time-steps", type=int, default=10, help="NVE steps timed per engine and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timings interleaved this many times (medians)")
    parser.add_argument("--drift-steps", type=int, default=None, help="NVE steps for the drift (1000; quick 100)")
    args = parser.parse_args(argv)
    setup = find_lammps()
    if isinstance(setup, str):
        sys.exit(f"no LAMMPS with pair_style metatomic: {setup}")
    drift_steps = args.drift_steps or (100 if args.quick else 1000)
    metal, liquid = (copper((8, 4, 4)), water(3)) if args.quick else (copper((20, 8, 7)), water(6))
    small = 2 if args.quick else 3
    drift_metal, drift_liquid = copper(small, seed=1), water(small, seed=1)
    kept = keep_freed_memory()  # ASE as the LAMMPS ranks (run_lammps): see lammps_run.KEEP_FREED_MEMORY
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_lammps_") as tmp:
        counts = (args.time_steps, drift_steps, args.repeats)
        rows = [
            bench_system("metal", metal, drift_metal, ["Cu"], setup, Path(tmp), *counts),
            bench_system("liquid", liquid, drift_liquid, ["H", "O"], setup, Path(tmp), *counts),
        ]
    print_table(rows, drift_steps)
    memory = "freed memory kept in every process" if kept else "glibc's mallopt missing: freed memory returned"
    print(f"\n(1 torch thread per rank and for ASE; {memory}; {time.perf_counter() - start:.0f} s in all)")
    return rows


if __name__ == "__main__":
    main()
