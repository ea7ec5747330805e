"""physml-md demo (what `make demo` runs): real reference data -> training -> exported file -> reload -> errors.

Steps, all real: ASE's EMT calculator labels strained, MD-sampled fcc Cu cells (energies, forces, stress;
examples/cu_emt/make_data.py); physml-md trains a PaiNN potential on them with Lightning (energy, force and
stress losses, random split, test metrics, parity and learning-curve plots), exports it as a self-describing
TorchScript file, reloads it in a fresh Python process that does not import physml_md, evaluates it, and runs
NVE molecular dynamics in ASE with `PhysMLCalculator` (energy drift, and the same trajectory with EMT for
comparison), the same NVE run in OpenMM through a TorchForce (same file, same start, same trajectory), and
the MD validation suite (NVT at 300 K, NVE drift, g(r) against an EMT reference trajectory), whose report
ends the demo with a summary table.
"""

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.calculators.emt import EMT
from ase.io import read
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from physml_md import PhysMLCalculator, load_potential
from physml_md.atomic_write import atomic_write_text
from physml_md.cli.main import main as cli
from physml_md.data import LabelKeys, atoms_to_dict, collate
from physml_md.export.checkpoint import potential_from_checkpoint
from physml_md.integrations.openmm import resolve_backend
from physml_md.md.runner import run_md
from physml_md.training.api import PhysMLModel
from physml_md.validation.metrics import energy_drift
from physml_md.validation.suite import validate

MAKE_DATA = Path(__file__).resolve().parent / "cu_emt" / "make_data.py"


def cu_emt_script():
    """examples/cu_emt/make_data.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("cu_emt_make_data", MAKE_DATA)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_data(path: Path, n_structures: int, seed: int) -> Path:
    """EMT-labelled Cu32 cells (examples/cu_emt/make_data.py)."""
    return cu_emt_script().make_data(path, n_structures, seed, temperatures=(300.0, 600.0, 900.0, 1200.0))


def demo_config(data_file: Path, out: Path, epochs: int, seed: int) -> dict:
    """A small version of examples/cu_emt/config.toml."""
    return {
        "model": {"features": 32, "n_interactions": 2, "n_rbf": 16, "dtype": "float64", "seed": seed},
        "data": {
            "source": str(data_file),
            "cut_off": "4.5 angstrom",
            "train": {"batch_size": 8},
            "splitting_strategy": {"name": "random_splitting_strategy", "data_split": [0.8, 0.1, 0.1]},
        },
        "training": {
            "lr": 5.0e-3,
            "ema": {"decay": 0.9},
            "loss_parameter": {
                "loss_components": ["per_system_energy", "per_atom_force", "per_system_stress"],
                "weight": {"per_system_energy": 10.0, "per_atom_force": 1.0, "per_system_stress": 100.0},
            },
        },
        "trainer": {
            "max_epochs": epochs,
            "accelerator": "cpu",
            "default_root_dir": str(out / "runs"),
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
    }


FRESH = """
import json, sys, torch, vesin_torch
from ase import units
from ase.calculators.emt import EMT
from ase.io import read, write
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
module = torch.jit.load(sys.argv[1])
out = []
for atoms in read(sys.argv[2], ":"):
    result = module({"positions": torch.tensor(atoms.positions), "atomic_numbers": torch.tensor(atoms.numbers),
                     "cell": torch.tensor(atoms.cell.array).unsqueeze(0), "pbc": torch.tensor(atoms.pbc).unsqueeze(0)})
    out.append(float(result["energy"][0]))
