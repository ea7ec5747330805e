"""Write packed folders (``physml_md.data.packed.folder``): ``pack`` reads extxyz files and ASE databases in chunks
(with ``read_dataset``'s label checks), storing what ``atoms_to_dict`` gives in float64.

Atomic: a new folder is written as ``<OUTPUT>.tmp-<pid>`` and renamed once its manifest (written last) is complete.
``append=True`` (under ``folder_lock``) writes each new chunk under a temporary name, then replaces the manifest
atomically; existing chunks are never touched, and a stopped append leaves at most an unlisted chunk, ignored.
``neighbor_cutoff`` also stores each structure's neighbour list (``neighbor_list`` at that cut-off), which training
at a cut-off up to it reads instead of computing it in the DataLoader workers. Each chunk's neighbour-list work
runs in a worker process while the next chunk is read (``_Pipeline``).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import ase
import ase.io
import numpy as np
import torch
from torch import Tensor
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
PARALLEL_MIN = 2_000  # a chunk at least this large, with more input after it, starts the worker process
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


def _structures(base: Dict[str, np.ndarray], starts: List[int]) -> List[Dict[str, torch.Tensor]]:
    """The structure dicts (positions, atomic numbers, cell, pbc, n_atoms) of a chunk's concatenated arrays;
    ``starts``: each structure's first atom, and the atom count at the end."""
    return [
        {
            K.POSITIONS: torch.from_numpy(base[K.POSITIONS][a:b]),
            K.ATOMIC_NUMBERS: torch.from_numpy(base[K.ATOMIC_NUMBERS][a:b].astype(np.int64)),
            K.CELL: torch.from_numpy(base[K.CELL][k : k + 1]),
            K.PBC: torch.from_numpy(base[K.PBC][k : k + 1]),
            K.N_ATOMS: torch.tensor([b - a]),
        }
        for k, (a, b) in enumerate(zip(starts[:-1], starts[1:]))
    ]


def _lists(structures: List[Dict[str, torch.Tensor]], cutoff: float, chunk: str) -> List[Tuple[Tensor, Tensor]]:
    """Each structure's ``neighbor_list`` at ``cutoff`` (an error names the structure)."""
    lists = []
    for i, data in enumerate(structures):
        try:
            lists.append(neighbor_list(data[K.POSITIONS], data[K.CELL][0], data[K.PBC][0], cutoff))
        except ValueError as exc:
            raise ValueError(f"structure {i} of {chunk} (counted from 0): {exc}") from None
    return lists


def _neighbor_arrays(lists: List[Tuple[Tensor, Tensor]]) -> Dict[str, np.ndarray]:
    """``neighbor_counts``/``neighbor_index``/``neighbor_shifts`` of the structures' lists (see ``..folder``)."""
    arrays = {"neighbor_counts": np.array([edges.shape[1] for edges, _ in lists], dtype=np.int64)}
    pairs = [np.zeros((0, 2), np.int64)] + [edges.T.numpy() for edges, _ in lists]
    shifts = [np.zeros((0, 3), np.int64)] + [cell_shifts.numpy() for _, cell_shifts in lists]
    for name, parts in (("neighbor_index", pairs), ("neighbor_shifts", shifts)):
        whole = np.concatenate(parts)  # in the smallest integer type that holds it (32 atoms: 7 bytes an edge)
        largest = np.abs(whole).max(initial=0)
        arrays[name] = whole.astype(next(t for t in (np.int8, np.int16, np.int32) if largest <= np.iinfo(t).max))
    return arrays


