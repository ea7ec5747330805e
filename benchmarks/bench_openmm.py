"""What each OpenMM backend adds to the exported model, measured side by side in one run.

A PaiNN of build_model's default size (64 features, 3 interactions, 20 radial functions, 5 angstrom cutoff) for
Cu, in float64, is exported to a temporary file. On a rattled periodic fcc Cu cell of 500 atoms (the cubic
cell repeated 5 x 5 x 5: the issue's "512-atom periodic system", the nearest fcc count), these contenders run
interleaved round-robin (medians after warm-up):
  bare          the exported module on prebuilt tensors (positions, atomic_numbers, cell, pbc): forward + the
                internal backward for forces (and stress, which the module computes for periodic input);
  torchforce    one VerletIntegrator step (0.5 fs) of an OpenMM Context whose only force is create_force's
                TorchForce (one force evaluation per step);
  pythonforce   the same with OpenMM's PythonForce;
  pythontorchforce  the same with openmm-torch's PythonTorchForce, when the installed openmm-torch has it.
step/bare is what OpenMM and the adapter add per step. The OpenMM platform is CPU (the default on a machine
without a GPU); torch's thread count is set per row (OpenMM's CPU platform threads follow it).

    .venv/bin/python benchmarks/bench_openmm.py [--threads 1 2] [--repeats 15] [--atoms 512]
"""

import argparse
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ase import model_tensors  # noqa: E402
from bench_neighbors import copper_supercell, median_ms  # noqa: E402

try:
    from physml_md import export_potential, load_potential
    from physml_md.integrations.openmm import available_backends, create_force
    from physml_md.integrations.openmm_topology import topology_from_atoms
    from physml_md.models import build_model
except ImportError:  # a checkout that was not `pip install -e`d
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from physml_md import export_potential, load_potential
    from physml_md.integrations.openmm import available_backends, create_force
    from physml_md.integrations.openmm_topology import topology_from_atoms
    from physml_md.models import build_model

import openmm  # noqa: E402  (after torch: openmm-torch's plugins need torch's libraries loaded)
from openmm import unit  # noqa: E402

TIMESTEP_FS = 0.5


def openmm_context(path: Path, atoms, backend: str, platform: str, threads: int):
    """A CPU-platform Context whose only force is the potential (``backend``), at the atoms' positions."""
    topology, positions = topology_from_atoms(atoms)
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(create_force(path, atoms.numbers, periodic=True, backend=backend))
    integrator = openmm.VerletIntegrator(TIMESTEP_FS * unit.femtosecond)
    properties = {"Threads": str(threads)} if platform == "CPU" else {}
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), properties)
    context.setPositions(positions * unit.nanometer)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    return context, integrator


def measure(path: Path, atoms, threads: int, repeats: int, warmup: int, backends, platform: str) -> dict:
    """Median ms of the bare module and of one OpenMM step per backend."""
    potential = load_potential(path)
    data = model_tensors(atoms, potential.dtype)
    functions = {"bare": partial(potential, data)}
    keep = []
    for backend in backends:
        context, integrator = openmm_context(path, atoms, backend, platform, threads)
        keep.append(context)
        functions[backend] = partial(integrator.step, 1)
    for _ in range(warmup):  # TorchScript's profiling executor optimises each module after its first calls
        for function in functions.values():
            function()
    ms = median_ms(functions, repeats)
    row = {"atoms": len(atoms), "threads": threads, "repeats": repeats, "bare_ms": ms["bare"]}
    for backend in backends:
        row[f"{backend}_ms"] = ms[backend]
        row[f"{backend}/bare"] = ms[backend] / ms["bare"]
    return row


def run(
    atoms: int = 512,
    threads=None,
    repeats: int = 15,
    warmup: int = 3,
    backends=None,
    platform: str = "CPU",
    features: int = 64,
    n_interactions: int = 3,
    n_rbf: int = 20,
) -> dict:
    """One row per torch thread count (None: torch's current count); torch's thread count is restored."""
    threads = (torch.get_num_threads(),) if threads is None else tuple(threads)
    if not threads or min(threads) < 1:
        raise ValueError(f"threads must be positive thread counts, got {threads}: e.g. threads=(1, 2)")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    backends = tuple(available_backends() if backends is None else backends)
    unknown = sorted(set(backends) - set(available_backends()))
    if unknown:
        raise ValueError(f"backend(s) {unknown} are not available here; available: {available_backends()}")
    structure = copper_supercell(atoms)
    structure.rattle(0.05, seed=1)
    before = torch.get_num_threads()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = build_model(
                "painn",
                species=["Cu"],
                dtype="float64",
                cutoff=5.0,
                seed=0,
                features=features,
                n_interactions=n_interactions,
                n_rbf=n_rbf,
            )
            path = export_potential(model, Path(tmp) / "cu.pt")
            for n_threads in threads:
                torch.set_num_threads(n_threads)
                rows.append(measure(path, structure, n_threads, repeats, warmup, backends, platform))
    finally:
        torch.set_num_threads(before)
    return {
        "rows": rows,
        "backends": list(backends),
        "platform": platform,
        "model": f"PaiNN, {features} features, {n_interactions} interactions, {n_rbf} rbf, cutoff 5 angstrom, float64",
    }


def format_table(result: dict) -> str:
    backends = result["backends"]
    header = f"{'atoms':>6} {'threads':>7} {'bare ms':>9}" + "".join(
        f" {b + ' ms':>{len(b) + 4}} {b + '/bare':>{len(b) + 6}}" for b in backends
    )
    lines = [
        f"OpenMM step (Verlet, {result['platform']} platform) per backend over the bare exported module "
        f"({result['model']}, periodic fcc Cu)",
        header,
        "-" * len(header),
    ]
    for row in result["rows"]:
        cells = "".join(f" {row[b + '_ms']:>{len(b) + 4}.2f} {row[b + '/bare']:>{len(b) + 6}.3f}" for b in backends)
        lines.append(f"{row['atoms']:>6} {row['threads']:>7} {row['bare_ms']:>9.2f}" + cells)
    lines.append(
        f"torch {torch.__version__}, openmm {openmm.__version__}, {len(os.sched_getaffinity(0))} usable cores; "
        "medians of interleaved calls"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=512, help="target atom count of the fcc Cu cell")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to measure")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per contender")
    parser.add_argument("--platform", default="CPU", choices=["CPU", "Reference"], help="OpenMM platform")
    args = parser.parse_args()
    print(format_table(run(atoms=args.atoms, threads=args.threads, repeats=args.repeats, platform=args.platform)))


if __name__ == "__main__":
    main()
