"""What a committee costs in MD: ASE ms/step of a committee of N in one exported file against one member.

For each architecture (the ethanol example's sizes: 64 features, 2 interactions, 20 radial functions, 5 angstrom,
float64 as exported for MD), one member and a committee of ``--members`` (default 4) members built from it (other
seeds) are exported to temporary files (TorchScript, and AOTInductor with ``--formats``); ASE VelocityVerlet MD of
ethanol (0.5 fs) runs with each, interleaved over ``--rounds`` rounds, 1 torch thread by default; the table gives
the median ms/step and committee/member (the goal: <= 2 for 4 members). Weights are random: the cost of a step
does not depend on them.

    .venv/bin/python benchmarks/bench_committee.py [--members 4] [--steps 200] [--formats torchscript aotinductor]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase.build import molecule

from physml_md.export import export_potential
from physml_md.integrations.ase import PhysMLCalculator
from physml_md.models import build_model
from physml_md.models.committee import Committee

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_accuracy import md_ms_per_step  # noqa: E402

SIZES = {"features": 64, "n_interactions": 2, "n_rbf": 20, "cutoff": 5.0}
SUFFIX = {"torchscript": ".pt", "aotinductor": ".pt2", "export": ".pt2"}


def ms_per_step(path: Path, steps: int, warmup: int, threads: int) -> float:
    return md_ms_per_step(PhysMLCalculator(path, num_threads=threads), molecule("CH3CH2OH"), steps, warmup)


def run(
    architectures=("tensornet", "painn"),
    members: int = 4,
    steps: int = 200,
    warmup: int = 20,
    rounds: int = 3,
    threads: int = 1,
    formats=("torchscript",),
    sizes=None,
) -> list:
    """Rows: architecture, format, member ms/step, committee ms/step, ratio."""
    sizes = dict(SIZES, **(sizes or {}))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        files = {}
        for name in architectures:
            models = [build_model(name, species=["H", "C", "O"], seed=seed, **sizes).eval() for seed in range(members)]
            for format in formats:
                single = Path(folder) / f"{name}-single{SUFFIX[format]}"
                many = Path(folder) / f"{name}-committee{SUFFIX[format]}"
                export_potential(models[0], single, format=format)
                export_potential(Committee(models), many, format=format)
                files[name, format] = (single, many)
        times = {key: ([], []) for key in files}
        for _ in range(rounds):  # interleaved: load on the machine touches every contender alike
            for key, (single, many) in files.items():
                times[key][0].append(ms_per_step(single, steps, warmup, threads))
                times[key][1].append(ms_per_step(many, steps, warmup, threads))
        for (name, format), (single, many) in times.items():
            one, all_ = float(np.median(single)), float(np.median(many))
            rows.append({"architecture": name, "format": format, "member_ms": one, "committee_ms": all_,
                         "ratio": all_ / one, "members": members})  # fmt: skip
    return rows


def format_rows(rows: list, threads: int) -> str:
    lines = [f"ASE VelocityVerlet MD of ethanol, {threads} torch thread(s): ms/step, median of interleaved rounds"]
    lines.append(f"{'architecture':<12} {'format':<12} {'1 member':>9} {'committee':>10} {'ratio':>6}")
    for r in rows:
        lines.append(
            f"{r['architecture']:<12} {r['format']:<12} {r['member_ms']:>9.2f} {r['committee_ms']:>10.2f} "
            f"{r['ratio']:>5.2f}x  ({r['members']} members; goal <= 2x for 4)"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--architectures", nargs="+", default=["tensornet", "painn"])
    parser.add_argument("--formats", nargs="+", default=["torchscript"], choices=sorted(SUFFIX))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args.architectures, args.members, args.steps, 20, args.rounds, args.threads, args.formats)
    print(format_rows(rows, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
