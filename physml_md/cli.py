"""`physml-md` command line: the one place that wires the layers together.

Commands so far: ``train`` (train from a TOML/YAML config, test, export, plot), ``export`` (a checkpoint to an
exported file), ``info`` (what an exported file is) and ``evaluate`` (run an exported file on structures and
compare with their reference labels). ``md``, ``validate`` and ``bench`` join as their subsystems land.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List

import numpy as np
import torch

from physml_md import __version__


def _info(args: argparse.Namespace) -> int:
    from physml_md.export import read_metadata

    meta = read_metadata(args.model)
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    hyper = meta.get("hyperparameters", {})
    rows = [
        ("file", str(args.model)),
        (
            "model",
            f"{meta.get('model')} ({', '.join(f'{k}={v}' for k, v in hyper.items() if k not in ('name', 'species'))})",
        ),
        ("species", " ".join(meta["species"])),
        ("cutoff", f"{meta['cutoff']} {meta['units']['length']}"),
        ("dtype", meta["dtype"]),
        ("units", ", ".join(f"{k}: {v}" for k, v in meta["units"].items())),
        ("self-energies", ", ".join(f"{k}: {v:.6g} eV" for k, v in meta.get("self_energies", {}).items())),
        (
            "format",
            f"{meta['format_version']} (physml-md {meta.get('physml_md_version')}, torch {meta.get('torch_version')})",
        ),
        ("needs", ", ".join(f"{k} {v}" for k, v in meta.get("requires", {}).items())),
        ("weights sha256", meta.get("weights_sha256", "")),
        ("data sha256", str(meta.get("data_sha256"))),
        ("created", meta.get("created", "")),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from physml_md.data.collate import collate
    from physml_md.data.readers import read_structures
    from physml_md.data.structures import LabelKeys, atoms_to_dict
    from physml_md.export import load_potential

    potential = load_potential(args.model, device=args.device)
    structures = read_structures(args.structures, index=args.index)
    keys = LabelKeys(energy=args.energy_key, forces=args.forces_key)
    columns = ("E model / eV", "E ref / eV", "dE / meV/atom", "F RMSE / eV/A")
    print(f"{'#':>4} {'formula':<14} {'atoms':>6} {columns[0]:>16} {columns[1]:>16} {columns[2]:>14} {columns[3]:>14}")
    energy_errors, force_errors = [], []
    for start in range(0, len(structures), args.batch_size):
        chunk = structures[start : start + args.batch_size]
        data = [atoms_to_dict(atoms, keys, dtype=potential.dtype) for atoms in chunk]
        batch = collate(data)
        out = potential({k: v.to(args.device) for k, v in batch.items()})
        energies = out["energy"].detach().cpu().double().numpy()
        forces = out["forces"].detach().cpu().double().numpy()
        offset = 0
        for i, (atoms, item) in enumerate(zip(chunk, data)):
            n = len(atoms)
            line = f"{start + i:>4} {atoms.get_chemical_formula():<14} {n:>6} {energies[i]:>16.6f}"
            if "energy_mask" in item and bool(item["energy_mask"][0]):
                reference = float(item["energy"][0])
                energy_errors.append((energies[i] - reference) / n)
                line += f" {reference:>16.6f} {1000 * energy_errors[-1]:>14.3f}"
            else:
                line += f" {'-':>16} {'-':>14}"
            if "forces_mask" in item and bool(item["forces_mask"][0]):
                diff = forces[offset : offset + n] - item["forces"].double().numpy()
                force_errors.append(diff.ravel())
                line += f" {np.sqrt(np.mean(diff**2)):>14.4f}"
            print(line)
            offset += n
    if energy_errors:
        e = np.asarray(energy_errors)
        mae, rmse = 1000 * np.abs(e).mean(), 1000 * np.sqrt((e**2).mean())
        print(f"energy per atom: MAE {mae:.3f} meV/atom, RMSE {rmse:.3f} meV/atom")
    if force_errors:
        f = np.concatenate(force_errors)
        print(f"forces: MAE {np.abs(f).mean():.4f} eV/A, RMSE {np.sqrt((f**2).mean()):.4f} eV/A")
    return 0


def _train(args: argparse.Namespace) -> int:
    from physml_md.training.config import load_config
    from physml_md.training.run import train

    config = load_config(args.config, args.set)
    train(config, ckpt_path=args.ckpt_path)
    return 0


def _export(args: argparse.Namespace) -> int:
    from physml_md.checkpoint import exportable_from_checkpoint
    from physml_md.export import export_potential

    potential, metadata = exportable_from_checkpoint(args.checkpoint, use_ema=not args.no_ema)
    path = export_potential(potential, args.output, metadata)
    print(f"exported {args.checkpoint} -> {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="physml-md", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"physml-md {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a potential from a TOML or YAML config")
    train.add_argument("config", help="config file (.toml, .yaml or .yml)")
    train.add_argument("--ckpt-path", default=None, help="resume from this checkpoint (weights, optimizer, epoch, ...)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set trainer.max_epochs=5 (repeatable; values are TOML)",
    )
    train.set_defaults(run=_train)

    export = commands.add_parser("export", help="export a training checkpoint to a TorchScript model file")
    export.add_argument("checkpoint", help="Lightning checkpoint written by physml-md train (.ckpt)")
    export.add_argument("output", help="exported model file to write (.pt)")
    export.add_argument("--no-ema", action="store_true", help="export the raw weights, not their moving average")
    export.set_defaults(run=_export)

    info = commands.add_parser("info", help="show the metadata of an exported model file")
    info.add_argument("model", help="exported model file (.pt)")
    info.add_argument("--json", action="store_true", help="print the whole metadata document as JSON")
    info.set_defaults(run=_info)

    evaluate = commands.add_parser("evaluate", help="run an exported model on structures (extxyz or ASE db)")
    evaluate.add_argument("model", help="exported model file (.pt)")
    evaluate.add_argument("structures", help="extxyz or ASE db file")
    evaluate.add_argument("--index", default=":", help="which structures, ASE style (default ':')")
    evaluate.add_argument("--energy-key", default="energy", help="name of the reference energy in the file")
    evaluate.add_argument("--forces-key", default="forces", help="name of the reference forces in the file")
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--device", default="cpu", help="cpu or cuda")
    evaluate.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    evaluate.set_defaults(run=_evaluate)
    return parser


def main(argv: List[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"physml-md {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
