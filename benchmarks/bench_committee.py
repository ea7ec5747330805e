"""What a committee costs in MD: ASE ms/step of a committee of N in one exported file against one member.

For each architecture (64 features, 2 interactions, 20 radial functions, 5 angstrom, float64 as exported for MD),
one member and a committee of ``--members`` (default 4) members built from it (other seeds; the committee stacks
their layers, ``physml_md.models.stacking``) are exported to temporary files (TorchScript, and AOTInductor with
``--formats``); ASE VelocityVerlet MD of ethanol (0.5 fs) runs with each, interleaved over ``--rounds`` rounds, 1
torch thread by default; the table gives the median ms/step and committee/member (the goal: <= 2 for 4 members).
Weights are random: the cost of a step does not depend on them.

    .venv/bin/python benchmarks/bench_committee.py [--members 4] [--steps 200] [--formats torchscript aotinductor]
        [--with-loop]   # also the members one after the other, as a committee of unstackable models runs them
"""

from __future__ import annotations

import argparse
import copy
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
    with_loop: bool = False,
) -> list:
    """Rows: architecture, format, member ms/step, committee ms/step, ratio; with_loop adds the committee whose
    members run one after the other (loop_ms, loop_ratio; the fallback for energy models that cannot be stacked)."""
    sizes = dict(SIZES, **(sizes or {}))
    rows = []
    kinds = ["single", "committee", "loop"] if with_loop else ["single", "committee"]
    with tempfile.TemporaryDirectory() as folder:
        files = {}
        for name in architectures:
            models = [build_model(name, species=["H", "C", "O"], seed=seed, **sizes).eval() for seed in range(members)]
            looped = copy.deepcopy(models)
            for model in looped:
                model.energy_model.stackable = False
            modules = {"single": models[0], "committee": Committee(models), "loop": Committee(looped)}
            for format in formats:
                for kind in kinds:
                    path = Path(folder) / f"{name}-{kind}{SUFFIX[format]}"
                    files[name, format, kind] = export_potential(modules[kind], path, format=format)
        times = {key: [] for key in files}
        for _ in range(rounds):  # interleaved: load on the machine touches every contender alike
            for key, path in files.items():
                times[key].append(ms_per_step(path, steps, warmup, threads))
        for name in architectures:
            for format in formats:
                ms = {kind: float(np.median(times[name, format, kind])) for kind in kinds}
                row = {"architecture": name, "format": format, "member_ms": ms["single"], "members": members}
                row.update(committee_ms=ms["committee"], ratio=ms["committee"] / ms["single"])
                if with_loop:
                    row.update(loop_ms=ms["loop"], loop_ratio=ms["loop"] / ms["single"])
                rows.append(row)
    return rows


def format_rows(rows: list, threads: int) -> str:
    lines = [f"ASE VelocityVerlet MD of ethanol, {threads} torch thread(s): ms/step, median of interleaved rounds"]
    lines.append(f"{'architecture':<12} {'format':<12} {'1 member':>9} {'committee':>10} {'ratio':>6}")
    for r in rows:
        loop = f"; members in a loop {r['loop_ms']:.2f} ms, {r['loop_ratio']:.2f}x" if "loop_ms" in r else ""
        lines.append(
            f"{r['architecture']:<12} {r['format']:<12} {r['member_ms']:>9.2f} {r['committee_ms']:>10.2f} "
            f"{r['ratio']:>5.2f}x  ({r['members']} members; goal <= 2x for 4{loop})"
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
    parser.add_argument(
        "--with-loop", action="store_true", help="also a committee whose members run one after the other (unstacked)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(
        args.architectures, args.members, args.steps, 20, args.rounds, args.threads, args.formats, None, args.with_loop
    )
    print(format_rows(rows, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
