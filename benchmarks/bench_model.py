"""Model timings on the neighbour-list benchmark's systems: forward + backward (energy and forces).

For fcc Cu supercells of about 100, 1 000 and 10 000 atoms: the bare model (neighbour list given in the
input, so only the network and the autograd force/stress pass are timed) and the full potential call
(neighbour list computed inside, as the exported file does in every engine), for the default PaiNN size
(64 features, 3 interactions, 5 angstrom cutoff) in float32 and float64. The neighbour list alone is timed
by bench_neighbors.py; run_all.py prints both side by side.

    python benchmarks/bench_model.py
"""

import argparse
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_neighbors import copper_supercell, median_ms  # noqa: E402

try:
    from physml_md.data.neighbors import neighbor_list
    from physml_md.data.structures import LabelKeys, atoms_to_dict
    from physml_md.models import build_model
except ImportError:  # a checkout that was not `pip install -e`d
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from physml_md.data.neighbors import neighbor_list
    from physml_md.data.structures import LabelKeys, atoms_to_dict
    from physml_md.models import build_model


def inputs(atoms, dtype, with_neighbors: bool, cutoff: float):
    data = atoms_to_dict(atoms, LabelKeys(None, None, None, None, None, None), dtype)
    if with_neighbors:
        edge_index, shifts = neighbor_list(data["positions"], data["cell"][0], data["pbc"][0], cutoff)
        data["edge_index"], data["cell_shifts"] = edge_index, shifts
    return data


def run(sizes=(100, 1000, 10000), cutoff: float = 5.0, repeats: int = 5, dtypes=("float32", "float64")) -> list:
    rows = []
    for target in sizes:
        atoms = copper_supercell(target)
        atoms.rattle(0.02, seed=0)
        row = {"atoms": len(atoms), "repeats": repeats if len(atoms) < 5000 else max(2, repeats // 2)}
        for dtype_name in dtypes:
            model = build_model(species=["Cu"], cutoff=cutoff, dtype=dtype_name).eval()
            dtype = getattr(torch, dtype_name)
            bare = inputs(atoms, dtype, True, cutoff)
            full = inputs(atoms, dtype, False, cutoff)
            ms = median_ms({"bare": partial(model, bare), "full": partial(model, full)}, row["repeats"])
            row[f"bare_{dtype_name}_ms"] = ms["bare"]
            row[f"full_{dtype_name}_ms"] = ms["full"]
        rows.append(row)
    return rows


def format_table(rows, dtypes=("float32", "float64")) -> str:
    header = f"{'atoms':>6}" + "".join(f" {'bare ' + d + ' ms':>17} {'full ' + d + ' ms':>17}" for d in dtypes)
    lines = [
        f"PaiNN (64 features, 3 interactions, 5 A), forward + backward, torch threads {torch.get_num_threads()}",
        header,
        "-" * len(header),
    ]
    for row in rows:
        lines.append(
            f"{row['atoms']:>6}"
            + "".join(f" {row[f'bare_{d}_ms']:>17.1f} {row[f'full_{d}_ms']:>17.1f}" for d in dtypes)
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(format_table(run(sizes=tuple(args.sizes), repeats=args.repeats)))


if __name__ == "__main__":
    main()
