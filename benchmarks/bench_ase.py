"""What PhysMLCalculator adds to the exported model, and the speed of ASE MD, measured side by side in one run.

Overhead: a PaiNN of build_model's default size (64 features, 3 interactions, 20 radial functions, 5 angstrom
cutoff) for Cu, in float64 (the headline dtype; float32 on request), is exported to a temporary file. For
rattled fcc Cu supercells of about 64, 512 and 4 096 atoms, two contenders run interleaved round-robin
(medians after warm-up):
  bare  the exported module loaded with load_potential, called on prebuilt tensors (positions,
        atomic_numbers, cell, pbc): forward + the internal backward for forces and stress;
  ase   one `atoms.get_forces()` through PhysMLCalculator(path), after moving every atom by -1e-6 / +1e-6
        angstrom in turn, so that the calculator's cache cannot answer.
ase/bare is the calculator's overhead (goal: <= 1.10 from 512 atoms up). Both run on the same torch thread
count, set globally and as the calculator's num_threads (so the calculator never switches it); by default
torch's own count (2 on the 2-core development machine, where 2 beat 1 thread at every Cu size).

MD: ns/day of ASE NVE MD (VelocityVerlet, 0.5 fs, 300 K start) on ethanol (ase.build.molecule("CH3CH2OH"),
9 atoms) with a model of the same size for H, C, O, in float64 and float32, timed after a warm-up;
ns/day = simulated ns / wall days. Beside it, the bare module's time on ethanol: step/bare is what ASE's
integrator and the calculator add per step.

    .venv/bin/python benchmarks/bench_ase.py [--threads 1 2] [--repeats 9] [--md-steps 500] [--dtypes float64 float32]
"""

import argparse
import os
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
    from physml_md.data.structures import LabelKeys, atoms_to_dict
    from physml_md.models import build_model
except ImportError:  # a checkout that was not `pip install -e`d
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from physml_md import PhysMLCalculator, export_potential, load_potential
    from physml_md.data.structures import LabelKeys, atoms_to_dict
    from physml_md.models import build_model

TIMESTEP_FS = 0.5
DISPLACEMENT = 1e-6  # angstrom: changes the positions (the cache must not answer) without changing the physics
INPUT_KEYS = ("positions", "atomic_numbers", "cell", "pbc")  # what the calculator gives the module
NO_LABELS = LabelKeys(None, None, None, None, None, None)


def model_tensors(atoms, dtype: torch.dtype) -> dict:
    """The four input tensors the calculator builds for one structure, built once."""
    data = atoms_to_dict(atoms, NO_LABELS, dtype)
    return {key: data[key] for key in INPUT_KEYS}


def _ase_step(atoms, sign: list) -> None:
    sign[0] = -sign[0]
    atoms.positions += sign[0] * DISPLACEMENT
    atoms.get_forces()


def overhead(path: Path, target_atoms: int, threads: int, repeats: int, warmup: int) -> dict:
    """Median ms of the bare module and of one ASE get_forces() step on a rattled Cu supercell."""
    potential = load_potential(path)
    atoms = copper_supercell(target_atoms)
    atoms.rattle(0.05, seed=1)
    data = model_tensors(atoms, potential.dtype)
    atoms.calc = PhysMLCalculator(path, num_threads=threads)
    functions = {"bare": partial(potential, data), "ase": partial(_ase_step, atoms, [1.0])}
    for _ in range(warmup):  # TorchScript's profiling executor optimises each module after its first calls
        for function in functions.values():
            function()
    ms = median_ms(functions, repeats)
    return {
        "atoms": len(atoms),
        "dtype": potential.metadata["dtype"],
        "threads": threads,
        "repeats": repeats,
        "bare_ms": ms["bare"],
        "ase_ms": ms["ase"],
        "ase/bare": ms["ase"] / ms["bare"],
    }


def md_speed(path: Path, threads: int, steps: int, warmup: int, repeats: int) -> dict:
    """ns/day of VelocityVerlet NVE on ethanol through PhysMLCalculator, and the bare module's ms on it."""
    atoms = molecule("CH3CH2OH")
    potential = load_potential(path)
    data = model_tensors(atoms, potential.dtype)
    for _ in range(warmup):
        potential(data)
    bare_ms = median_ms({"bare": partial(potential, data)}, repeats)["bare"]

    atoms.calc = PhysMLCalculator(path, num_threads=threads)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    dynamics.run(warmup)
    start = time.perf_counter()
    dynamics.run(steps)
    seconds = time.perf_counter() - start
    ms_per_step = 1e3 * seconds / steps
    return {
        "dtype": potential.metadata["dtype"],
        "threads": threads,
        "steps": steps,
        "ms_per_step": ms_per_step,
        "ns_per_day": steps * TIMESTEP_FS * 1e-6 / (seconds / 86400.0),
        "bare_ms": bare_ms,
        "step/bare": ms_per_step / bare_ms,
    }


