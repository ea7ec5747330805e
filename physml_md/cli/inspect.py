"""`physml-md info` and `physml-md evaluate`: what an exported file is, and how it does on labelled structures.

``evaluate`` of a committee file also prints each structure's largest per-atom force uncertainty beside its force
error, and how well the one ranks the other (Spearman's rank correlation over the structures).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Mapping, Tuple

import numpy as np

from physml_md.data import keys as K
from physml_md.units import EV_TO_MEV

__all__ = ["info", "evaluate"]


def info(args: argparse.Namespace) -> int:
    from physml_md.data.packed.folder import PackedFolder
    from physml_md.export import read_metadata
    from physml_md.export.agreement import agreement_summary

    if Path(args.model).is_dir():  # a packed folder (or one that says why it is not)
        folder = PackedFolder(args.model)
        if args.json:
            print(json.dumps(folder.manifest, indent=2, sort_keys=True))
            return 0
        rows = packed_summary_rows(folder)
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
        return 0
    meta = read_metadata(args.model)
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    hyper = meta.get("hyperparameters", {})
    options = ", ".join(f"{k}={v}" for k, v in hyper.items() if k not in ("name", "species", "members"))
    rows = [
        ("file", str(args.model)),
        ("model", f"{meta.get('model')} ({options})"),
        (
            "committee",
            f"{meta['committee']} members (outputs energy_std, forces_std)" if meta.get("committee") else "no",
        ),
        ("species", " ".join(meta["species"])),
        ("cutoff", f"{meta['cutoff']} {meta['units']['length']}"),
        ("dtype", meta["dtype"]),
        ("file format", f"{meta.get('format', 'torchscript')} (for {meta.get('device', 'cpu')})"),
        ("units", ", ".join(f"{k}: {v}" for k, v in meta["units"].items())),
        ("self-energies", ", ".join(f"{k}: {v:.6g} eV" for k, v in meta.get("self_energies", {}).items())),
        (
            "format",
            f"{meta['format_version']} (physml-md {meta.get('physml_md_version')}, torch {meta.get('torch_version')})",
        ),
        ("needs", ", ".join(f"{k} {v}" for k, v in meta.get("requires", {}).items())),
        ("weights sha256", meta.get("weights_sha256", "")),
        ("data sha256", str(meta.get("data_sha256"))),
        ("agreement", agreement_summary(meta.get("agreement"))),
        (
            "closest pairs",
            ", ".join(f"{k}: {v:.3f}" for k, v in (meta.get("shortest_pair_distances") or {}).items()) or "unknown",
        ),
        ("created", meta.get("created", "")),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from physml_md.data.collate import collate
    from physml_md.data.readers import read_structures
    from physml_md.data.structures import LabelKeys, atoms_to_dict
    from physml_md.export import load_model

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive number of structures, got {args.batch_size}")
    potential = load_model(args.model, device=args.device)  # an exported file or a checkpoint, as md and validate
    structures = read_structures(args.structures, index=args.index)
    if not structures:
        raise ValueError(f"{args.structures!r} holds no structures: give a file with at least one")
    keys = LabelKeys(energy=args.energy_key, forces=args.forces_key)
    committee = K.FORCES_STD in potential.metadata.get("outputs", ())
    columns = ("E model / eV", "E ref / eV", "dE / meV/atom", "F RMSE / eV/A")
    header = (
        f"{'#':>4} {'formula':<14} {'atoms':>6} {columns[0]:>16} {columns[1]:>16} {columns[2]:>14} {columns[3]:>14}"
    )
    print(header + (f" {'max |dF| / eV/A':>16} {'max sF / eV/A':>14}" if committee else ""))
    energy_errors, force_errors, frame_errors, frame_uncertainties = [], [], [], []
    for start in range(0, len(structures), args.batch_size):
        chunk = structures[start : start + args.batch_size]
        data = [atoms_to_dict(atoms, keys, dtype=potential.dtype) for atoms in chunk]
        batch = collate(data)
        out = potential({k: v.to(args.device) for k, v in batch.items()})
        energies = out["energy"].detach().cpu().double().numpy()
        forces = out["forces"].detach().cpu().double().numpy()
        sigma = out[K.FORCES_STD].detach().cpu().double().numpy() if committee else None
        offset = 0
        for i, (atoms, item) in enumerate(zip(chunk, data)):
            n = len(atoms)
            line = f"{start + i:>4} {atoms.get_chemical_formula():<14} {n:>6} {energies[i]:>16.6f}"
            if "energy_mask" in item and bool(item["energy_mask"][0]):
                reference = float(item["energy"][0])
                energy_errors.append((energies[i] - reference) / n)
                line += f" {reference:>16.6f} {EV_TO_MEV * energy_errors[-1]:>14.3f}"
            else:
                line += f" {'-':>16} {'-':>14}"
            if "forces_mask" in item and bool(item["forces_mask"][0]):
                diff = forces[offset : offset + n] - item["forces"].double().numpy()
                force_errors.append(diff.ravel())
                line += f" {np.sqrt(np.mean(diff**2)):>14.4f}"
                if committee:
                    frame_errors.append(float(np.linalg.norm(diff, axis=1).max()))
                    frame_uncertainties.append(float(sigma[offset : offset + n].max()))
                    line += f" {frame_errors[-1]:>16.4f} {frame_uncertainties[-1]:>14.4f}"
            elif committee:
                line += f" {'-':>14} {'-':>16} {float(sigma[offset : offset + n].max()):>14.4f}"
            print(line)
            offset += n
    if energy_errors:
        e = np.asarray(energy_errors)
        mae, rmse = EV_TO_MEV * np.abs(e).mean(), EV_TO_MEV * np.sqrt((e**2).mean())
        print(f"energy per atom: MAE {mae:.3f} meV/atom, RMSE {rmse:.3f} meV/atom")
    if force_errors:
        f = np.concatenate(force_errors)
        print(f"forces: MAE {np.abs(f).mean():.4f} eV/A, RMSE {np.sqrt((f**2).mean()):.4f} eV/A")
    if frame_errors:
        from physml_md.md.uncertainty import rank_correlation

        rho = rank_correlation(np.asarray(frame_errors), np.asarray(frame_uncertainties))
        print(
            f"uncertainty vs error: Spearman {rho:.3f} between each structure's largest force error and its largest "
            f"per-atom force std over {len(frame_errors)} structures (1: the uncertainty ranks them perfectly)"
        )
    return 0


def packed_summary_rows(folder) -> List[Tuple[str, str]]:
    """(name, value) rows describing a packed folder, for ``physml-md info``."""
    summary = folder.summary
    size = sum(f.stat().st_size for f in folder.path.rglob("*") if f.is_file())
    counts: Mapping[str, int] = summary.get("label_counts", {})
    n = len(folder)
    energies = summary.get("self_energies") or {}
    pairs = summary.get("shortest_pair_distances") or {}
    return [
        ("folder", str(folder.path)),
        ("format", f"{folder.manifest['format']}, version {folder.manifest['format_version']}"),
        ("structures", f"{n} ({summary.get('n_atoms', 0)} atoms) in {len(folder.chunks)} chunk(s)"),
        ("elements", " ".join(summary.get("elements", []))),
        ("labels", ", ".join(f"{label} {counts.get(label, 0)}/{n}" for label in folder.labels) or "none"),
        ("periodic", f"{summary.get('n_periodic', 0)}/{n} structures"),
        ("self-energies", ", ".join(f"{k}: {v:.6g} eV" for k, v in energies.items()) or "no energies"),
        ("force RMS", "no forces" if summary.get("forces_rms") is None else f"{summary['forces_rms']:.6g} eV/angstrom"),
        (
            "closest pairs",
            ", ".join(f"{k}: {v:.3f}" for k, v in pairs.items()) + f" (within {folder.manifest.get('pair_cutoff')} A)",
        ),
        ("sources", ", ".join(folder.manifest.get("sources", []))),
        ("size on disk", f"{size} bytes ({size / 2**20:.3g} MiB)"),
    ]
