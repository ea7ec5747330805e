"""What the ASE calculator adds to the model, and ASE MD speed on ethanol.

For fcc Cu supercells of about 64, 512 and 4 096 atoms (rattled), the default PaiNN (64 features,
3 interactions, 5 angstrom cutoff, float64) is exported once; then, interleaved round-robin:
  bare  the exported module called on prebuilt tensors (forward + the internal backward for forces),
  ase   one `atoms.get_forces()` through PhysMLCalculator after a tiny displacement (so the cache cannot answer).
The ratio ase/bare is the calculator's overhead (goal: <= 1.10 from 512 atoms up). Then ns/day of ASE NVE MD
(VelocityVerlet, 0.5 fs) on ethanol, float64 and float32.

    .venv/bin/python benchmarks/bench_ase_overhead.py [--threads 1] [--repeats 5] [--md-steps 200]
"""

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import molecule
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_neighbors import copper_supercell, median_ms  # noqa: E402

try:
    from physml_md import PhysMLCalculator, export_potential, load_potential
    from physml_md.models import build_model
except ImportError:  # a checkout that was not `pip install -e`d
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from physml_md import PhysMLCalculator, export_potential, load_potential
    from physml_md.models import build_model


def _tensors(atoms, dtype):
    return {
        "positions": torch.tensor(atoms.positions, dtype=dtype),
        "atomic_numbers": torch.tensor(atoms.numbers),
        "cell": torch.tensor(atoms.cell.array, dtype=dtype).unsqueeze(0),
        "pbc": torch.tensor(atoms.pbc).unsqueeze(0),
    }


def _bare(potential, data) -> None:
    potential(data)


def _ase_step(atoms, sign: list) -> None:
    sign[0] = -sign[0]
    atoms.positions[0, 0] += sign[0] * 1e-6  # a real change, so the calculator's cache cannot answer
    atoms.get_forces()


def overhead(path: Path, sizes, repeats: int, threads: int) -> list:
    potential = load_potential(path)
    rows = []
    for size in sizes:
        atoms = copper_supercell(size)
        atoms.rattle(0.05, seed=1)
        data = _tensors(atoms, potential.dtype)
        atoms.calc = PhysMLCalculator(path, num_threads=threads)
        functions = {"bare": partial(_bare, potential, data), "ase": partial(_ase_step, atoms, [1.0])}
        n_repeats = max(2, repeats // 2) if len(atoms) > 2000 else repeats
        times = median_ms(functions, n_repeats)
        rows.append({"atoms": len(atoms), **times, "ratio": times["ase"] / times["bare"]})
    return rows


def md_speed(path: Path, steps: int, threads: int) -> dict:
    atoms = molecule("CH3CH2OH")
    atoms.calc = PhysMLCalculator(path, num_threads=threads)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dynamics.run(10)  # warm-up (TorchScript optimises the first calls)
    start = time.perf_counter()
    dynamics.run(steps)
    seconds = time.perf_counter() - start
    simulated_ns = steps * 0.5e-6
    return {"ms_per_step": 1e3 * seconds / steps, "ns_per_day": simulated_ns / (seconds / 86400)}


def run(sizes=(64, 512, 4096), repeats: int = 5, md_steps: int = 200, threads: int = 1) -> dict:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            kwargs = {"species": ["H", "C", "O", "Cu"], "cutoff": 5.0, "seed": 0}
            f64 = export_potential(build_model(dtype="float64", **kwargs), Path(tmp) / "f64.pt")
            f32 = export_potential(build_model(dtype="float32", **kwargs), Path(tmp) / "f32.pt")
            rows = overhead(f64, sizes, repeats, threads)
            md = {"float64": md_speed(f64, md_steps, threads), "float32": md_speed(f32, md_steps, threads)}
    finally:
        torch.set_num_threads(before)
    return {"overhead": rows, "md": md, "threads": threads}


def format_table(result: dict) -> str:
    lines = [
        f"ASE calculator overhead (default PaiNN, float64, torch threads {result['threads']}; goal ase/bare <= 1.10)",
        f"{'atoms':>6} {'bare ms':>10} {'ase ms':>10} {'ase/bare':>9}",
        "-" * 38,
    ]
    for row in result["overhead"]:
        lines.append(f"{row['atoms']:>6} {row['bare']:>10.1f} {row['ase']:>10.1f} {row['ratio']:>9.3f}")
    lines += ["", "ASE NVE MD on ethanol (9 atoms, VelocityVerlet 0.5 fs)"]
    lines.append(f"{'dtype':>8} {'ms/step':>8} {'ns/day':>8}")
    for dtype, md in result["md"].items():
        lines.append(f"{dtype:>8} {md['ms_per_step']:>8.2f} {md['ns_per_day']:>8.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--md-steps", type=int, default=200)
    args = parser.parse_args()
    print(format_table(run(repeats=args.repeats, md_steps=args.md_steps, threads=args.threads)))


if __name__ == "__main__":
    main()
