"""Data beyond memory: pack time, disk size, training throughput and peak memory, packed folder vs in-memory.

For each size, synthetic 32-atom Cu cells (fcc 2x2x2, rattled; random energies, forces and stress: synthetic
labels, fine for time and memory) are written to an extxyz file, packed (``physml_md.data.packed.writer``; with
the neighbour lists at ``--neighbor-cutoff``, default the model's cut-off; 0: none, computed in the workers), and
trained on for
``--steps`` optimizer steps of a small PaiNN (a plain torch loop: forward, energy + force loss, backward, Adam) from
``AtomsDataModule``'s training loader: once from the packed folder with each ``--workers`` count of DataLoader
workers, and once from the extxyz (today's in-memory path: every structure and its neighbour list in RAM) for the
sizes up to ``--in-memory-max``. Every measurement runs in a fresh process, so its peak RSS (``ru_maxrss``) is its
own: ``rss_mb`` is the main process's, ``worker_rss_mb`` the largest DataLoader worker's. Throughput counts the
structures of the timed steps (after ``--warmup`` steps) per second; ``setup_s`` is the time to read, split and (in
memory) precompute neighbour lists.

Sizes above ``--pack-max`` are not written and packed: their folder links the chunk files of the largest packed
size that divides them (hard links; its structures repeated), which is what reading and memory depend on. Their
pack time is the packed size's times the ratio (packing streams chunk by chunk).

    python benchmarks/bench_data.py --sizes 10000 --steps 60 --workers 1 2
    python benchmarks/bench_data.py --sizes 10000 100000 1000000 --pack-max 10000   # 10^5, 10^6: linked chunks
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

try:
    from physml_md.atomic_write import atomic_write_text, check_outputs
except ImportError:  # a checkout that was not `pip install -e`d
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from physml_md.atomic_write import atomic_write_text, check_outputs

ATOMS = 32
CUTOFF = 4.0
_WRITE_BATCH = 1000


def make_data(path: Path, n_structures: int, seed: int = 0) -> Path:
    """``n_structures`` rattled Cu32 cells with synthetic labels, written to the extxyz file ``path``."""
    import ase.io
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    with open(path, "w") as handle:
        for start in range(0, n_structures, _WRITE_BATCH):
            frames = []
            for _ in range(min(_WRITE_BATCH, n_structures - start)):
                atoms = base.copy()
                atoms.positions += rng.normal(scale=0.1, size=(ATOMS, 3))
                forces, stress = rng.normal(size=(ATOMS, 3)), rng.normal(scale=0.01, size=6)
                atoms.calc = SinglePointCalculator(atoms, energy=-100.0 + rng.normal(), forces=forces, stress=stress)
                frames.append(atoms)
            ase.io.write(handle, frames, format="extxyz")
    return path


def link_replicas(source: Path, target: Path, n_structures: int) -> Path:
    """A packed folder of ``n_structures`` made of hard links to the chunks of ``source`` (its structures repeated;
    ``n_structures`` a multiple of its count): a large set to train on without packing it (its pack time is not
    measured, only its reading)."""
    from physml_md.data.packed.folder import PackedFolder

    folder = PackedFolder(source)
    copies, rest = divmod(n_structures, len(folder))
    if rest or copies < 1:
        raise ValueError(f"{n_structures} structures are not a multiple of the {len(folder)} in {source}")
    manifest = dict(folder.manifest)
    chunks = []
    target.mkdir()
    for _ in range(copies):
        for record in folder.manifest["chunks"]:
            name = f"chunk-{len(chunks):06d}"
            (target / name).mkdir()
            for filename in record["files"]:
                os.link(source / record["name"] / filename, target / name / filename)
            chunks.append({**record, "name": name})
    manifest["chunks"] = chunks
    summary = dict(manifest["summary"])
    for key in ("n_structures", "n_atoms", "n_periodic", "n_force_components"):
        summary[key] *= copies
    summary["label_counts"] = {k: v * copies for k, v in summary["label_counts"].items()}
    manifest["summary"] = summary
    atomic_write_text(target / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return target


def _peak_rss_mb(workers: int = 0) -> Dict[str, float]:
    """Peak RSS of this process, and of its largest child when it had DataLoader workers (without workers a child is
    no worker: under torch 2.14 a worker-less run had a child of about 430 MB, source not identified)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0 if workers > 0 else 0.0
    return {"rss_mb": round(own, 1), "worker_rss_mb": round(children, 1)}


