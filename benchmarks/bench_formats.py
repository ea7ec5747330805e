"""The exported file's formats side by side: eager, TorchScript, torch.export and AOTInductor, in ASE and OpenMM.

One model (``--model``, default TensorNet of build_model's default size: 64 features, 2 interactions, 20 radial
functions, 5 angstrom cutoff) for Cu, in each ``--dtypes``, is written in every format of
``physml_md.export.FORMATS``; "eager" is the Potential itself, uncompiled. For rattled fcc Cu supercells of
about 64, 512 and 4 096 atoms (``--sizes``) each contender runs, interleaved round-robin (medians after a
warm-up):
  ase     one ``atoms.get_forces()`` through PhysMLCalculator, after moving every atom by -1e-6 / +1e-6
          angstrom in turn (the calculator's cache cannot answer);
  openmm  one step of OpenMM's VerletIntegrator (CPU platform) whose only force is the potential through
          OpenMM's PythonForce (the backend that reads every format).
Ratios are to TorchScript (the .pt file of today). The time to write each file is printed too (AOTInductor
compiles C++: a minute or more).

    .venv/bin/python benchmarks/bench_formats.py [--sizes 64 512 4096] [--dtypes float32 float64] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_neighbors import copper_supercell, median_ms  # noqa: E402

try:
    from physml_md import PhysMLCalculator, export_potential
    from physml_md.export import FORMATS, ExportedPotential
    from physml_md.export.metadata import build_metadata
    from physml_md.integrations.openmm import create_force
    from physml_md.integrations.openmm_topology import topology_from_atoms
    from physml_md.models import build_model
except ImportError:  # a checkout that was not `pip install -e`d
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from physml_md import PhysMLCalculator, export_potential
    from physml_md.export import FORMATS, ExportedPotential
    from physml_md.export.metadata import build_metadata
    from physml_md.integrations.openmm import create_force
    from physml_md.integrations.openmm_topology import topology_from_atoms
    from physml_md.models import build_model

import openmm  # noqa: E402  (after torch)
from openmm import unit  # noqa: E402

CONTENDERS = ("eager", *FORMATS)
DISPLACEMENT = 1e-6  # angstrom
WARMUP = 3  # calls of each contender before timing


def write_files(model, folder: Path) -> tuple[dict, dict]:
    """Every contender as something the engines take, and the seconds each file took to write."""
    contenders = {"eager": ExportedPotential(module=model, metadata=build_metadata(model))}
    seconds = {}
    for format in FORMATS:
        path = folder / f"model-{format}{'.pt' if format == 'torchscript' else '.pt2'}"
        start = time.perf_counter()
        export_potential(model, path, format=format)
        seconds[format] = time.perf_counter() - start
        contenders[format] = path
    return contenders, seconds


def ase_call(atoms, calculator):
    """One force call through the calculator, on positions it has not seen."""
    state = {"sign": 1.0}

    def call():
        atoms.positions[:, 0] += state["sign"] * DISPLACEMENT
        state["sign"] = -state["sign"]
        calculator.calculate(atoms, ["energy", "forces"])

    return call


def openmm_step(model, atoms, threads: int):
    topology, positions = topology_from_atoms(atoms)
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(create_force(model, atoms.numbers, periodic=True, backend="pythonforce"))
    integrator = openmm.VerletIntegrator(0.5 * unit.femtosecond)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": str(threads)})
    context.setPositions(positions * unit.nanometer)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    return context, partial(integrator.step, 1)


def check_agreement(contenders: dict, atoms) -> float:
    """The largest force difference of any format to the eager model on ``atoms`` (rattled), relative to the
    largest force."""
    atoms.rattle(0.05, seed=1)
    forces = {}
    for name, model in contenders.items():
        atoms.calc = PhysMLCalculator(model)
        forces[name] = atoms.get_forces().copy()
    scale = np.abs(forces["eager"]).max()
    return max(np.abs(value - forces["eager"]).max() / scale for value in forces.values())


def run(model_name="tensornet", sizes=(64, 512, 4096), dtypes=("float32", "float64"), threads=None, repeats=None):
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    rows, writes = [], {}
    for dtype in dtypes:
        torch.manual_seed(0)
        model = build_model(model_name, species=["Cu"], cutoff=5.0, dtype=dtype).eval()
        with tempfile.TemporaryDirectory() as folder:
            contenders, writes[dtype] = write_files(model, Path(folder))
            agreement = check_agreement(contenders, copper_supercell(64))
            for size in sizes:
                atoms = copper_supercell(size)
                atoms.rattle(0.05, seed=size)
                functions, keep = {}, []
                for name, source in contenders.items():
                    calculator = PhysMLCalculator(source, num_threads=threads)
                    functions[f"ase {name}"] = ase_call(atoms.copy(), calculator)
                    context, step = openmm_step(source, atoms, threads)
                    keep.append(context)
                    functions[f"openmm {name}"] = step
                count = repeats or (9 if len(atoms) < 2000 else 3)
                for _ in range(WARMUP - 1):  # TorchScript's profiling executor optimises after its first calls
                    for function in functions.values():
                        function()
                ms = median_ms(functions, count)  # (one more warm-up call each)
                rows.append({"dtype": dtype, "atoms": len(atoms), "repeats": count, "agreement": agreement, **ms})
                print(format_row(rows[-1]), flush=True)
    return {"model": model_name, "threads": threads, "rows": rows, "write_s": writes}


def format_row(row: dict) -> str:
    cells = [f"{row['dtype']:>8} {row['atoms']:>6}"]
    for engine in ("ase", "openmm"):
        base = row[f"{engine} torchscript"]
        for name in CONTENDERS:
            cells.append(f"{row[f'{engine} {name}']:>9.2f} ({row[f'{engine} {name}'] / base:4.2f}x)")
    return " ".join(cells)


def format_table(result: dict) -> str:
    names = " ".join(f"{name:>17}" for name in CONTENDERS)
    header = f"{'dtype':>8} {'atoms':>6} ase ms/call: {names} | openmm ms/step: {names}"
    lines = [
        f"{result['model']}, {result['threads']} torch threads; (ratio to torchscript); medians, interleaved",
        header,
        "-" * len(header),
    ]
    lines += [format_row(row) for row in result["rows"]]
    lines.append("")
    for dtype, seconds in result["write_s"].items():
        written = ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items())
        agreement = next(row["agreement"] for row in result["rows"] if row["dtype"] == dtype)
        lines.append(f"{dtype}: time to write the file: {written}; largest force difference to eager {agreement:.1e}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tensornet")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512, 4096])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    result = run(args.model, args.sizes, args.dtypes, args.threads, args.repeats)
    print()
    print(format_table(result))


if __name__ == "__main__":
    main()
