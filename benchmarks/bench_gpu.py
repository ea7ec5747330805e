"""The GPU against the CPU of the same machine, side by side in one run (needs a CUDA device).

Model: one potential call (energy, forces, stress: forward + backward, neighbour list inside, as the exported file
does in every engine) of every architecture of ``build_model``'s default size (5 angstrom cutoff) on rattled fcc Cu
supercells, in float32 and float64: median wall time on the GPU (synchronised), peak GPU memory
(``torch.cuda.max_memory_allocated``), and the same call on the CPU with all the machine's cores up to a size
where the CPU still answers in a few seconds; cpu/gpu is the speed-up.

ASE: ms per ``get_forces`` of ``PhysMLCalculator`` on the exported TorchScript file (each call after a 1e-6 angstrom
move, so the cache cannot answer), on ethanol (9 atoms: launch overhead dominates) and on Cu, GPU beside CPU.

    python benchmarks/bench_gpu.py                   # everything (sized for a few minutes on an H100; not yet run)
    python benchmarks/bench_gpu.py --quick           # 1 000 and 4 000 atoms, float32 only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from ase.build import molecule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_neighbors import copper_supercell  # noqa: E402

try:
    from physml_md import PhysMLCalculator, export_potential
    from physml_md.data.structures import LabelKeys, atoms_to_dict
    from physml_md.models import MODEL_NAMES, build_model
except ImportError:  # a checkout that was not `pip install -e`d
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from physml_md import PhysMLCalculator, export_potential
    from physml_md.data.structures import LabelKeys, atoms_to_dict
    from physml_md.models import MODEL_NAMES, build_model

CUTOFF = 5.0
NO_LABELS = LabelKeys(None, None, None, None, None, None)
CPU_MAX_ATOMS = 4000  # the CPU column stops here: larger cells take tens of seconds a call on the CPU


def _time_ms(call, device: str, repeats: int) -> float:
    call()  # warm-up (allocator, kernels)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _on_gpu(model, data, repeats: int):
    """(median ms, peak MB) of the call on the GPU; (None, None) when it does not fit. The model is left on the CPU."""
    gpu_model = model.to("cuda")
    gpu_data = {key: value.to("cuda") for key, value in data.items()}
    torch.cuda.reset_peak_memory_stats()
    try:
        return _time_ms(lambda: gpu_model(gpu_data), "cuda", repeats), torch.cuda.max_memory_allocated() / 2**20
    except torch.OutOfMemoryError:
        return None, None
    finally:
        model.to("cpu")
        torch.cuda.empty_cache()


def model_row(arch: str, atoms: int, dtype: str, repeats: int) -> dict:
    structure = copper_supercell(atoms)
    structure.rattle(0.02, seed=0)
    model = build_model(arch, species=["Cu"], cutoff=CUTOFF, dtype=dtype, seed=0).eval()
    data = atoms_to_dict(structure, NO_LABELS, getattr(torch, dtype))
    row = {"arch": arch, "atoms": len(structure), "dtype": dtype, "cpu_ms": None}
    row["gpu_ms"], row["gpu_mb"] = _on_gpu(model, data, repeats)
    if len(structure) <= CPU_MAX_ATOMS:
        row["cpu_ms"] = _time_ms(lambda: model(data), "cpu", max(1, repeats // 3))
    return row


def ase_row(system: str, device: str, path: Path, repeats: int) -> float:
    atoms = molecule("CH3CH2OH") if system == "ethanol" else copper_supercell(int(system.split()[1]))
    atoms.calc = PhysMLCalculator(path, device=device)
    sign = [1.0]

    def call():
        atoms.positions[0, 0] += sign[0] * 1e-6
        sign[0] = -sign[0]
        atoms.get_forces()

    return _time_ms(call, "cpu", repeats)  # the calculator returns numpy: already synchronised


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000, 32000])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--arch", nargs="+", default=list(MODEL_NAMES))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="1 000 and 4 000 atoms, float32")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device; none is visible to torch here")
    if args.quick:
        args.sizes, args.dtypes = [1000, 4000], ["float32"]
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    print("\n| arch | atoms | dtype | GPU ms | GPU peak MB | CPU ms | CPU/GPU |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for arch in args.arch:
        for dtype in args.dtypes:
            for size in args.sizes:
                row = model_row(arch, size, dtype, args.repeats)
                ratio = row["cpu_ms"] / row["gpu_ms"] if row["cpu_ms"] and row["gpu_ms"] else None
                print(
                    f"| {arch} | {row['atoms']} | {dtype} | {_fmt(row['gpu_ms'], '.1f')} | {_fmt(row['gpu_mb'], '.0f')}"
                    f" | {_fmt(row['cpu_ms'], '.1f')} | {_fmt(ratio, '.1f')} |",
                    flush=True,
                )
    print("\nASE get_forces (TorchScript file, float32)\n| arch | system | GPU ms | CPU ms | CPU/GPU |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for arch in args.arch:
            model = build_model(arch, species=["H", "C", "O", "Cu"], cutoff=CUTOFF, dtype="float32", seed=0)
            path = export_potential(model, Path(folder) / f"{arch}.pt")
            for system in ("ethanol", "Cu 4000"):
                gpu = ase_row(system, "cuda", path, args.repeats)
                cpu = ase_row(system, "cpu", path, max(1, args.repeats // 3))
                print(f"| {arch} | {system} | {gpu:.2f} | {cpu:.2f} | {cpu / gpu:.1f} |", flush=True)


if __name__ == "__main__":
    main()
