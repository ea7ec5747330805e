"""`physml-md info` and `physml-md evaluate`: what an exported file is, and how it does on labelled structures.

``evaluate`` of a committee file also prints each structure's largest per-atom force uncertainty beside its force
error, and how well the one ranks the other (Spearman's rank correlation over the structures).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator, List, Mapping, Sequence, Tuple

import numpy as np
from ase import Atoms

from physml_md.data import keys as K
from physml_md.data.collate import collate
from physml_md.data.packed.folder import PackedFolder
from physml_md.data.readers import read_structures
from physml_md.data.structures import LabelKeys, atoms_to_dict
from physml_md.export import load_model, read_metadata
from physml_md.export.agreement import agreement_summary
from physml_md.md.uncertainty import rank_correlation
from physml_md.units import EV_TO_MEV

__all__ = ["info_command", "evaluate_command"]

Rows = List[Tuple[str, str]]


def info_command(args: argparse.Namespace) -> int:
    folder = PackedFolder(args.model) if Path(args.model).is_dir() else None  # (or an error saying why it is not)
    document = read_metadata(args.model) if folder is None else folder.manifest
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    rows = _model_rows(args.model, document) if folder is None else _packed_rows(folder)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def _model_rows(path: str, meta: dict) -> Rows:
    hyper = meta.get("hyperparameters", {})
    options = ", ".join(f"{k}={v}" for k, v in hyper.items() if k not in ("name", "species", "members"))
    committee = meta.get("committee")
    versions = f"physml-md {meta.get('physml_md_version')}, torch {meta.get('torch_version')}"
    return [
        ("file", str(path)),
        ("model", f"{meta.get('model')} ({options})"),
        ("committee", f"{committee} members (outputs energy_std, forces_std)" if committee else "no"),
        ("species", " ".join(meta["species"])),
        ("cutoff", f"{meta['cutoff']} {meta['units']['length']}"),
        ("dtype", meta["dtype"]),
        ("file format", f"{meta.get('format', 'torchscript')} (for {meta.get('device', 'cpu')})"),
        ("units", _listed(meta["units"])),
        ("self-energies", _listed(meta.get("self_energies", {}), ".6g", " eV")),
        ("format", f"{meta['format_version']} ({versions})"),
        ("needs", ", ".join(f"{k} {v}" for k, v in meta.get("requires", {}).items())),
        ("weights sha256", meta.get("weights_sha256", "")),
        ("data sha256", str(meta.get("data_sha256"))),
        ("agreement", agreement_summary(meta.get("agreement"))),
        ("closest pairs", _listed(meta.get("shortest_pair_distances") or {}, ".3f") or "unknown"),
        ("created", meta.get("created", "")),
    ]


def _packed_rows(folder: PackedFolder) -> Rows:
    summary = folder.summary
    size = sum(f.stat().st_size for f in folder.path.rglob("*") if f.is_file())
    counts = summary.get("label_counts", {})
    n = len(folder)
    pairs = _listed(summary.get("shortest_pair_distances") or {}, ".3f")
    cutoff = folder.manifest.get("neighbor_cutoff")
    return [
        ("folder", str(folder.path)),
        ("format", f"{folder.manifest['format']}, version {folder.manifest['format_version']}"),
        ("structures", f"{n} ({summary.get('n_atoms', 0)} atoms) in {len(folder.chunks)} chunk(s)"),
        ("elements", " ".join(summary.get("elements", []))),
        ("labels", ", ".join(f"{label} {counts.get(label, 0)}/{n}" for label in folder.labels) or "none"),
        ("periodic", f"{summary.get('n_periodic', 0)}/{n} structures"),
        ("self-energies", _listed(summary.get("self_energies") or {}, ".6g", " eV") or "no energies"),
        ("force RMS", "no forces" if summary.get("forces_rms") is None else f"{summary['forces_rms']:.6g} eV/angstrom"),
        ("closest pairs", f"{pairs} (within {folder.manifest.get('pair_cutoff')} A)"),
        ("neighbour lists", f"stored within {cutoff:g} A" if cutoff else "not stored (pack --neighbor-cutoff R)"),
        ("sources", ", ".join(folder.manifest.get("sources", []))),
        ("size on disk", f"{size} bytes ({size / 2**20:.3g} MiB)"),
    ]


def _listed(values: Mapping, spec: str = "", unit: str = "") -> str:
    """``key: value unit, ...`` of a mapping (self-energies, closest pair distances, units)."""
    return ", ".join(f"{k}: {v:{spec}}{unit}" for k, v in values.items())


def evaluate_command(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive number of structures, got {args.batch_size}")
    potential = load_model(args.model, device=args.device)  # an exported file or a checkpoint, as md and validate
    structures = read_structures(args.structures, index=args.index)
    if not structures:
        raise ValueError(f"{args.structures!r} holds no structures: give a file with at least one")
    keys = LabelKeys(energy=args.energy_key, forces=args.forces_key)
    committee = K.FORCES_STD in potential.metadata.get("outputs", ())
    header = f"{'#':>4} {'formula':<14} {'atoms':>6} {'E model / eV':>16} {'E ref / eV':>16} {'dE / meV/atom':>14} "
    print(header + f"{'F RMSE / eV/A':>14}" + (f" {'max |dF| / eV/A':>16} {'max sF / eV/A':>14}" if committee else ""))
    energy_errors, force_errors, frame_errors, frame_uncertainties = [], [], [], []
    predictions = _predictions(potential, structures, keys, args.batch_size, args.device)
    for i, (atoms, labels, energy, forces, sigma) in enumerate(predictions):
        n = len(atoms)
        line = f"{i:>4} {atoms.get_chemical_formula():<14} {n:>6} {energy:>16.6f}"
        if "energy_mask" in labels and bool(labels["energy_mask"][0]):
            reference = float(labels["energy"][0])
            energy_errors.append((energy - reference) / n)
            line += f" {reference:>16.6f} {EV_TO_MEV * energy_errors[-1]:>14.3f}"
        else:
            line += f" {'-':>16} {'-':>14}"
        if "forces_mask" in labels and bool(labels["forces_mask"][0]):
            diff = forces - labels["forces"].double().numpy()
            force_errors.append(diff.ravel())
            line += f" {np.sqrt(np.mean(diff**2)):>14.4f}"
            if committee:
                frame_errors.append(float(np.linalg.norm(diff, axis=1).max()))
                frame_uncertainties.append(float(sigma.max()))
                line += f" {frame_errors[-1]:>16.4f} {frame_uncertainties[-1]:>14.4f}"
        elif committee:
            line += f" {'-':>14} {'-':>16} {float(sigma.max()):>14.4f}"
        print(line)
    _print_summary(energy_errors, force_errors, frame_errors, frame_uncertainties)
    return 0


def _predictions(potential, structures: Sequence[Atoms], keys: LabelKeys, batch_size: int, device: str) -> Iterator:
    """(structure, its labels, the model's energy, forces and per-atom force std (committees; else None)) of each
    structure, run in batches of ``batch_size``."""
    for start in range(0, len(structures), batch_size):
        chunk = structures[start : start + batch_size]
        data = [atoms_to_dict(atoms, keys, dtype=potential.dtype) for atoms in chunk]
        out = potential({k: v.to(device) for k, v in collate(data).items()})
        out = {k: out[k].detach().cpu().double().numpy() for k in (K.ENERGY, K.FORCES, K.FORCES_STD) if k in out}
        ends = np.cumsum([len(atoms) for atoms in chunk])[:-1]
        sigmas = np.split(out[K.FORCES_STD], ends) if K.FORCES_STD in out else [None] * len(chunk)
        yield from zip(chunk, data, out[K.ENERGY], np.split(out[K.FORCES], ends), sigmas)


def _print_summary(energy_errors: list, force_errors: list, frame_errors: list, frame_uncertainties: list) -> None:
    if energy_errors:
        e = EV_TO_MEV * np.asarray(energy_errors)
        print(f"energy per atom: MAE {np.abs(e).mean():.3f} meV/atom, RMSE {np.sqrt((e**2).mean()):.3f} meV/atom")
    if force_errors:
        f = np.concatenate(force_errors)
        print(f"forces: MAE {np.abs(f).mean():.4f} eV/A, RMSE {np.sqrt((f**2).mean()):.4f} eV/A")
    if frame_errors:
        rho = rank_correlation(np.asarray(frame_errors), np.asarray(frame_uncertainties))
        print(
            f"uncertainty vs error: Spearman {rho:.3f} between each structure's largest force error and its largest "
            f"per-atom force std over {len(frame_errors)} structures (1: the uncertainty ranks them perfectly)"
        )