def _pack_job(spec: Dict[str, Any]) -> Dict[str, Any]:
    from physml_md.data.packed.writer import pack
    from physml_md.data.structures import LabelKeys

    start = time.perf_counter()
    keys = LabelKeys(charges=None, total_charge=None, dipole=None)
    pack([spec["data"]], spec["folder"], keys, neighbor_cutoff=spec.get("neighbor_cutoff") or None)
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in Path(spec["folder"]).rglob("*") if f.is_file())
    return {"pack_s": round(seconds, 2), "disk_mb": round(size / 1e6, 2), **_peak_rss_mb()}


def _train_job(spec: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    from physml_md.data import keys as K
    from physml_md.models import build_model
    from physml_md.training.datamodule import AtomsDataModule

    torch.set_num_threads(spec["threads"])
    start = time.perf_counter()
    datamodule = AtomsDataModule(
        source=spec["source"],
        cut_off=CUTOFF,
        num_workers=spec["workers"],
        train={"batch_size": spec["batch_size"]},
        splitting_strategy={"data_split": [0.9, 0.05, 0.05]},
    )
    datamodule.setup("fit")
    self_energies = datamodule.self_energies()
    setup_s = time.perf_counter() - start
    model = build_model(
        species=datamodule.species(),
        cutoff=CUTOFF,
        features=spec.get("features", 16),
        n_interactions=spec.get("interactions", 1),
        n_rbf=8,
        self_energies=self_energies,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = datamodule.train_dataloader()
    loader.set_epoch(0)
    structures, timed_from = 0, None
    for step, batch in enumerate(loader):
        if step == spec["warmup"]:
            timed_from = time.perf_counter()
        if step >= spec["warmup"] + spec["steps"]:
            break
        optimizer.zero_grad(set_to_none=True)
        out = model(batch)
        loss = ((out[K.ENERGY] - batch[K.ENERGY]) ** 2).mean() + ((out[K.FORCES] - batch[K.FORCES]) ** 2).mean()
        loss.backward()
        optimizer.step()
        if step >= spec["warmup"]:
            structures += int(batch[K.N_ATOMS].numel())
    seconds = time.perf_counter() - timed_from
    del loader  # its workers end (and are counted in RUSAGE_CHILDREN)
    gc.collect()
    return {
        "setup_s": round(setup_s, 2),
        "structures_per_s": round(structures / seconds, 1),
        "timed_structures": structures,
        **_peak_rss_mb(spec["workers"]),
    }


def _in_subprocess(job: str, spec: Dict[str, Any]) -> Dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--job", job, json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{job} job failed: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(
    sizes: Sequence[int],
    steps: int = 60,
    warmup: int = 5,
    batch_size: int = 16,
    workers: Sequence[int] = (1, 2),
    in_memory_max: int = 10_000,
    threads: int = 1,
    pack_max: int = 100_000,
    work_dir: Path | None = None,
    model: Dict[str, int] | None = None,
    neighbor_cutoff: float = CUTOFF,
) -> Dict[str, Any]:
    """The measurements for each size (see the module docstring), as a dict; files go into ``work_dir``."""
    for name, value in (("steps", steps), ("batch_size", batch_size), ("threads", threads)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    model = {"features": 16, "interactions": 1, **(model or {})}
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(work_dir or scratch)
        packed: Dict[int, Path] = {}
        for n in sizes:
            folder = root / f"cu32-{n}.packed"
            train = {"steps": steps, "warmup": warmup, "batch_size": batch_size, "threads": threads, **model}
            row: Dict[str, Any] = {"structures": n}
            data = None
            if n <= pack_max:
                data = root / f"cu32-{n}.extxyz"
                start = time.perf_counter()
                make_data(data, n)
                row.update(write_extxyz_s=round(time.perf_counter() - start, 2))
                row["extxyz_mb"] = round(data.stat().st_size / 1e6, 2)
                spec = {"data": str(data), "folder": str(folder), "neighbor_cutoff": neighbor_cutoff}
                row["pack"] = _in_subprocess("pack", spec)
                packed[n] = folder
            else:
                base = max((m for m in packed if n % m == 0), default=None)
                if base is None:
                    raise ValueError(f"size {n} > pack_max needs a packed size that divides it; got {sorted(packed)}")
                link_replicas(packed[base], folder, n)
                row["linked_from"] = base
            row["packed"] = {
                str(w): _in_subprocess("train", {**train, "source": str(folder), "workers": w}) for w in workers
            }
            if data is not None and n <= in_memory_max:
                row["in_memory"] = _in_subprocess("train", {**train, "source": str(data), "workers": 0})
            rows.append(row)
            if data is not None:
                data.unlink()  # (the largest file; the folder stays for physml-md info when work_dir is set)
    return {"atoms": ATOMS, "cutoff": CUTOFF, "neighbor_cutoff": neighbor_cutoff, "steps": steps,
            "batch_size": batch_size, "threads": threads,
            "model": model, "rows": rows}  # fmt: skip


def format_table(result: Dict[str, Any]) -> str:
    lines = [
        f"{'structures':>10} {'path':<16} {'pack s':>8} {'disk MB':>8} {'setup s':>8} {'struct/s':>9} "
        f"{'RSS MB':>8} {'worker MB':>9}"
    ]
    for row in result["rows"]:
        pack = row.get("pack")
        if pack is None:
            lines.append(
                f"{row['structures']:>10} {'linked chunks':<16} (the {row['linked_from']}-structure set, repeated)"
            )
        else:
            lines.append(f"{row['structures']:>10} {'extxyz':<16} {'':>8} {row['extxyz_mb']:>8.1f}")
            lines.append(
                f"{row['structures']:>10} {'pack':<16} {pack['pack_s']:>8.1f} {pack['disk_mb']:>8.1f} {'':>8} {'':>9} "
                f"{pack['rss_mb']:>8.0f} {'':>9}"
            )
        variants = [(f"packed, {w} worker(s)", r) for w, r in row["packed"].items()]
        if "in_memory" in row:
            variants.append(("in memory", row["in_memory"]))
        for name, r in variants:
            lines.append(
                f"{row['structures']:>10} {name:<16} {'':>8} {'':>8} {r['setup_s']:>8.1f} {r['structures_per_s']:>9.1f}"
                f" {r['rss_mb']:>8.0f} {r['worker_rss_mb']:>9.0f}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000], help="numbers of structures (10000)")
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps per variant (60)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps (5)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DataLoader workers, packed path")
    parser.add_argument("--in-memory-max", type=int, default=10_000, help="largest size trained in memory too")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process (1)")
    parser.add_argument(
        "--pack-max",
        type=int,
        default=100_000,
        help="largest size written and packed; larger sizes link the chunks of a smaller packed size (100000)",
    )
    parser.add_argument("--features", type=int, default=16, help="PaiNN feature channels (16: a data-bound model)")
    parser.add_argument("--interactions", type=int, default=1, help="PaiNN interaction layers (1)")
    parser.add_argument(
        "--neighbor-cutoff", type=float, default=CUTOFF, help=f"neighbour lists stored at pack time ({CUTOFF}; 0: none)"
    )
    parser.add_argument("--work-dir", default=None, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    parser.add_argument("--job", default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.job is not None:  # one measurement, in its own process
        spec = json.loads(rest[0])
        print(json.dumps((_pack_job if args.job == "pack" else _train_job)(spec)))
        return
    if args.out:
        check_outputs([args.out], force=args.force)
    result = run(
        args.sizes, args.steps, args.warmup, args.batch_size, args.workers, args.in_memory_max, args.threads,
        args.pack_max, None if args.work_dir is None else Path(args.work_dir),
        {"features": args.features, "interactions": args.interactions}, args.neighbor_cutoff,
    )  # fmt: skip
    print(format_table(result))
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
