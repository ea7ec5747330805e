"""physml-md demo (what `make demo` runs): real reference data -> model -> exported file -> reload -> energies.

Steps, all real: ASE's EMT calculator labels strained, rattled and MD-sampled fcc Cu cells (energies,
forces, stress); physml-md reads them, fits per-element self-energies, builds a PaiNN potential, exports
it as a self-describing TorchScript file, reloads it in a fresh Python process that does not import
physml_md, and evaluates it on the data. Training, MD in ASE/OpenMM and the validation report join this
demo as those subsystems land; the model here is untrained, and the demo says so.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

from physml_md import export_potential, load_potential
from physml_md.atomic import atomic_write_text
from physml_md.cli import main as cli
from physml_md.data.collate import collate
from physml_md.data.hashing import dataset_sha256
from physml_md.data.readers import read_dataset
from physml_md.data.statistics import energy_statistics, fit_self_energies
from physml_md.models import build_model


def make_emt_data(path: Path, n_strained: int, n_md: int, seed: int) -> None:
    """32-atom fcc Cu cells: random strain within +-3 % and rattles, plus Langevin MD frames at 900 K."""
    rng = np.random.default_rng(seed)
    frames = []
    base = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    for _ in range(n_strained):
        atoms = base.copy()
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, size=(3, 3))
        atoms.set_cell(atoms.cell.array @ (strain + strain.T) / 2, scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 31)))
        frames.append(atoms)
    atoms = base.copy()
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K=900, rng=rng)
    dynamics = Langevin(atoms, 2 * units.fs, temperature_K=900, friction=0.02, fixcm=False, rng=rng)
    for _ in range(n_md):
        dynamics.run(10)
        frames.append(atoms.copy())
    for frame in frames:
        frame.calc = EMT()
        frame.get_potential_energy(), frame.get_forces(), frame.get_stress()
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, frames, format="extxyz")


FRESH = """
import json, sys, torch, vesin_torch
from ase.io import read
module = torch.jit.load(sys.argv[1])
out = []
for atoms in read(sys.argv[2], ":"):
    result = module({"positions": torch.tensor(atoms.positions), "atomic_numbers": torch.tensor(atoms.numbers),
                     "cell": torch.tensor(atoms.cell.array).unsqueeze(0), "pbc": torch.tensor(atoms.pbc).unsqueeze(0)})
    out.append(float(result["energy"][0]))
assert "physml_md" not in sys.modules
print(json.dumps(out))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_output", help="output folder")
    parser.add_argument("--structures", type=int, default=24, help="number of strained/rattled cells")
    parser.add_argument("--md-frames", type=int, default=16, help="number of Langevin MD frames")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    torch.set_num_threads(1)

    data_file = out / "cu_emt.extxyz"
    print(f"[1/5] Reference data from ASE EMT -> {data_file}", flush=True)
    start = time.perf_counter()
    make_emt_data(data_file, args.structures, args.md_frames, args.seed)
    print(f"      {args.structures + args.md_frames} Cu32 structures in {time.perf_counter() - start:.1f} s")

    print("[2/5] Read the data, fit self-energies, statistics", flush=True)
    dataset = read_dataset(data_file, required=("energy", "forces", "stress"))
    self_energies = fit_self_energies(dataset)
    stats = energy_statistics(dataset, self_energies)
    print(
        f"      E_Cu = {self_energies[29]:.4f} eV; residual energy std {1000 * stats['energy_per_atom_std']:.2f} "
        f"meV/atom; force RMS {stats['forces_rms']:.3f} eV/A"
    )

    print("[3/5] Build a PaiNN potential (untrained: training arrives with the training subsystem)", flush=True)
    model = build_model(
        species=["Cu"],
        cutoff=5.0,
        dtype="float64",
        features=32,
        n_interactions=2,
        self_energies=self_energies,
        scale=stats["forces_rms"],
        seed=args.seed,
    ).eval()
    print(f"      {sum(p.numel() for p in model.parameters())} parameters, cutoff 5.0 A, float64")

    model_file = out / "model.pt"
    print(f"[4/5] Export -> {model_file}", flush=True)
    export_potential(
        model, model_file, {"description": "physml-md demo (untrained)", "data_sha256": dataset_sha256(dataset)}
    )
    cli(["info", str(model_file)])

    print("[5/5] Reload and evaluate", flush=True)
    loaded = load_potential(model_file)
    batch = collate(dataset)
    eager = model(batch)["energy"].numpy()
    exported = loaded(batch)["energy"].numpy()
    fresh = subprocess.run(
        [sys.executable, "-c", FRESH, str(model_file), str(data_file)], capture_output=True, text=True, check=True
    )
    fresh_energies = np.array(json.loads(fresh.stdout))
    print(f"      max |E_exported - E_eager| = {np.abs(exported - eager).max():.2e} eV (same process, batched)")
    print(
        f"      max |E_fresh - E_eager|    = {np.abs(fresh_energies - eager).max():.2e} eV "
        "(fresh process, torch.jit.load, no physml_md)"
    )
    cli(["evaluate", str(model_file), str(data_file), "--index", ":5"])
    summary = {
        "data": str(data_file),
        "model": str(model_file),
        "structures": len(dataset),
        "export_matches_eager": bool(np.abs(fresh_energies - eager).max() < 1e-9),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(f"Done. Files in {out}/ (the model is untrained; its errors above are those of random weights).")
    return 0 if summary["export_matches_eager"] else 1


if __name__ == "__main__":
    sys.exit(main())