assert "physml_md" not in sys.modules
print(json.dumps(out))
"""


def nve_run(atoms, calculator, seed: int, steps: int = 400) -> dict:
    """NVE (velocity Verlet, 0.5 fs) from 600 K: max |E_total(t) - E_total(0)| per atom, mean T, ms per step."""
    atoms = atoms.copy()
    atoms.calc = calculator
    thermalize_momenta(atoms, temperature_K=600, rng=np.random.default_rng(seed))
    Stationary(atoms)
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    energies, temperatures = [], []

    def record():
        energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        temperatures.append(atoms.get_temperature())

    dynamics.attach(record, interval=10)
    start = time.perf_counter()
    dynamics.run(steps)
    elapsed = time.perf_counter() - start
    drift = float(np.max(np.abs(np.array(energies) - energies[0])) / len(atoms))
    return {"drift": drift, "temperature": float(np.mean(temperatures)), "ms_per_step": 1000 * elapsed / steps}


def _metric(metrics: dict, component: str, kind: str, factor: float) -> str:
    value = metrics.get(f"test/{component}/{kind}")
    return "n/a" if value is None else f"{factor * value:.3g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_output", help="output folder")
    parser.add_argument("--structures", type=int, default=160, help="number of EMT-labelled Cu32 structures")
    parser.add_argument("--epochs", type=int, default=25, help="training epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation-steps", type=int, default=2000, help="NVT steps of the MD validation")
    args = parser.parse_args()
    out = Path(args.out)
    torch.set_num_threads(2)

    data_file = out / "cu_emt.extxyz"
    print(f"[1/8] Reference data from ASE EMT -> {data_file}", flush=True)
    start = time.perf_counter()
    make_data(data_file, args.structures, args.seed)
    print(f"      {args.structures} Cu32 structures in {time.perf_counter() - start:.1f} s")

    print(f"[2/8] Train a PaiNN potential ({args.epochs} epochs; energy, force and stress losses)", flush=True)
    start = time.perf_counter()
    model = PhysMLModel(demo_config(data_file, out, args.epochs, args.seed))
    result = model.train()
    print(f"      trained in {time.perf_counter() - start:.1f} s; run directory {result.run_dir}")

    model_file = result.model_path
    print(f"[3/8] The exported file: {model_file}", flush=True)
    cli(["info", str(model_file)])

    print("[4/8] Reload in this process and in a fresh one (torch.jit.load, no physml_md)", flush=True)
    frames = read(data_file, ":")
    batch = collate([atoms_to_dict(atoms, LabelKeys(), dtype=torch.float64) for atoms in frames])
    eager = potential_from_checkpoint(result.best_checkpoint)(batch)["energy"].numpy()
    exported = load_potential(model_file)(batch)["energy"].numpy()
    fresh = subprocess.run(
        [sys.executable, "-c", FRESH, str(model_file), str(data_file)], capture_output=True, text=True, check=True
    )
    fresh_energies = np.array(json.loads(fresh.stdout))
    print(f"      max |E_exported - E_checkpoint| = {np.abs(exported - eager).max():.2e} eV (same process, batched)")
    print(f"      max |E_fresh - E_checkpoint|    = {np.abs(fresh_energies - eager).max():.2e} eV (fresh process)")

    print("[5/8] Evaluate the exported file on the first structures", flush=True)
    cli(["evaluate", str(model_file), str(data_file), "--index", ":5"])
    print("[6/8] NVE molecular dynamics in ASE with PhysMLCalculator (Cu32, 0.5 fs, 400 steps, from 600 K)")
    md = nve_run(frames[0], PhysMLCalculator(model_file, num_threads=1), args.seed)
    reference = nve_run(frames[0], EMT(), args.seed)
    print(
        f"      PhysMLCalculator: {md['ms_per_step']:.1f} ms/step, energy drift {1000 * md['drift']:.3f} meV/atom, "
        f"mean T {md['temperature']:.0f} K"
    )
    print(
        f"      EMT (reference):  energy drift {1000 * reference['drift']:.3f} meV/atom, "
        f"mean T {reference['temperature']:.0f} K"
    )
    print(
        f"[7/8] The same NVE run in OpenMM ({resolve_backend()}, CPU platform, same file, start and velocities)",
        flush=True,
    )
    runs = {
        engine: run_md(model_file, frames[0], engine=engine, ensemble="nve", steps=400, seed=args.seed)
        for engine in ("ase", "openmm")
    }
    gap = max(float(np.abs(a - b).max()) for a, b in zip(runs["ase"].positions, runs["openmm"].positions))
    drifts = {
        e: energy_drift(r.times_fs, r.total_energies, r.n_atoms).drift_mev_per_atom_per_ps for e, r in runs.items()
    }
    print(
        f"      OpenMM: {runs['openmm'].ns_per_day:.2f} ns/day, drift {drifts['openmm']:.3g} meV/atom/ps; "
        f"largest position difference from ASE's run over 200 fs: {gap:.1e} Å"
    )

    print("[8/8] MD validation: NVT 300 K, NVE drift, g(r) against an EMT reference trajectory", flush=True)
    steps = args.validation_steps
    reference = cu_emt_script().reference_trajectory(
        out / "emt_reference.extxyz", frames[0], 300.0, n_frames=max(10, 3 * steps // 40), seed=args.seed
    )
    report = validate(
        model_file,
        frames[0],
        reference=reference,
        nvt_steps=steps,
        nve_steps=max(10, steps // 2),
        out=out / "validation",
        seed=args.seed,
    )
    print("      " + report.format().replace("\n", "\n      "))
    table = [
        ("test energy MAE (meV/atom)", _metric(result.test_metrics, "per_atom_energy", "mae", 1000.0)),
        ("test force MAE (meV/Å)", _metric(result.test_metrics, "per_atom_force", "mae", 1000.0)),
        ("NVE drift ASE / OpenMM (meV/atom/ps)", f"{drifts['ase']:.3g} / {drifts['openmm']:.3g}"),
        ("MD validation", "PASSED" if report.passed else "FAILED"),
        ("exported model", str(model_file)),
        ("validation report", report.files["report"]),
        ("plots", f"{result.run_dir}/*.png, {out / 'validation'}/*.png"),
    ]
    width = max(len(name) for name, _ in table)
    print("\nSummary")
    for name, value in table:
        print(f"  {name:<{width}}  {value}")
    summary = {
        "md_drift_ev_per_atom": md["drift"],
        "openmm_drift_mev_per_atom_per_ps": drifts["openmm"],
        "openmm_vs_ase_max_position_difference": gap,
        "validation_passed": report.passed,
        "validation_report": report.files["report"],
        "data": str(data_file),
        "model": str(model_file),
        "structures": len(frames),
        "test_metrics": result.test_metrics,
        "export_matches_eager": bool(np.abs(fresh_energies - eager).max() < 1e-9),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(f"Done. Files in {out}/; plots and checkpoints in {result.run_dir}/")
    return 0 if summary["export_matches_eager"] else 1


if __name__ == "__main__":
    sys.exit(main())
