"""The Cu/EMT example end to end: EMT data -> training -> ASE NVT MD and a cell relaxation -> validation report.

    python examples/cu_emt/run.py                 # ~8 min on 2 CPU cores (training is ~6 of them)
    python examples/cu_emt/run.py --epochs 5 --structures 40 --md-steps 200 --out /tmp/cu   # a quick look

1. 400 strained, MD-sampled Cu32 cells labelled by ASE's EMT (energies, forces, stress; make_data.py).
2. Train config.toml (PaiNN; energy, force and stress losses; loss-weight mixing) with PhysMLModel.
3. NVT MD at 300 K in ASE (Langevin, PhysMLCalculator), trajectory and energy log.
4. Relax a strained cell (positions and cell, FrechetCellFilter + BFGS) with the potential and with EMT:
   the lattice constants should agree (the training data held stress).
5. MD validation against an EMT reference trajectory at 300 K (g(r)), with NVT/NVE criteria; report and plots.
Everything goes under --out (default examples/cu_emt/output/).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from physml_md import PhysMLCalculator
from physml_md.atomic_write import atomic_write_text
from physml_md.md.runner import run_md
from physml_md.training.api import PhysMLModel
from physml_md.validation.suite import validate

HERE = Path(__file__).resolve().parent


def _script():
    spec = importlib.util.spec_from_file_location("cu_emt_make_data", HERE / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relaxed_lattice_constant(calculator, start_lattice: float = 3.70, fmax: float = 1e-3) -> tuple:
    """(a, steps): relax a 32-atom fcc Cu cell started at ``start_lattice`` (positions and cell) and return the
    lattice constant (cube root of the volume per 4 atoms) and the optimiser steps."""
    atoms = bulk("Cu", "fcc", a=start_lattice, cubic=True).repeat(2)
    atoms.rattle(0.01, seed=1)
    atoms.calc = calculator
    optimizer = BFGS(FrechetCellFilter(atoms), logfile=None)
    optimizer.run(fmax=fmax, steps=300)
    return float((atoms.get_volume() / (len(atoms) / 4)) ** (1 / 3)), optimizer.get_number_of_steps()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "output"), help="output folder (default: %(default)s)")
    parser.add_argument("--structures", type=int, default=400, help="EMT-labelled Cu32 frames (default 400)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: config.toml's)")
    parser.add_argument("--md-steps", type=int, default=2000, help="NVT steps of the MD and the validation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    make_data = _script()

    data = out / "data" / "cu_emt.extxyz"
    print(f"[1/5] EMT reference data -> {data}", flush=True)
    start = time.perf_counter()
    if not data.is_file():
        make_data.make_data(data, args.structures, args.seed, (300.0, 600.0, 900.0, 1200.0))
    print(f"      {time.perf_counter() - start:.1f} s")

    print("[2/5] Train examples/cu_emt/config.toml", flush=True)
    overrides = [f"data.source='{data}'", f"trainer.default_root_dir='{out / 'runs'}'"]
    overrides += ["trainer.enable_progress_bar=false"]
    if args.epochs is not None:
        overrides.append(f"trainer.max_epochs={args.epochs}")
    start = time.perf_counter()
    result = PhysMLModel(HERE / "config.toml", overrides=overrides).train()
    model = result.model_path
    print(f"      {time.perf_counter() - start:.0f} s; exported model {model}")

    print("[3/5] NVT MD at 300 K in ASE (Langevin, 0.5 fs)", flush=True)
    start_cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    start_cell.rattle(0.02, seed=args.seed)
    md = run_md(
        model,
        start_cell,
        engine="ase",
        ensemble="nvt",
        temperature="300 K",
        steps=args.md_steps,
        trajectory=out / "nvt.traj",
        log=out / "nvt.csv",
        seed=args.seed,
        progress=True,
    )
    mean_t = float(np.mean(md.temperatures_k[len(md.temperatures_k) // 5 :]))
    print(f"      stable: {md.stable}; mean T {mean_t:.0f} K; {md.ns_per_day:.2f} ns/day; {out / 'nvt.traj'}")

    print("[4/5] Relax a strained cell (FrechetCellFilter + BFGS): potential against EMT", flush=True)
    a_model, steps_model = relaxed_lattice_constant(PhysMLCalculator(model))
    a_emt, _ = relaxed_lattice_constant(EMT())
    print(f"      a = {a_model:.4f} Å (potential, {steps_model} steps), {a_emt:.4f} Å (EMT)")

    print("[5/5] MD validation against an EMT reference trajectory at 300 K", flush=True)
    reference = make_data.reference_trajectory(
        out / "emt_300K.extxyz", start_cell, 300.0, n_frames=max(10, 3 * args.md_steps // 40), seed=args.seed
    )
    report = validate(
        model,
        start_cell,
        reference=reference,
        nvt_steps=args.md_steps,
        nve_steps=max(10, args.md_steps // 2),
        out=out / "validation",
        seed=args.seed,
    )
    print(report.format())
    rows = [
        ("test energy MAE (meV/atom)", 1000 * result.test_metrics.get("test/per_atom_energy/mae", float("nan"))),
        ("test force MAE (meV/Å)", 1000 * result.test_metrics.get("test/per_atom_force/mae", float("nan"))),
        ("test stress MAE (meV/Å³)", 1000 * result.test_metrics.get("test/per_system_stress/mae", float("nan"))),
        ("lattice constant, potential / EMT (Å)", f"{a_model:.4f} / {a_emt:.4f}"),
        ("MD validation", "PASSED" if report.passed else "FAILED"),
        ("report", report.files["report"]),
    ]
    print("\nSummary")
    for name, value in rows:
        print(f"  {name:<40} {value if isinstance(value, str) else f'{value:.3g}'}")
    summary = {
        "model": str(model),
        "test_metrics": result.test_metrics,
        "md_stable": md.stable,
        "md_mean_temperature": mean_t,
        "lattice_constant_model": a_model,
        "lattice_constant_emt": a_emt,
        "validation_passed": report.passed,
        "validation_report": report.files["report"],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
