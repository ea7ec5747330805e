"""Every benchmark, measured in one run, printed as one table (`make bench`).

Neighbour list (ours, plain vesin, ase.neighborlist) and the model's forward+backward on the same fcc Cu
systems, then the training throughput of `physml-md train` against a plain torch loop (smaller budget than
bench_training.py's defaults), then the ASE calculator's overhead over the bare exported module (float64, torch's
thread count) and ASE MD speed on ethanol (bench_ase.py), then one OpenMM step per backend over the bare module
(bench_openmm.py);
the ratios compare contenders measured side by side in this run.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ase  # noqa: E402
import bench_model  # noqa: E402
import bench_neighbors  # noqa: E402
import bench_openmm  # noqa: E402
import bench_training  # noqa: E402


def main():
    sizes = (100, 1000, 10000)
    neighbours = bench_neighbors.run(sizes=sizes)
    models = bench_model.run(sizes=sizes)
    print(bench_neighbors.format_table(neighbours, 5.0))
    print()
    print(bench_model.format_table(models))
    print()
    header = (
        f"{'atoms':>6} {'NL ours ms':>11} {'ase/ours':>9} {'ours/vesin':>10} {'model f64 ms':>13} "
        f"{'NL share of full call':>22}"
    )
    print("summary (float64 model; NL share = NL ours / full potential call)")
    print(header)
    print("-" * len(header))
    for nl, model in zip(neighbours, models):
        share = nl["ours_ms"] / model["full_float64_ms"]
        print(
            f"{nl['atoms']:>6} {nl['ours_ms']:>11.2f} {nl['ase/ours']:>9.1f} {nl['ours/vesin']:>10.2f} "
            f"{model['bare_float64_ms']:>13.1f} {share:>22.3f}"
        )
    print()
    training = bench_training.run(structures=100, epochs=3, warmup=1, threads=2)
    print(bench_training.format_table(training))
    print()
    # Overhead on torch's thread count (both cores: faster than one for this model at every Cu size); calls vary
    # by ~10 % from one to the next: 15 timed calls each below 2 000 atoms, 2 above (7 s a call), after
    # median_ms's one warm-up call. Ethanol MD on one and two threads (one is usually faster for 9 atoms).
    calculator = bench_ase.run(
        sizes=(64, 512, 4096), repeats=15, large_repeats=2, warmup=0, md_steps=300, md_threads=(1, 2)
    )
    print(bench_ase.format_table(calculator))
    print()
    # OpenMM: one Verlet step per backend over the bare module, 500-atom periodic Cu, one and two threads
    print(bench_openmm.format_table(bench_openmm.run(atoms=512, threads=(1, 2), repeats=9)))


if __name__ == "__main__":
    main()
