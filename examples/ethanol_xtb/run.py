"""The ethanol/GFN2-xTB example end to end: xTB data -> training -> OpenMM MD (TorchForce) -> MD validation.

    python examples/ethanol_xtb/run.py             # the defaults: 9 min on 2 CPU cores
    python examples/ethanol_xtb/run.py --out /tmp/eth --frames 60 --reference-frames 20 --epochs 30 \
        --md-steps 40 --validation-steps 60        # a 20 s smoke run (the test does this)

1. GFN2-xTB data (make_data.py, tblite): 1000 frames of Langevin MD at 500 K with energies and forces, and a
   10 ps MD trajectory at 300 K, the reference for step 4. Made only when --out does not hold them already
   (same frame counts and seed).
2. Train config.toml with PhysMLModel (TensorNet with one interaction, trained in float32 on one thread and
   exported in float64; energy and force losses, mixed from energy-heavy to force-heavy), print the test-split
   errors, and the errors on the 300 K reference frames (never trained on).
3. NVT MD at 300 K in OpenMM, the exported model inside OpenMM's C++ through openmm-torch's TorchForce:
   a DCD trajectory (with its PDB topology beside it) and a CSV energy log.
4. MD validation in OpenMM against the xTB 300 K trajectory: NVT (stable, temperature), NVE (stable, drift),
   and the distributions of bond lengths and dihedral angles (Jensen-Shannon divergence).
5. A summary table, and summary.json with the numbers and where the files are.

Every output goes under --out (default examples/ethanol_xtb/output/):
    data/ethanol_xtb_500K.extxyz, data/ethanol_xtb_300K_reference.extxyz    the xTB data (step 1)
    runs/version_N/  checkpoints/model.pt (the exported model), metrics.csv, parity.png, learning_curves.png
    md/nvt.dcd + md/nvt.pdb, md/nvt.csv                                     the OpenMM run (step 3)
    validation/  report.json, nvt.csv, nve.csv, nvt.extxyz, energy.png, structure.png
    summary.json

Budget of the defaults, measured on this machine (2 CPU cores, nothing else running; 552 s in all): data 79 s
(tblite), training 266 s (100 epochs of 800 frames, 2.7 s each), OpenMM NVT 58 s (10 000 steps, 5.8 ms per step,
7.5 ns/day), validation 138 s (20 000 NVT + 5 000 NVE steps). What it gave: test force MAE 7.2 meV/angstrom and
energy MAE 0.12 meV/atom on the 500 K split, 4.2 meV/angstrom on the 300 K reference frames, NVE drift 0.0015
meV/atom/ps, and every validation criterion passed (bond-length and dihedral divergences 0.004 and 0.010 bits).

Why the validation runs 10 ps of NVT (its default is 1 ps): the dihedral criterion compares histograms in which
rare events weigh (methyl rotation, OH gauche/trans), and a short run samples them poorly whatever the potential.
GFN2-xTB itself, put through the same protocol (start from ase.build.molecule, Langevin 5/ps, the first 20 %
dropped; 8 seeds) and compared with the default reference, gives dihedral divergences of 0.008-0.18 bits after
1 ps (4 of 8 above the 0.02 threshold; bond lengths 0.004-0.021, one above), 0.005-0.048 after 5 ps (one
above) and 0.001-0.014 after 10 ps (none above; bond lengths 0.001-0.003).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import tomllib
import torch
from ase.build import molecule
from ase.io import read

from physml_md import PhysMLCalculator
from physml_md.atomic_write import atomic_write_text
from physml_md.integrations.openmm import resolve_backend
from physml_md.md.runner import run_md
from physml_md.training.api import PhysMLModel
from physml_md.validation.suite import validate

HERE = Path(__file__).resolve().parent
TEMPERATURE = "300 K"
TIMESTEP = "0.5 fs"
DEFAULT_MD_STEPS = 10_000  # 5 ps at 0.5 fs
DEFAULT_VALIDATION_STEPS = 20_000  # 10 ps: see the module docstring for why not less


def _make_data_module():
    spec = importlib.util.spec_from_file_location("ethanol_xtb_make_data", HERE / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_errors(model, path: Path, chunk: int = 500) -> dict:
    """MAE of the model's energies (meV/atom) and force components (meV/angstrom) on the frames of ``path``."""
    frames = read(path, ":")
    calculator = PhysMLCalculator(model)
    energy_errors, force_errors = [], []
    for start in range(0, len(frames), chunk):
        batch = frames[start : start + chunk]
        for atoms, result in zip(batch, calculator.calculate_batch(batch)):
            energy_errors.append((result["energy"] - atoms.get_potential_energy()) / len(atoms))
            force_errors.append(np.abs(result["forces"] - atoms.get_forces()).ravel())
    energy_errors = np.asarray(energy_errors)
    return {
        "frames": len(frames),
        # a constant energy offset does not change MD: the error with the mean offset removed too
        "energy_mae_mev_per_atom": 1000 * float(np.mean(np.abs(energy_errors))),
        "energy_mae_mev_per_atom_offset_removed": 1000 * float(np.mean(np.abs(energy_errors - energy_errors.mean()))),
        "force_mae_mev_per_angstrom": 1000 * float(np.mean(np.concatenate(force_errors))),
    }


