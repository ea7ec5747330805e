"""Does a committee's uncertainty rank structures by their error, inside and outside the training distribution?

A committee (``--members``, default 4; bootstrap samples) is trained on ``--train`` GFN2-xTB frames of ethanol at
300 K (examples/ethanol_xtb/make_data.py's MD) and evaluated on held-out 300 K frames (in distribution)
and on 500 K frames (outside it: the same molecule, hotter). For each set it prints the force MAE, the mean force
uncertainty and Spearman's rank correlation between each frame's largest per-atom force error and its largest
per-atom force std (1: the uncertainty orders the frames exactly as their errors do).

    .venv/bin/python benchmarks/bench_uncertainty.py [--data DIR] [--train 200] [--test 200] [--epochs 40]

``--data`` holds ethanol_xtb_500K.extxyz (make_data.py's; bench_accuracy.py's data folder has it) and holds or
receives ethanol_xtb_300K_frames.extxyz (made here with GFN2-xTB when missing or short).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from physml_md.config.load import config_from_dict
from physml_md.data.collate import collate
from physml_md.data.structures import LabelKeys, atoms_to_dict
from physml_md.export import load_potential
from physml_md.learning.committee_training import train_committee
from physml_md.md.uncertainty import committee_errors

ROOT = Path(__file__).resolve().parents[1]
COLD = "ethanol_xtb_300K_frames.extxyz"  # made here when missing (the 300 K file of make_data.py is a reference run)
CONFIG = {
    "model": {"name": "tensornet", "features": 32, "n_interactions": 2, "n_rbf": 16, "dtype": "float32", "seed": 0},
    "data": {
        "cut_off": 5.0,
        "train": {"batch_size": 16},
        "validation": {"batch_size": 64},
        "test": {"batch_size": 64},
    },
    "training": {
        "lr": 3e-3,
        "seed": 0,
        "monitor": "val/per_atom_force/mae",
        "bootstrap": True,
        "ema": {"decay": 0.99},
        "lr_scheduler": {"name": "cosine", "eta_min": 1e-5},
        "loss_parameter": {
            "loss_components": ["per_system_energy", "per_atom_force"],
            "per_atom_energy": True,
            "weight": {"per_system_energy": 1.0, "per_atom_force": 100.0},
        },
    },
    "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False},
}


def frame_errors(model_path: Path, frames) -> dict:
    """``committee_errors`` of the committee file on ``frames`` (meV/angstrom, Spearman), with their count."""
    potential = load_potential(model_path)
    batch = collate([atoms_to_dict(a, LabelKeys(), dtype=potential.dtype) for a in frames])
    return {"frames": len(frames), **committee_errors(potential, [batch])}


def cold_frames(data: Path, count: int) -> list:
    """``count`` GFN2-xTB frames of 300 K ethanol MD (20 steps of 0.5 fs apart), from ``data/COLD`` or made there."""
    path = data / COLD
    if path.is_file() and len(read(path, ":")) >= count:
        return read(path, f":{count}")
    from ase.io import write

    from physml_md.atomic_write import atomic_path

    spec = importlib.util.spec_from_file_location("make_data", ROOT / "examples" / "ethanol_xtb" / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    with make_data.openmp_threads(1):
        frames = make_data.sample_md(count, 300.0, 20, 11)
    with atomic_path(path) as tmp:
        write(tmp, frames, format="extxyz")
    return frames


def run(data: Path, n_train: int, n_test: int, epochs: int, members: int, out: Path) -> dict:
    cold = cold_frames(data, n_train + n_test)
    hot = read(data / "ethanol_xtb_500K.extxyz", ":")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(cold))
    train, held_out = [cold[i] for i in order[:n_train]], [cold[i] for i in order[n_train : n_train + n_test]]
    hot = [hot[i] for i in rng.permutation(len(hot))[:n_test]]
    raw = copy.deepcopy(CONFIG)
    raw["training"]["committee"] = members
    raw["trainer"].update(max_epochs=epochs, default_root_dir=str(out))
    keep = max(1, len(train) // 10)  # a tenth of the training frames for validation (the best checkpoint)
    config = config_from_dict(raw, require_files=False)
    result = train_committee(config, train_data=train[keep:], validation_data=train[:keep], verbose=False)
    return {
        "300 K held out (in distribution)": frame_errors(result.model_path, held_out),
        "500 K (outside)": frame_errors(result.model_path, hot),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "output" / "accuracy" / "data")
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        rows = run(args.data, args.train, args.test, args.epochs, args.members, Path(folder))
    setup = f"{args.train} frames of 300 K, {args.epochs} epochs"
    print(f"committee of {args.members} (bootstrap), TensorNet 32 features, {setup}")
    print(f"{'test set':<34} {'frames':>6} {'F MAE meV/A':>12} {'mean sF meV/A':>14} {'Spearman':>9}")
    for name, row in rows.items():
        print(
            f"{name:<34} {row['frames']:>6} {row['force_mae']:>12.2f} {row['mean_std']:>14.2f} {row['spearman']:>9.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
