"""MACE side of bench_accuracy.py: test errors and ASE MD cost of a trained MACE model.

Runs inside the benchmark's own MACE environment (``bench_accuracy.py`` sets it up; mace-torch is never a
dependency of physml-md). MACE model files are full pickles: they are loaded here, and only here, with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` set by the caller for this process alone.

    <mace venv>/bin/python benchmarks/mace_worker.py MODEL TEST.extxyz --md-steps 300 --threads 1

Prints one JSON line: energy MAE (meV/atom), force MAE (meV/angstrom), ms per VelocityVerlet step.
"""

import argparse
import json

import numpy as np
import torch
from ase.io import read
from bench_accuracy import md_ms_per_step  # one definition of the MD timing for both sides
from mace.calculators import MACECalculator


def errors(calc, frames, energy_key, forces_key) -> dict:
    energy_errors, force_errors = [], []
    for atoms in frames:
        reference_energy = atoms.info[energy_key]
        reference_forces = atoms.arrays[forces_key]
        atoms = atoms.copy()
        atoms.calc = calc
        energy_errors.append((atoms.get_potential_energy() - reference_energy) / len(atoms))
        force_errors.append(np.abs(atoms.get_forces() - reference_forces).ravel())
    return {
        "energy_mae_mev_per_atom": 1000 * float(np.mean(np.abs(energy_errors))),
        "force_mae_mev_per_angstrom": 1000 * float(np.mean(np.concatenate(force_errors))),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("test")
    parser.add_argument("--energy-key", default="REF_energy")
    parser.add_argument("--forces-key", default="REF_forces")
    parser.add_argument("--md-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--md-only", action="store_true", help="only the MD cost")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    calc = MACECalculator(model_paths=args.model, device="cpu", default_dtype=args.dtype)
    frames = read(args.test, ":")
    result = {} if args.md_only else errors(calc, frames, args.energy_key, args.forces_key)
    result["md_ms_per_step"] = md_ms_per_step(calc, frames[0], args.md_steps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
