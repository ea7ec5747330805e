"""Neighbour-list timings, side by side in one run: ours (eager and scripted), plain vesin, and ASE.

Systems are fcc Cu supercells (a = 3.61 angstrom, cubic cell of 4 atoms repeated into a near-cube) with about
100, 1 000 and 10 000 atoms, fully periodic. Each timing is the median of several calls after one warm-up
call. Ours, ours scripted and plain vesin are interleaved round-robin; ASE is timed apart, with fewer repeats
at the largest size. vesin uses its default thread count (every core) both through our wrapper and on its
own. `run()` returns the rows; the script prints them as a table.

    python benchmarks/bench_neighbors.py
"""

import argparse
import itertools
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import ase.build
import ase.neighborlist
import torch
import vesin

try:
    from physml_md.data.neighbors import neighbor_list
except ImportError:  # a checkout that was not `pip install -e`d: import the package beside this folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from physml_md.data.neighbors import neighbor_list

CU_LATTICE_CONSTANT = 3.61


def copper_supercell(target_atoms: int) -> ase.Atoms:
    """fcc Cu, the 4-atom cubic cell repeated (a, b, c) times, c - a <= 1, with the count nearest the target."""
    best = min(
        (abs(4 * a * b * c - target_atoms), (a, b, c))
        for a, b, c in itertools.combinations_with_replacement(range(1, 40), 3)
        if c - a <= 1
    )[1]
    return ase.build.bulk("Cu", "fcc", a=CU_LATTICE_CONSTANT, cubic=True).repeat(best)


def median_ms(functions: dict, repeats: int) -> dict:
    """Median wall time (ms) of each function, after one warm-up call each.

    The calls are interleaved round-robin, starting each round one place further (a b c, b c a, c a b, ...), so
    that a drift of the machine (other processes, clock frequency) and the cost of going first after a pause
    fall on every contender alike.
    """
    names = list(functions)
    for function in functions.values():
        function()
    times = {name: [] for name in names}
    for round_ in range(repeats):
        for k in range(len(names)):
            name = names[(round_ + k) % len(names)]
            start = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def run(sizes=(100, 1000, 10000), cutoff: float = 5.0, repeats: int = 10, ase_repeats_large: int = 3) -> list:
    """Time the four neighbour lists on Cu supercells; one dict per size (times in ms, pairs counted once)."""
    scripted = torch.jit.script(neighbor_list)
    rows = []
    for target in sizes:
        atoms = copper_supercell(target)
        positions = torch.tensor(atoms.positions, dtype=torch.float64)
        cell = torch.tensor(atoms.cell.array, dtype=torch.float64)
        pbc = torch.tensor(atoms.pbc)
        points, box = atoms.positions, atoms.cell.array
        vesin_nl = vesin.NeighborList(cutoff=cutoff, full_list=True)

        pairs = {
            "ours": neighbor_list(positions, cell, pbc, cutoff)[0].shape[1],
            "scripted": scripted(positions, cell, pbc, cutoff)[0].shape[1],
            "vesin": len(vesin_nl.compute(points, box, True, quantities="ijS")[0]),
            "ase": len(ase.neighborlist.neighbor_list("i", atoms, cutoff)),
        }
        if len(set(pairs.values())) != 1:
            raise RuntimeError(f"the neighbour lists disagree on {len(atoms)} atoms: {pairs}")

        fast = {
            "ours": partial(neighbor_list, positions, cell, pbc, cutoff),
            "scripted": partial(scripted, positions, cell, pbc, cutoff),
            "vesin": partial(vesin_nl.compute, points, box, True, quantities="ijS"),
        }
        ms = median_ms(fast, repeats)
        # ASE runs apart: it is 20-50 times slower, and the fast ones would otherwise always follow it.
        ase_repeats = repeats if len(atoms) < 5000 else min(repeats, ase_repeats_large)
        ms.update(median_ms({"ase": partial(ase.neighborlist.neighbor_list, "ijS", atoms, cutoff)}, ase_repeats))
        row = {"atoms": len(atoms), "pairs": pairs["ours"], "repeats": repeats, "ase_repeats": ase_repeats}
        row.update({f"{name}_ms": value for name, value in ms.items()})
        row["ase/ours"] = row["ase_ms"] / row["ours_ms"]
        row["ours/vesin"] = row["ours_ms"] / row["vesin_ms"]
        rows.append(row)
    return rows


def format_table(rows, cutoff: float) -> str:
    header = (
        f"{'atoms':>6} {'pairs':>8} {'ours ms':>9} {'scripted ms':>11} {'vesin ms':>9} {'ase ms':>9} "
        f"{'ase/ours':>9} {'ours/vesin':>10}"
    )
    lines = [f"fcc Cu, cutoff {cutoff} angstrom, full list, medians after a warm-up", header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['atoms']:>6} {row['pairs']:>8} {row['ours_ms']:>9.2f} {row['scripted_ms']:>11.2f} "
            f"{row['vesin_ms']:>9.2f} {row['ase_ms']:>9.1f} {row['ase/ours']:>9.1f} {row['ours/vesin']:>10.2f}"
        )
    repeats = ", ".join(f"{row['atoms']}: {row['repeats']} ({row['ase_repeats']} for ase)" for row in rows)
    lines.append(f"repeats per size: {repeats}")
    lines.append(
        f"torch {torch.__version__}, vesin {vesin.__version__}, vesin threads: default "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {len(os.sched_getaffinity(0))} usable cores)"
    )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000], help="target atom counts")
    parser.add_argument("--cutoff", type=float, default=5.0, help="angstrom")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rows = run(sizes=tuple(args.sizes), cutoff=args.cutoff, repeats=args.repeats)
    print(format_table(rows, args.cutoff))


if __name__ == "__main__":
    main()