def epoch_overrides(config: Path, epochs: int) -> list:
    """Overrides for ``epochs`` training epochs: the loss-weight mixing keeps its fraction of the config's epochs."""
    with open(config, "rb") as stream:
        raw = tomllib.load(stream)
    overrides = [f"trainer.max_epochs={epochs}"]
    mixing = raw.get("training", {}).get("loss_parameter", {}).get("mixing_epochs", {})
    for name, value in mixing.items():
        scaled = max(1, round(value * epochs / raw["trainer"]["max_epochs"]))
        overrides.append(f"training.loss_parameter.mixing_epochs.{name}={scaled}")
    return overrides


def _metric(metrics: dict, name: str) -> float:
    return 1000 * metrics.get(name, float("nan"))


def _format(value) -> str:
    return value if isinstance(value, str) else f"{value:.4g}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "output"), help="output folder (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=1000, help="500 K xTB training frames (default: %(default)s)")
    parser.add_argument(
        "--reference-frames",
        type=int,
        default=2000,
        help="300 K xTB reference frames, 5 fs apart (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs (default: config.toml's); the loss-weight mixing keeps its fraction of them",
    )
    parser.add_argument(
        "--md-steps", type=int, default=DEFAULT_MD_STEPS, help="0.5 fs steps of the NVT run (default: %(default)s)"
    )
    parser.add_argument(
        "--validation-steps",
        type=int,
        default=DEFAULT_VALIDATION_STEPS,
        help="0.5 fs steps of the validation's NVT run; its NVE run takes a quarter (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the xTB MD and of the MD velocities")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for the MD and validation (training: config.toml's [training] threads); one is "
        "fastest for this molecule: 5.5 ms per OpenMM step against 6.2 on two (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    for name in ("frames", "reference_frames", "md_steps", "validation_steps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be a positive integer")
    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    interactive = sys.stderr.isatty()  # progress bars only for a person watching
    make_data = _make_data_module()
    timings = {}
    begin = time.perf_counter()

    print(f"[1/5] GFN2-xTB data (tblite): {args.frames} frames at 500 K, {args.reference_frames} at 300 K", flush=True)
    start = time.perf_counter()
    data_dir = out / "data"
    files = make_data.existing_data(data_dir, args.frames, args.reference_frames, args.seed)
    if files is None:
        files = make_data.make_data(data_dir, args.frames, args.reference_frames, args.seed)
        print(f"      made in {time.perf_counter() - start:.1f} s: {files.data.name}, {files.reference.name}")
    else:
        print(f"      found in {data_dir} (same frame counts and seed): not made again")
    timings["data_s"] = time.perf_counter() - start

    print("[2/5] Train examples/ethanol_xtb/config.toml (energy-heavy -> force-heavy loss weights)", flush=True)
    overrides = [  # values are read as TOML; json.dumps quotes a path as a TOML string, whatever it holds
        f"data.source={json.dumps(str(files.data))}",
        f"trainer.default_root_dir={json.dumps(str(out / 'runs'))}",
        f"trainer.enable_progress_bar={'true' if interactive else 'false'}",
        "trainer.enable_model_summary=false",
    ]
    if args.epochs is not None:
        overrides += epoch_overrides(HERE / "config.toml", args.epochs)
    start = time.perf_counter()
    result = PhysMLModel(HERE / "config.toml", overrides=overrides).train()
    model = result.model_path
    timings["training_s"] = time.perf_counter() - start
    metrics = result.test_metrics
    at_300k = reference_errors(model, files.reference)
    print(
        f"      {timings['training_s']:.0f} s. Test split (500 K): energy MAE "
        f"{_metric(metrics, 'test/per_atom_energy/mae'):.3g} meV/atom, force MAE "
        f"{_metric(metrics, 'test/per_atom_force/mae'):.3g} meV/Å"
    )
    print(
        f"      300 K reference frames (not trained on): energy MAE {at_300k['energy_mae_mev_per_atom']:.3g} "
        f"meV/atom, force MAE {at_300k['force_mae_mev_per_angstrom']:.3g} meV/Å"
    )

    print(
        f"[3/5] NVT MD at {TEMPERATURE} in OpenMM ({resolve_backend()}, {TIMESTEP}, {args.md_steps} steps)", flush=True
    )
    start_structure = molecule("CH3CH2OH")  # the xTB runs started here too; atoms in the reference's order
    md_dir = out / "md"
    md = run_md(
        model,
        start_structure,
        engine="openmm",
        ensemble="nvt",
        temperature=TEMPERATURE,
        timestep=TIMESTEP,
        steps=args.md_steps,
        trajectory=md_dir / "nvt.dcd",
        log=md_dir / "nvt.csv",
        seed=args.seed,
        backend="auto",  # TorchForce with the [torchforce] extra, else PythonForce
        progress=interactive,
    )
    timings["md_s"] = md.wall_seconds
    mean_t = float(np.mean(md.temperatures_k[len(md.temperatures_k) // 5 :]))
    verdict = "stable" if md.stable else f"BLEW UP at step {md.blow_up_step}: {md.blow_up.message}"
    print(f"      {verdict}; mean T {mean_t:.0f} K after the first 20 %; {md.ns_per_day:.2f} ns/day; {md_dir}")

    nve_steps = max(10, args.validation_steps // 4)
    print(
        f"[4/5] MD validation in OpenMM against the GFN2-xTB 300 K trajectory ({args.validation_steps} NVT steps, "
        f"{nve_steps} NVE steps)",
        flush=True,
    )
    start = time.perf_counter()
    report = validate(
        model,
        start_structure,
        reference=files.reference,
        engine="openmm",
        temperature=TEMPERATURE,
        timestep=TIMESTEP,
        nvt_steps=args.validation_steps,
        nve_steps=nve_steps,
        out=out / "validation",
        seed=args.seed,
        progress=interactive,
    )
    timings["validation_s"] = time.perf_counter() - start
    print(report.format())
    timings["total_s"] = time.perf_counter() - begin

    print("[5/5] Summary")
    drift = report.runs.get("nve", {}).get("drift", {}).get("drift_mev_per_atom_per_ps", float("nan"))
    rows = [
        ("test energy MAE, 500 K split (meV/atom)", _metric(metrics, "test/per_atom_energy/mae")),
        ("test force MAE, 500 K split (meV/Å)", _metric(metrics, "test/per_atom_force/mae")),
        ("energy MAE, 300 K reference (meV/atom)", at_300k["energy_mae_mev_per_atom"]),
        ("force MAE, 300 K reference (meV/Å)", at_300k["force_mae_mev_per_angstrom"]),
        ("OpenMM NVT: stable / mean T (K)", f"{md.stable} / {mean_t:.0f}"),
        ("OpenMM speed (ns/day)", md.ns_per_day),
        ("NVE drift (meV/atom/ps)", drift),
        ("MD validation", "PASSED" if report.passed else "FAILED"),
    ]
    for c in report.criteria:
        value = "n/a" if c.value is None else f"{c.value:.4g} {c.unit}".strip()
        rows.append((f"  {'pass' if c.passed else 'FAIL'} {c.name}", f"{value} ({c.relation} {c.threshold:g})"))
    rows += [
        ("data", f"{files.data}, {files.reference}"),
        ("exported model", str(model)),
        ("training plots", f"{result.run_dir}/parity.png, learning_curves.png"),
        ("OpenMM trajectory / log", f"{md_dir / 'nvt.dcd'} (+ nvt.pdb) / {md_dir / 'nvt.csv'}"),
        ("validation report", report.files["report"]),
        ("wall time (s)", f"{timings['total_s']:.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {_format(value)}")
    summary = {
        "settings": vars(args),
        "data": {"train": str(files.data), "reference": str(files.reference)},
        "model": str(model),
        "run_dir": str(result.run_dir),
        "test_metrics": metrics,
        "reference_300K_errors": at_300k,
        "md": md.summary(),
        "md_mean_temperature_k": mean_t,
        "validation_passed": report.passed,
        "validation_criteria": {c.name: {"value": c.value, "passed": c.passed} for c in report.criteria},
        "validation_report": report.files["report"],
        "timings_s": timings,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(f"Done in {timings['total_s']:.0f} s. Everything is in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
