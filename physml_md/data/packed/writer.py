"""Write packed folders (``physml_md.data.packed.folder``): ``pack`` reads extxyz files and ASE databases in chunks
(with ``read_dataset``'s label checks), storing what ``atoms_to_dict`` gives in float64.

Atomic: a new folder is written as ``<OUTPUT>.tmp-<pid>`` and renamed once its manifest (written last) is complete.
``append=True`` (under ``folder_lock``) writes each new chunk under a temporary name, then replaces the manifest
atomically; existing chunks are never touched, and a stopped append leaves at most an unlisted chunk, ignored.
``neighbor_cutoff`` also stores each structure's neighbour list (``neighbor_list`` at that cut-off), which training
at a cut-off up to it reads instead of computing it in the DataLoader workers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import ase
import ase.io
import numpy as np
import torch
from tqdm import tqdm

from physml_md._version import __version__
from physml_md.atomic_write import OutputError, atomic_write_text, folder_lock
from physml_md.data import keys as K
from physml_md.data.elements import CHEMICAL_SYMBOLS
from physml_md.data.neighbors import neighbor_list
from physml_md.data.packed.folder import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    PackedFolder,
    PackedFolderError,
    file_sha256,
    read_manifest,
)
from physml_md.data.readers import read_dataset, read_structures
from physml_md.data.splits import record_label
from physml_md.data.statistics import fit_self_energies, pair_key, pair_minima
from physml_md.data.structures import DEFAULT_KEYS, LabelKeys

DEFAULT_CHUNK = 10_000  # structures per chunk (a chunk is held in memory while it is written: ~250 MB)
DEFAULT_PAIR_CUTOFF = 5.0  # angstrom: shortest pair distances are stored within this (data.cut_off's default)
_READ_BATCH = 1000  # structures converted (and label-checked) at a time
_RECORD = "_record"  # (the pending structure dicts carry their record label under this key)


def _frames(path: Path, index: str) -> Iterator[ase.Atoms]:
    """The structures of one input, one at a time for extxyz (read_structures' checks for everything else)."""
    if path.suffix.lower() in (".xyz", ".extxyz") and index == ":" and path.is_file() and path.stat().st_size:
        try:
            yield from ase.io.iread(str(path), index=":", format="extxyz")
        except (ValueError, KeyError, IndexError, OSError, AssertionError) as exc:
            raise ValueError(
                f"cannot read {str(path)!r} as extxyz ({type(exc).__name__}: {exc}); the file may be truncated or "
                "damaged: check it, e.g. with ase.io.read, or write it again"
            ) from None
    else:
        yield from read_structures(path, index)


def _neighbor_arrays(structures: List[Dict[str, torch.Tensor]], cutoff: float, chunk: str) -> Dict[str, np.ndarray]:
    """``neighbor_counts``/``neighbor_index``/``neighbor_shifts`` of the structures (see ``..folder``)."""
    counts, pairs, shifts = [], [np.zeros((0, 2), np.int64)], [np.zeros((0, 3), np.int64)]
    for i, data in enumerate(structures):
        try:
            edges, cell_shifts = neighbor_list(data[K.POSITIONS], data[K.CELL][0], data[K.PBC][0], cutoff)
        except ValueError as exc:
            raise ValueError(f"structure {i} of {chunk} (counted from 0): {exc}") from None
        counts.append(edges.shape[1])
        pairs.append(edges.T.numpy())
        shifts.append(cell_shifts.numpy())
    arrays = {"neighbor_counts": np.array(counts, dtype=np.int64)}
    for name, parts in (("neighbor_index", pairs), ("neighbor_shifts", shifts)):
        whole = np.concatenate(parts)  # in the smallest integer type that holds it (32 atoms: 7 bytes an edge)
        largest = np.abs(whole).max(initial=0)
        arrays[name] = whole.astype(next(t for t in (np.int8, np.int16, np.int32) if largest <= np.iinfo(t).max))
    return arrays


def _chunk_arrays(structures: List[Dict[str, torch.Tensor]], labels: Sequence[str], cutoff: float):
    """The arrays of one chunk (see ``physml_md.data.packed.folder``) and its mergeable summary."""
    cat = lambda key: np.concatenate([d[key].numpy() for d in structures])  # noqa: E731
    arrays: Dict[str, np.ndarray] = {
        "records": np.array([d[_RECORD] for d in structures], dtype=str),
        K.POSITIONS: cat(K.POSITIONS),
        K.ATOMIC_NUMBERS: cat(K.ATOMIC_NUMBERS).astype(np.uint8),
        K.N_ATOMS: cat(K.N_ATOMS).astype(np.int64),
        K.CELL: cat(K.CELL),
        K.PBC: cat(K.PBC),
    }
    counts = {}
    for label in labels:
        mask = cat(K.mask_key(label))
        arrays[K.mask_key(label)] = mask
        counts[label] = int(mask.sum())
        if mask.any():
            arrays[label] = cat(label)
    n_force_components, forces_sq_sum = 0, 0.0
    if K.FORCES in arrays:
        squares = np.array([float((d[K.FORCES].numpy() ** 2).sum()) for d in structures])
        arrays["forces_sq"] = np.where(arrays[K.mask_key(K.FORCES)], squares, 0.0)
        n_force_components = int(3 * arrays[K.N_ATOMS][arrays[K.mask_key(K.FORCES)]].sum())
        forces_sq_sum = float(arrays["forces_sq"].sum())
    starts = range(0, len(structures), _READ_BATCH)
    pairs = [pair_minima(structures[s : s + _READ_BATCH], cutoff) for s in starts]
    arrays["pairs_structure"] = np.concatenate([p[0] + s for p, s in zip(pairs, starts)])
    arrays["pairs_code"], arrays["pairs_distance"] = (np.concatenate([p[k] for p in pairs]) for k in (1, 2))
    shortest: Dict[str, float] = {}
    for code in np.unique(arrays["pairs_code"]):
        distance = float(arrays["pairs_distance"][arrays["pairs_code"] == code].min())
        shortest[pair_key(int(code) // 256, int(code) % 256)] = distance
    summary = {
        "elements": sorted(int(z) for z in np.unique(arrays[K.ATOMIC_NUMBERS])),
        "label_counts": counts,
        "n_periodic": int(arrays[K.PBC].any(axis=1).sum()),
        "forces_sq_sum": forces_sq_sum,
        "n_force_components": n_force_components,
        "shortest_pair_distances": shortest,
    }
    return arrays, summary


def _write_chunk(folder: Path, name: str, arrays: Dict[str, np.ndarray], summary: Dict[str, Any]) -> Dict[str, Any]:
    """Write one chunk as ``folder/name`` (under a temporary name, renamed at the end); its manifest record."""
    final = folder / name
    tmp = folder / f"{name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        files = {}
        for key, array in arrays.items():
            path = tmp / f"{key}.npy"
            np.save(path, np.ascontiguousarray(array), allow_pickle=False)
            files[path.name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_atoms = arrays[K.N_ATOMS]
    return {"name": name, "n_structures": len(n_atoms), "n_atoms": int(n_atoms.sum()), "files": files, **summary}


def folder_summary(folder: Path, chunks: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The manifest's summary: the chunks' summaries merged, and the self-energy fit over every stored energy
    (``fit_self_energies`` on the stored arrays; None without energies)."""
    label_counts: Dict[str, int] = {}
    shortest: Dict[str, float] = {}
    elements = set()
    for chunk in chunks:
        elements.update(chunk["elements"])
        for label, count in chunk["label_counts"].items():
            label_counts[label] = label_counts.get(label, 0) + count
        for pair, distance in chunk["shortest_pair_distances"].items():
            shortest[pair] = min(distance, shortest.get(pair, distance))
    n_components = sum(chunk["n_force_components"] for chunk in chunks)
    squares = sum(chunk["forces_sq_sum"] for chunk in chunks)
    self_energies = None
    if label_counts.get(K.ENERGY):
        batches = []
        for chunk in chunks:
            load = lambda name: torch.from_numpy(np.load(folder / chunk["name"] / f"{name}.npy"))  # noqa: B023, E731
            mask = load(K.mask_key(K.ENERGY))
            batches.append(
                {
                    K.ATOMIC_NUMBERS: load(K.ATOMIC_NUMBERS).long(),
                    K.N_ATOMS: load(K.N_ATOMS),
                    K.mask_key(K.ENERGY): mask,
                    K.ENERGY: load(K.ENERGY) if bool(mask.any()) else torch.zeros(len(mask), dtype=torch.float64),
                }
            )
        fitted = fit_self_energies(batches)
        self_energies = {CHEMICAL_SYMBOLS[z]: e for z, e in sorted(fitted.items())}
    return {
        "n_structures": sum(chunk["n_structures"] for chunk in chunks),
        "n_atoms": sum(chunk["n_atoms"] for chunk in chunks),
        "elements": [CHEMICAL_SYMBOLS[z] for z in sorted(elements)],
        "label_counts": label_counts,
        "n_periodic": sum(chunk["n_periodic"] for chunk in chunks),
        "self_energies": self_energies,
        "forces_rms": float(np.sqrt(squares / n_components)) if n_components else None,
        "n_force_components": n_components,
        "shortest_pair_distances": dict(sorted(shortest.items())),
    }


def _write_manifest(folder: Path, manifest: Dict[str, Any]) -> None:
    manifest["summary"] = folder_summary(folder, manifest["chunks"])
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def _fill(
    folder: Path,
    manifest: Dict[str, Any],
    inputs: Sequence[Path],
    keys: LabelKeys,
    chunk_size: int,
    index: str,
    progress: bool,
) -> int:
    """Append the structures of ``inputs`` to ``folder`` as new chunks (listed in ``manifest``); how many."""
    labels = manifest["labels"]
    taken = {c["name"] for c in manifest["chunks"]} | {p.name for p in folder.iterdir()}
    number = len(manifest["chunks"])
    pending: List[Dict[str, torch.Tensor]] = []
    added = 0

    def flush():
        nonlocal number, pending
        if not pending:
            return
        while f"chunk-{number:06d}" in taken:
            number += 1
        name = f"chunk-{number:06d}"
        taken.add(name)
        arrays, summary = _chunk_arrays(pending, labels, manifest["pair_cutoff"])
        if manifest.get("neighbor_cutoff") is not None:
            arrays.update(_neighbor_arrays(pending, manifest["neighbor_cutoff"], name))
        manifest["chunks"].append(_write_chunk(folder, name, arrays, summary))
        pending = []

    with tqdm(unit=" structures", disable=not progress, desc="pack") as bar:
        for path in inputs:
            batch: List[ase.Atoms] = []
            start = 0
            frames = _frames(path, index)
            while True:
                atoms = next(frames, None)
                if atoms is not None:
                    batch.append(atoms)
                if len(batch) == _READ_BATCH or (atoms is None and batch):
                    where = f"{str(path)!r} (structures {start} to {start + len(batch) - 1}, counted from 0)"
                    read = read_dataset(batch, keys, required=(), dtype=torch.float64, where=where)
                    for k, (data, atoms) in enumerate(zip(read, batch)):  # typed: "s:name" or "i:12"
                        record = record_label(atoms, manifest["record_key"], start + k)
                        data[_RECORD] = f"{'s' if isinstance(record, str) else 'i'}:{record}"
                    pending.extend(read)
                    start += len(batch)
                    bar.update(len(batch))
                    added += len(batch)
                    batch = []
                    while len(pending) >= chunk_size:
                        rest, pending = pending[chunk_size:], pending[:chunk_size]
                        flush()
                        pending = rest
                if atoms is None:
                    break
            if start == 0:
                raise ValueError(f"{str(path)!r} holds no structures: give files with at least one")
        flush()
    return added


def _append(output: Path, inputs: List[Path], keys: LabelKeys, chunk_size: int, index, progress, record_key) -> int:
    """Add ``inputs`` to the packed folder ``output`` (same labels and record key), under its lock."""
    if not output.exists():
        raise OutputError(f"{output} does not exist: --append adds to a packed folder; leave it out to make one")
    with folder_lock(output, "physml-md pack --append"):
        manifest = read_manifest(output)
        PackedFolder(output)  # refuse a damaged folder before adding to it
        if manifest.get("record_key") != record_key:
            raise ValueError(
                f"{output} stores records from info[{manifest.get('record_key')!r}]; the data to append give "
                f"record_key {record_key!r}: give the same --record-key as when the folder was packed"
            )
        if manifest["labels"] != list(keys.requested()) or manifest.get("label_keys") != keys.requested():
            raise ValueError(
                f"{output} stores the labels {manifest.get('label_keys')}; the data to append are read with "
                f"{keys.requested()}: give the same label options as when the folder was packed"
            )
        manifest["sources"] = manifest.get("sources", []) + [str(p) for p in inputs]
        added = _fill(output, manifest, inputs, keys, chunk_size, index, progress)
        _write_manifest(output, manifest)
    return added


def _new_manifest(inputs: List[Path], keys: LabelKeys, pair_cutoff: float, record_key: str, neighbor_cutoff) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "physml_md_version": __version__,
        "labels": list(keys.requested()),
        "label_keys": keys.requested(),
        "pair_cutoff": float(pair_cutoff),
        "neighbor_cutoff": None if neighbor_cutoff is None else float(neighbor_cutoff),
        "record_key": record_key,
        "sources": [str(p) for p in inputs],
        "chunks": [],
    }


def pack(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    keys: LabelKeys = DEFAULT_KEYS,
    *,
    append: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    pair_cutoff: float = DEFAULT_PAIR_CUTOFF,
    index: str = ":",
    progress: bool = False,
    record_key: str = "record",
    neighbor_cutoff: float | None = None,
) -> int:
    """Pack the structures of ``inputs`` (extxyz files, ASE databases) into the folder ``output``; the number of
    structures added. A new ``output`` must not exist; ``append=True`` adds to an existing packed folder (with the
    same labels). ``keys`` names the labels in the files (``[data]``'s ``y_*``); every label it asks for is stored,
    with its mask. ``record_key``: the ``atoms.info`` key of each structure's record (else its chemical formula),
    stored for ``random_record_splitting_strategy``. ``neighbor_cutoff`` (angstrom): store each structure's neighbour
    list at it (an append keeps the folder's). See the module docstring for what is atomic."""
    inputs = [Path(p) for p in inputs]
    output = Path(output)
    if not inputs:
        raise ValueError("pack needs at least one input file (extxyz or ASE db)")
    for path in inputs:
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {str(path)!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of structures, got {chunk_size!r}")
    if neighbor_cutoff is not None and not 0.0 < neighbor_cutoff < float("inf"):
        raise ValueError(f"neighbor_cutoff must be a positive number of angstrom, got {neighbor_cutoff!r}")
    if append:
        return _append(output, inputs, keys, chunk_size, index, progress, record_key)
    if output.exists() or output.is_symlink():
        raise OutputError(
            f"{output} exists: give another output folder, or --append to add these structures to a packed folder"
        )
    if not output.parent.is_dir():
        output.parent.mkdir(parents=True)
    tmp = output.with_name(f"{output.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        manifest = _new_manifest(inputs, keys, pair_cutoff, record_key, neighbor_cutoff)
        added = _fill(tmp, manifest, inputs, keys, chunk_size, index, progress)
        _write_manifest(tmp, manifest)
        os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return added


__all__ = ["pack", "folder_summary", "PackedFolderError"]