def _derived_arrays(base: Dict[str, np.ndarray], pair_cutoff: float, neighbor_cutoff: float | None, chunk: str):
    """The arrays of a chunk that need neighbour lists (``pairs_*``; ``neighbor_*`` with ``neighbor_cutoff``) from
    its concatenated inputs ``base``, and its shortest distance per element pair; one list per structure and
    cut-off (at equal cut-offs the pair distances come from the stored lists). Runs in ``_Pipeline``'s worker."""
    starts = np.concatenate([[0], np.cumsum(base[K.N_ATOMS])]).tolist()
    structures = _structures(base, starts)
    lists = {cutoff: _lists(structures, cutoff, chunk) for cutoff in {pair_cutoff, neighbor_cutoff} - {None}}
    arrays = {} if neighbor_cutoff is None else _neighbor_arrays(lists[neighbor_cutoff])
    parts, batches = [], range(0, len(structures), _READ_BATCH)
    for s, part in ((s, lists[pair_cutoff][s : s + _READ_BATCH]) for s in batches):  # in global atom indices
        edges = torch.cat([e + (o - starts[s]) for (e, _), o in zip(part, starts[s:])], 1)
        parts.append(
            pair_minima(structures[s : s + _READ_BATCH], pair_cutoff, (edges, torch.cat([c for _, c in part])))
        )
    arrays["pairs_structure"] = np.concatenate([p[0] + s for p, s in zip(parts, batches)])
    arrays["pairs_code"], arrays["pairs_distance"] = (np.concatenate([p[k] for p in parts]) for k in (1, 2))
    codes, inverse = np.unique(arrays["pairs_code"], return_inverse=True)
    shortest = np.full(len(codes), np.inf)
    np.minimum.at(shortest, inverse, arrays["pairs_distance"])
    shortest = {pair_key(int(c) // 256, int(c) % 256): float(d) for c, d in zip(codes, shortest)}
    return arrays, shortest


def _chunk_arrays(structures: List[Dict[str, torch.Tensor]], labels: Sequence[str]):
    """The arrays of one chunk that need no neighbour list (see ``physml_md.data.packed.folder``) and its mergeable
    summary (without the pair distances: ``_derived_arrays``)."""
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
    summary = {
        "elements": sorted(int(z) for z in np.unique(arrays[K.ATOMIC_NUMBERS])),
        "label_counts": counts,
        "n_periodic": int(arrays[K.PBC].any(axis=1).sum()),
        "forces_sq_sum": forces_sq_sum,
        "n_force_components": n_force_components,
    }
    return arrays, summary


class _Pipeline:
    """Chunks written in order while the next is read: each chunk's neighbour-list work (``_derived_arrays``) runs
    in one worker process (started with the first chunk that is full while more input follows and has at least
    ``PARALLEL_MIN`` structures; smaller packs never start one), at most one chunk ahead of the writing."""

    def __init__(self, folder: Path, manifest: Dict[str, Any]):
        self.folder, self.manifest = folder, manifest
        self.waiting: deque = deque()  # (name, arrays, summary, Future or the derived result)
        self.executor: ProcessPoolExecutor | None = None

    def add(self, name: str, arrays: Dict[str, np.ndarray], summary: Dict[str, Any], more: bool) -> None:
        """Queue chunk ``name`` and write what waits but the newest (all with ``more`` False: no chunk follows)."""
        base = {key: arrays[key] for key in (K.POSITIONS, K.ATOMIC_NUMBERS, K.N_ATOMS, K.CELL, K.PBC)}
        job = (base, self.manifest["pair_cutoff"], self.manifest.get("neighbor_cutoff"), name)
        if self.executor is None and more and len(arrays[K.N_ATOMS]) >= PARALLEL_MIN:
            fork = multiprocessing.get_context("fork")  # as DataLoader's (spawn would rerun the caller's script)
            self.executor = ProcessPoolExecutor(1, mp_context=fork, initializer=_worker, initargs=(os.getpid(),))
        derived = _derived_arrays(*job) if self.executor is None else self.executor.submit(_derived_arrays, *job)
        self.waiting.append((name, arrays, summary, derived))
        self.write(keep=1 if more else 0)

    def write(self, keep: int = 0) -> None:
        """Write the waiting chunks, in order, but the newest ``keep``."""
        while len(self.waiting) > keep:
            name, arrays, summary, derived = self.waiting.popleft()
            derived, shortest = derived.result() if isinstance(derived, Future) else derived
            summary = {**summary, "shortest_pair_distances": shortest}
            self.manifest["chunks"].append(_write_chunk(self.folder, name, {**arrays, **derived}, summary))

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def _worker(parent: int) -> None:
    """The worker's start: one torch thread, and an exit when the packing process is gone (killed: no orphan)."""
    torch.set_num_threads(1)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


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
            energy = load(K.ENERGY) if bool(mask.any()) else torch.zeros(len(mask), dtype=torch.float64)
            batches.append({K.ATOMIC_NUMBERS: load(K.ATOMIC_NUMBERS).long(), K.N_ATOMS: load(K.N_ATOMS),
                            K.mask_key(K.ENERGY): mask, K.ENERGY: energy})  # fmt: skip
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


def _fill(folder: Path, manifest: Dict[str, Any], inputs: Sequence[Path], keys: LabelKeys, chunk_size, index, progress):
    """Append the structures of ``inputs`` to ``folder`` as new chunks (listed in ``manifest``); how many.
    ``chunk_size``, ``index``, ``progress``: ``pack``'s."""
    labels = manifest["labels"]
    taken = {c["name"] for c in manifest["chunks"]} | {p.name for p in folder.iterdir()}
    number = len(manifest["chunks"])
    pending: List[Dict[str, torch.Tensor]] = []
    added = 0
    pipeline = _Pipeline(folder, manifest)

    def flush(more: bool):
        nonlocal number, pending
        if not pending:
            pipeline.write()
            return
        while f"chunk-{number:06d}" in taken:
            number += 1
        name = f"chunk-{number:06d}"
        taken.add(name)
        pipeline.add(name, *_chunk_arrays(pending, labels), more)
        pending = []

    with tqdm(unit=" structures", disable=not progress, desc="pack") as bar, contextlib.closing(pipeline):
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
                        flush(more=True)
                        pending = rest
                if atoms is None:
                    break
            if start == 0:
                raise ValueError(f"{str(path)!r} holds no structures: give files with at least one")
        flush(more=False)
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
    pair_cutoff: float | None = None,
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
    list at it (an append keeps the folder's). ``pair_cutoff`` (angstrom): the shortest pair distances are stored
    within it (default: ``neighbor_cutoff`` when given, whose lists then serve, else ``DEFAULT_PAIR_CUTOFF``; an
    append keeps the folder's). See the module docstring for what is atomic."""
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
    if pair_cutoff is None:
        pair_cutoff = DEFAULT_PAIR_CUTOFF if neighbor_cutoff is None else neighbor_cutoff
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