def run(
    sizes=(64, 512, 4096),
    threads=None,
    repeats: int = 9,
    large_repeats: int = 3,
    dtypes=("float64",),
    md_steps: int = 500,
    md_warmup: int = 20,
    md_dtypes=("float64", "float32"),
    md_threads=None,
    warmup: int = 2,
    features: int = 64,
    n_interactions: int = 3,
    n_rbf: int = 20,
) -> dict:
    """Overhead rows (one per dtype, thread count and size) and MD rows (one per dtype and thread count).

    threads: torch thread counts to measure, each used by both contenders (None: torch's current count);
    md_threads: the same for the MD rows (None: as threads).
    repeats: timed calls per contender; large_repeats: the same above 2 000 atoms (several seconds a call).
    The model size defaults to build_model's.
    torch's thread count is restored afterwards.
    """
    threads = (torch.get_num_threads(),) if threads is None else tuple(threads)
    md_threads = threads if md_threads is None else tuple(md_threads)
    dtypes, md_dtypes = tuple(dtypes), tuple(md_dtypes)
    for name, counts in (("threads", threads), ("md_threads", md_threads)):
        if not counts or min(counts) < 1:
            raise ValueError(f"{name} must be positive thread counts, got {counts}: e.g. {name}=(1, 2)")
    if min(repeats, large_repeats, md_steps) < 1 or min(md_warmup, warmup) < 0:
        raise ValueError(
            f"repeats, large_repeats and md_steps must be >= 1 and the warm-ups >= 0, got repeats={repeats}, "
            f"large_repeats={large_repeats}, md_steps={md_steps}, md_warmup={md_warmup}, warmup={warmup}"
        )
    size = {"features": features, "n_interactions": n_interactions, "n_rbf": n_rbf}
    model_kwargs = {"cutoff": 5.0, "seed": 0, **size}
    before = torch.get_num_threads()
    rows, md_rows = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for dtype in dict.fromkeys(dtypes + md_dtypes):
                if dtype in dtypes:
                    model = build_model("painn", species=["Cu"], dtype=dtype, **model_kwargs)
                    paths["Cu", dtype] = export_potential(model, Path(tmp) / f"cu_{dtype}.pt")
                if dtype in md_dtypes:
                    model = build_model("painn", species=["H", "C", "O"], dtype=dtype, **model_kwargs)
                    paths["HCO", dtype] = export_potential(model, Path(tmp) / f"hco_{dtype}.pt")
            for n_threads in threads:
                torch.set_num_threads(n_threads)
                for dtype in dtypes:
                    for target in sizes:
                        n_repeats = repeats if target <= 2000 else large_repeats
                        rows.append(overhead(paths["Cu", dtype], target, n_threads, n_repeats, warmup))
            for n_threads in md_threads:
                torch.set_num_threads(n_threads)
                for dtype in md_dtypes:
                    md_rows.append(md_speed(paths["HCO", dtype], n_threads, md_steps, md_warmup, 3 * repeats))
    finally:
        torch.set_num_threads(before)
    return {
        "overhead": rows,
        "md": md_rows,
        "threads": list(threads),
        "md_threads": list(md_threads),
        "headline_dtype": "float64" if "float64" in dtypes else dtypes[0] if dtypes else None,
        "model": f"PaiNN, {features} features, {n_interactions} interactions, {n_rbf} rbf, cutoff 5 angstrom",
    }


def format_table(result: dict) -> str:
    """The overhead and MD tables as text."""
    header = f"{'dtype':>8} {'threads':>7} {'atoms':>6} {'bare ms':>10} {'ase ms':>10} {'ase/bare':>9} {'repeats':>7}"
    lines = [
        f"ASE calculator overhead: one get_forces() over the bare exported module ({result['model']}, fcc Cu; "
        f"headline {result['headline_dtype']}; goal ase/bare <= 1.10 from 512 atoms up)",
        header,
        "-" * len(header),
    ]
    for row in result["overhead"]:
        lines.append(
            f"{row['dtype']:>8} {row['threads']:>7} {row['atoms']:>6} {row['bare_ms']:>10.2f} {row['ase_ms']:>10.2f} "
            f"{row['ase/bare']:>9.3f} {row['repeats']:>7}"
        )
    header = f"{'dtype':>8} {'threads':>7} {'steps':>6} {'ms/step':>8} {'ns/day':>8} {'bare ms':>8} {'step/bare':>9}"
    lines += [
        "",
        f"ASE NVE MD on ethanol (9 atoms, VelocityVerlet {TIMESTEP_FS} fs, same model size for H, C, O); "
        "bare = the module alone on ethanol",
        header,
        "-" * len(header),
    ]
    for row in result["md"]:
        lines.append(
            f"{row['dtype']:>8} {row['threads']:>7} {row['steps']:>6} {row['ms_per_step']:>8.2f} "
            f"{row['ns_per_day']:>8.2f} {row['bare_ms']:>8.2f} {row['step/bare']:>9.2f}"
        )
    lines.append(
        f"torch {torch.__version__}, torch threads per row as listed ({len(os.sched_getaffinity(0))} usable cores)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512, 4096], help="target atom counts")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=None, help="torch thread counts to measure (default: torch's)"
    )
    parser.add_argument(
        "--md-threads", type=int, nargs="+", default=None, help="torch thread counts for MD (default: --threads)"
    )
    parser.add_argument("--repeats", type=int, default=9, help="timed calls per contender")
    parser.add_argument("--large-repeats", type=int, default=3, help="the same above 2 000 atoms")
    parser.add_argument("--dtypes", nargs="+", default=["float64"], help="dtypes of the overhead rows")
    parser.add_argument("--md-steps", type=int, default=500)
    args = parser.parse_args()
    result = run(
        sizes=tuple(args.sizes),
        threads=args.threads,
        md_threads=args.md_threads,
        repeats=args.repeats,
        large_repeats=args.large_repeats,
        dtypes=tuple(args.dtypes),
        md_steps=args.md_steps,
    )
    print(format_table(result))


if __name__ == "__main__":
    main()
