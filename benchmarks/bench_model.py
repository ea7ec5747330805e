"""Time and peak memory of one potential call (energy, forces, stress: forward + backward) for every architecture.

For each architecture in ``physml_md.models.MODEL_NAMES`` (``build_model``'s default size, 5 angstrom cutoff),
plus the reference PaiNN that tests/models/reference_painn.py keeps (the plain formulation from before PaiNN
was optimised, loaded with the same weights: row "painn (reference)"; ``--reference tensornet`` or
``--reference painn tensornet`` measures tests/models/reference_tensornet.py likewise), on fcc Cu supercells
of about 1 000, 4 000 and 16 000 atoms (rattled, fully periodic), in float32 and float64: the median wall time
of the full ``Potential`` call (neighbour list computed inside, as the exported file does in every engine; eval
mode, so no graph is kept for a second derivative), its CPU time (all threads) and its peak memory. ``--train`` times
the training step's model part instead: the call in training mode and the backward pass of a force loss to
the parameters, through the graph of the forces (create_graph).

Every configuration runs in a fresh subprocess, so that one configuration's allocations (or the allocator's
cache) cannot hide another's peak. The subprocess builds the model and the input, makes one warm-up call,
returns freed memory to the system (glibc ``malloc_trim``), resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), then makes the timed calls: peak = max RSS (VmHWM, the ru_maxrss of this process
image) during the timed calls - RSS before them. Where the counter cannot be reset the warm-up call is measured
instead (max RSS after it - RSS before).
The subprocess's address space is capped (``RLIMIT_AS``: ``--memory-limit-gb`` above what it holds before the
first call; default 80 % of the memory available when the run starts), so a configuration that does not fit
reports "out of memory" instead of waking the kernel's OOM killer. Beside each row with a reference row, the
ratios arch / arch (reference) of time and peak memory, measured one after the other in the same run.

Timings on a machine that other jobs use are meaningless, and with two threads the more so the more (small)
operations a call has: each operation ends when both threads have done their share, and by default OpenMP's
waiting threads spin, taking the cores that the other jobs and the late thread need (measured here under a load
of about 4 on 2 cores, PaiNN at 4 000 atoms, float64: 23 s a call with spinning, 3.0 s with
``OMP_WAIT_POLICY=PASSIVE``; the reference 13.5 s and 9.8 s). ``--wait-policy passive`` sets that variable for
the measuring subprocesses. The table ends with the load average.

    python benchmarks/bench_model.py                                   # everything (~30 min on 2 busy cores)
    python benchmarks/bench_model.py --sizes 1000 --dtypes float64 --arch painn --repeats 3     # a quick look
    python benchmarks/bench_model.py --sizes 4000 --arch tensornet --reference tensornet --wait-policy passive
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_neighbors import copper_supercell  # noqa: E402

try:
    from physml_md.data.neighbors import batch_neighbor_list
    from physml_md.data.structures import LabelKeys, atoms_to_dict
    from physml_md.models import MODEL_NAMES, build_model
except ImportError:  # a checkout that was not `pip install -e`d
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from physml_md.data.neighbors import batch_neighbor_list
    from physml_md.data.structures import LabelKeys, atoms_to_dict
    from physml_md.models import MODEL_NAMES, build_model

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "tests" / "models"
REFERENCE = "painn (reference)"
# the plain formulations kept as test references (tests/models/reference_<arch>.py), by architecture: row names
REFERENCES = {"painn": REFERENCE, "tensornet": "tensornet (reference)"}
DEFAULT_REFERENCES = ("painn",)  # measured unless asked otherwise (TensorNet's plain one is slow and large)
CUTOFF = 5.0
NO_LABELS = LabelKeys(None, None, None, None, None, None)


def architectures(archs=None, reference: bool = True, references=DEFAULT_REFERENCES) -> list:
    """The architectures asked for (default: every one in ``MODEL_NAMES``), then, when ``reference``, the plain
    formulation of each of them that is in ``references`` (architecture names; see ``REFERENCES``)."""
    for names, what in ((archs, "architecture"), (references, "reference")):
        unknown = [name for name in names or () if name not in (MODEL_NAMES if what == "architecture" else REFERENCES)]
        if unknown:
            available = MODEL_NAMES if what == "architecture" else tuple(REFERENCES)
            raise ValueError(f"unknown {what}(s) {unknown}; available: {', '.join(available)}")
    names = [name for name in MODEL_NAMES if archs is None or name in archs]
    if reference:
        names += [REFERENCES[name] for name in list(names) if name in references]
    return names


def _base_arch(arch: str) -> str:
    """The architecture of a row name: "painn" for "painn (reference)"."""
    return next((name for name, row in REFERENCES.items() if row == arch), arch)


# ---------------------------------------------------------------- inside the subprocess


def _statm_bytes(field: int) -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[field]) * os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    return _statm_bytes(1)


def _max_rss_bytes() -> int:
    """Peak RSS of this process image: VmHWM. (ru_maxrss would do, but on Linux it also holds the RSS that the
    parent had when it forked this process, recorded at exec, and clear_refs does not reset that.)"""
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _release_free_memory() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _max_rss_bytes() <= _rss_bytes() + (1 << 20)


def reference_model(model):
    """The plain formulation of ``model``'s architecture (tests/models/reference_<name>.py) with the weights of
    its energy model."""
    h = model.hyperparameters
    name = h["name"]
    spec = importlib.util.spec_from_file_location(f"reference_{name}", REFERENCE_DIR / f"reference_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    optimised = model.energy_model
    reference = getattr(module, type(optimised).__name__)(
        len(h["species"]),
        h["cutoff"],
        features=h["features"],
        n_interactions=h["n_interactions"],
        n_rbf=h["n_rbf"],
        n_outputs=optimised.n_outputs,
    )
    reference.load_state_dict(optimised.state_dict())
    return reference.to(next(optimised.parameters()).dtype)


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or "allocate" in text or "out of memory" in text


def _count_edges(model, data) -> int:
    positions = data["positions"].to(model.shift.dtype)
    edge_index, _ = batch_neighbor_list(positions, data["cell"], data["pbc"], data["n_atoms"], model.cutoff)
    return int(edge_index.shape[1])


def measure(
    arch: str, atoms: int, dtype: str, repeats: int, threads: int, memory_limit_bytes: int | None, train=False
) -> dict:
    """One configuration, measured in this process (run it in a fresh one: see ``run``)."""
    torch.set_num_threads(threads)
    structure = copper_supercell(atoms)
    structure.rattle(0.02, seed=0)
    model = build_model(_base_arch(arch), species=["Cu"], cutoff=CUTOFF, dtype=dtype, seed=0)
    if arch != _base_arch(arch):
        model.energy_model = reference_model(model)
    model.train(train)
    data = atoms_to_dict(structure, NO_LABELS, getattr(torch, dtype))
    row = {"arch": arch, "atoms": len(structure), "edges": _count_edges(model, data), "dtype": dtype}
    row.update({"threads": threads, "repeats": repeats, "train": train, "ms": None, "cpu_ms": None})
    row.update({"peak_mb": None, "oom": False})

    def call():
        out = model(data)
        if train:
            out["forces"].pow(2).sum().backward()

    if memory_limit_bytes is not None:
        limit = _statm_bytes(0) + memory_limit_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        _release_free_memory()
        before = _rss_bytes()
        call()  # warm-up
        warm_peak = _max_rss_bytes() - before
        _release_free_memory()
        resettable = _reset_peak()
        before = _rss_bytes()
        times, cpu_times = [], []
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            call()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    except (RuntimeError, MemoryError) as error:
        if not _is_out_of_memory(error):
            raise
        row["oom"] = True
        return row
    row["ms"] = 1e3 * statistics.median(times)
    row["cpu_ms"] = 1e3 * statistics.median(cpu_times)
    row["peak_mb"] = ((_max_rss_bytes() - before) if resettable else warm_peak) / 2**20
    row["peak_from"] = "timed calls" if resettable else "warm-up call"
    return row


# ---------------------------------------------------------------- the driver


def _available_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def measure_in_subprocess(
    arch: str,
    atoms: int,
    dtype: str,
    repeats: int,
    threads: int,
    memory_limit_bytes: int,
    train=False,
    wait_policy: str | None = None,
) -> dict:
    spec = {"arch": arch, "atoms": atoms, "dtype": dtype, "repeats": repeats, "threads": threads}
    spec.update({"memory_limit_bytes": memory_limit_bytes, "train": train})
    env = dict(os.environ)
    if wait_policy is not None:
        env["OMP_WAIT_POLICY"] = wait_policy.upper()
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    how = f"was killed by signal {-done.returncode}" if done.returncode < 0 else f"failed (exit {done.returncode})"
    raise RuntimeError(f"{arch}, {atoms} atoms, {dtype}: the measuring subprocess {how}:\n{done.stderr[-3000:]}")


def run(
    sizes=(1000, 4000, 16000),
    dtypes=("float32", "float64"),
    archs=None,
    reference: bool = True,
    references=DEFAULT_REFERENCES,
    repeats: int = 5,
    threads: int = 2,
    memory_limit_gb: float | None = None,
    train: bool = False,
    wait_policy: str | None = None,
) -> list:
    """One row per (size, dtype, architecture), each measured in its own subprocess; sizes are target atom
    counts (the nearest fcc Cu supercell is used). Above 5 000 atoms half the repeats (at least 2) are timed.
    A configuration that does not fit under the address-space cap comes back with ``oom`` True.
    ``wait_policy`` ("passive" or "active") sets OMP_WAIT_POLICY for the subprocesses (None: as inherited).
    ``references``: the architectures whose plain formulation is measured beside them (when ``reference``)."""
    names = architectures(archs, reference, references)
    limit = int((memory_limit_gb * 2**30) if memory_limit_gb is not None else 0.8 * _available_bytes())
    rows = []
    for target in sizes:
        n_repeats = repeats if target < 5000 else max(2, repeats // 2)
        for dtype in dtypes:
            for name in names:
                row = measure_in_subprocess(name, target, dtype, n_repeats, threads, limit, train, wait_policy)
                row["wait_policy"] = (
                    os.environ.get("OMP_WAIT_POLICY", "default") if wait_policy is None else wait_policy
                )
                rows.append(row)
    return rows


def find(rows, arch: str, atoms: int, dtype: str) -> dict | None:
    """The row of one configuration (atoms: the actual count, or the target count the row was made for)."""
    for row in rows:
        if row["arch"] == arch and row["dtype"] == dtype and atoms in (row["atoms"], row.get("target")):
            return row
    return None


def reference_ratios(rows, arch: str = "painn") -> list:
    """(atoms, dtype, time ratio, memory ratio) arch / arch (reference) for every size and dtype with both."""
    ratios = []
    for row in rows:
        ref = find(rows, REFERENCES[arch], row["atoms"], row["dtype"]) if row["arch"] == arch else None
        if ref is not None and not row["oom"] and not ref["oom"]:
            ratios.append((row["atoms"], row["dtype"], row["ms"] / ref["ms"], row["peak_mb"] / ref["peak_mb"]))
    return ratios


def format_table(rows) -> str:
    threads = ", ".join(map(str, sorted({row["threads"] for row in rows})))
    policy = ", ".join(sorted({row.get("wait_policy", "default").lower() for row in rows}))
    what = "training step (call + force-loss backward to the parameters)" if rows[0].get("train") else "call"
    header = (
        f"{'atoms':>6} {'edges':>8} {'dtype':>8}  {'model':<18} {'ms':>9} {'cpu ms':>9} {'peak MB':>9}"
        f" {'ms / ref':>9} {'MB / ref':>9}"
    )
    lines = [
        f"Potential {what}: energy, forces, stress; fcc Cu, {CUTOFF} A cutoff, torch threads {threads}, "
        f"OMP_WAIT_POLICY {policy}",
        "ms: median wall time; cpu ms: process CPU time (all threads); peak MB: max RSS during the call - RSS",
        "before it; ref: the architecture's plain formulation (its reference row), measured in the same run",
        header,
        "-" * len(header),
    ]
    ratios = {
        (arch, atoms, dtype): (t, m) for arch in REFERENCES for atoms, dtype, t, m in reference_ratios(rows, arch)
    }
    for row in rows:
        start = f"{row['atoms']:>6} {row['edges']:>8} {row['dtype']:>8}  {row['arch']:<18}"
        if row["oom"]:
            lines.append(f"{start} {'out of memory':>19}")
            continue
        line = f"{start} {row['ms']:>9.1f} {row['cpu_ms']:>9.1f} {row['peak_mb']:>9.1f}"
        if (row["arch"], row["atoms"], row["dtype"]) in ratios:
            line += " {:>9.3f} {:>9.3f}".format(*ratios[(row["arch"], row["atoms"], row["dtype"])])
        lines.append(line)
    repeats = sorted({(row["atoms"], row["repeats"]) for row in rows})
    lines.append("timed calls (median reported) per size: " + ", ".join(f"{a}: {r}" for a, r in repeats))
    if any(row.get("peak_from") == "warm-up call" for row in rows):
        lines.append("peak RSS could not be reset here: the peaks are those of the warm-up calls")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    lines.append(f"torch {torch.__version__}; load average at the end {load} (1, 5, 15 min; {os.cpu_count()} cores)")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000], help="target atom counts")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--arch", nargs="+", default=None, help=f"architectures (default: all of {MODEL_NAMES})")
    parser.add_argument(
        "--reference",
        nargs="+",
        default=list(DEFAULT_REFERENCES),
        choices=list(REFERENCES),
        help="architectures measured beside their plain formulation (tests/models/reference_<arch>.py); default: painn",
    )
    parser.add_argument("--no-reference", action="store_true", help="leave out every reference row")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per configuration (half above 5k atoms)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--memory-limit-gb", type=float, default=None, help="address-space cap per configuration")
    parser.add_argument("--train", action="store_true", help="time the training step's model part instead")
    parser.add_argument(
        "--wait-policy", choices=["passive", "active"], default=None, help="OMP_WAIT_POLICY for the measurements"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        row = measure(
            spec["arch"],
            spec["atoms"],
            spec["dtype"],
            spec["repeats"],
            spec["threads"],
            spec["memory_limit_bytes"],
            spec["train"],
        )
        row["target"] = spec["atoms"]
        print(json.dumps(row))
        return
    rows = run(
        sizes=tuple(args.sizes),
        dtypes=tuple(args.dtypes),
        archs=args.arch,
        reference=not args.no_reference,
        references=tuple(args.reference),
        repeats=args.repeats,
        threads=args.threads,
        memory_limit_gb=args.memory_limit_gb,
        train=args.train,
        wait_policy=args.wait_policy,
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
