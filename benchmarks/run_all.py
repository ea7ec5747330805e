"""Every benchmark, measured in one run, printed as one table (`make bench`).

Neighbour list (ours, plain vesin, ase.neighborlist) and the potential call's forward+backward (time and peak
memory of every architecture, and of the reference PaiNN beside the optimised one) on the same fcc Cu
systems, then the training throughput of `physml-md train` against a plain torch loop (smaller budget than
bench_training.py's defaults), then the ASE calculator's overhead over the bare exported module (float64, torch's
thread count) and ASE MD speed on ethanol (bench_ase.py), then one OpenMM step per backend over the bare module
(bench_openmm.py); it ends with one table of every ratio.
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
        f"{'atoms':>6} {'NL ours ms':>11} {'ase/ours':>9} {'ours/vesin':>10} {'painn f64 ms':>13} "
        f"{'NL share of full call':>22}"
    )
    print("summary (float64 PaiNN; NL share = NL ours / full potential call)")
    print(header)
    print("-" * len(header))
    shares = []
    for nl in neighbours:
        model = bench_model.find(models, "painn", nl["atoms"], "float64")
        if model is None or model["oom"]:
            continue
        shares.append((nl["atoms"], nl["ours_ms"] / model["ms"]))
        print(
            f"{nl['atoms']:>6} {nl['ours_ms']:>11.2f} {nl['ase/ours']:>9.1f} {nl['ours/vesin']:>10.2f} "
            f"{model['ms']:>13.1f} {shares[-1][1]:>22.3f}"
        )
    print()
    training = bench_training.run(structures=100, epochs=3, warmup=1, threads=2)
    print(bench_training.format_table(training))
    ratios = [(f"neighbour list, {nl['atoms']} Cu atoms", "ase / ours", nl["ase/ours"]) for nl in neighbours]
    ratios += [(f"neighbour list, {nl['atoms']} Cu atoms", "ours / vesin", nl["ours/vesin"]) for nl in neighbours]
    ratios += [(f"PaiNN f64, {atoms} Cu atoms", "NL share of full call", share) for atoms, share in shares]
    for atoms, dtype, time_ratio, memory_ratio in bench_model.reference_ratios(models):
        ratios.append((f"PaiNN {dtype}, {atoms} Cu atoms", "optimised / reference time", time_ratio))
        ratios.append((f"PaiNN {dtype}, {atoms} Cu atoms", "optimised / reference peak memory", memory_ratio))
    ratios.append(("training, structures/s", "physml-md / plain torch loop", training["ratio"]))
    print()
    # Overhead on torch's thread count (both cores: faster than one for this model at every Cu size); calls vary
    # by ~10 % from one to the next: 15 timed calls each below 2 000 atoms, 2 above (7 s a call), after
    # median_ms's one warm-up call. Ethanol MD on one and two threads (one is usually faster for 9 atoms).
    calculator = bench_ase.run(
        sizes=(64, 512, 4096), repeats=15, large_repeats=2, warmup=0, md_steps=300, md_threads=(1, 2)
    )
    print(bench_ase.format_table(calculator))
    ratios += [
        (f"ASE get_forces, {row['atoms']} Cu atoms, {row['threads']} threads", "ase / bare", row["ase/bare"])
        for row in calculator["overhead"]
    ]
    ratios += [
        (f"ASE NVE ethanol {row['dtype']}, {row['threads']} threads", "step / bare", row["step/bare"])
        for row in calculator["md"]
    ]
    print()
    # OpenMM: one Verlet step per backend over the bare module, 500-atom periodic Cu, one and two threads
    openmm = bench_openmm.run(atoms=512, threads=(1, 2), repeats=9)
    print(bench_openmm.format_table(openmm))
    ratios += [
        (f"OpenMM step, {row['atoms']} Cu atoms, {row['threads']} threads", f"{backend} / bare", row[f"{backend}/bare"])
        for row in openmm["rows"]
        for backend in openmm["backends"]
    ]
    print()
    print(format_ratios(ratios))


def format_ratios(ratios) -> str:
    """One table of every ratio measured above (contenders measured side by side in this run)."""
    width = max(len(what) for what, _, _ in ratios)
    kind = max(len(name) for _, name, _ in ratios)
    header = f"{'benchmark':<{width}}  {'ratio':<{kind}}  {'value':>8}"
    lines = ["All ratios (each measured side by side in this run)", header, "-" * len(header)]
    lines += [f"{what:<{width}}  {name:<{kind}}  {value:>8.3f}" for what, name, value in ratios]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
