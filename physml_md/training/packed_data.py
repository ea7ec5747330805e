"""Training data from a packed folder (``physml_md.data.packed.folder``): splits by index, statistics from stored data.

``split_indices`` runs on the folder's count, as on a file's, so the same seed gives the same split; each split is a
``PackedDataset``. The statistics come from small stored per-structure arrays, not a pass over the structures, and equal
the in-memory path's (``fit_self_energies`` bit for bit, ``energy_statistics`` up to the order of summation).
"""

from __future__ import annotations

import hashlib
import json
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from physml_md.config.types import ConfigError
from physml_md.data import keys as K
from physml_md.data.packed.folder import PackedDataset, PackedFolder
from physml_md.data.splits import RANDOM_RECORD, split_indices
from physml_md.data.statistics import check_self_energies, fit_self_energies, pair_key, statistics_summary


def selected(folder: PackedFolder, index) -> np.ndarray:
    """The folder indices that ``[data] index`` (as in ``ase.io.read``) selects."""
    from ase.io.formats import string2index

    selection = string2index(index) if isinstance(index, str) else index
    chosen = np.arange(len(folder))[selection]
    return np.atleast_1d(chosen).astype(np.int64)


def check_labels(folder: PackedFolder, labels: Sequence[str], what: str) -> None:
    missing = [label for label in labels if label not in folder.labels]
    if missing:
        raise ConfigError(
            f"{what} {folder.path} does not store {', '.join(missing)} (it stores {', '.join(folder.labels) or 'no'} "
            f"labels): set data.y_{missing[0]} = null, or pack the data again with that label's option"
        )


def check_required(dataset: PackedDataset, required: Sequence[str], what: str) -> None:
    """A ValueError, as ``read_dataset``'s, when some structure of ``dataset`` lacks a ``required`` label."""
    for label in required:
        mask = dataset.per_structure(K.mask_key(label))
        missing = np.flatnonzero(~mask)
        if len(missing):
            shown = ", ".join(str(int(dataset.indices[i])) for i in missing[:5])
            raise ValueError(
                f"{what} {dataset.folder.path}: required label {label!r} is missing in {len(missing)} of "
                f"{len(dataset)} structures (folder indices {shown}{', ...' if len(missing) > 5 else ''}); pack "
                "files that carry it, or give those structures the label"
            )


def packed_splits(
    folder: PackedFolder, config, labels: Sequence[str], dtype: torch.dtype, what: str
) -> tuple[Dict[str, PackedDataset], Dict[str, List[int]]]:
    """train/validation/test datasets of a source folder split by ``config.splitting_strategy``, and the indices."""
    strategy = config.splitting_strategy
    chosen = selected(folder, config.index)
    labels_or_n = len(chosen)
    if strategy.name == RANDOM_RECORD:
        stored = folder.manifest.get("record_key")
        if stored != strategy.record_key:
            raise ConfigError(
                f"{RANDOM_RECORD} with record_key {strategy.record_key!r}: {folder.path} stores the records of "
                f"info[{stored!r}]; set data.splitting_strategy.record_key = {stored!r} or pack again with "
                f"--record-key {strategy.record_key}"
            )
        records = folder.records()
        labels_or_n = [records[i] for i in chosen]
    parts = split_indices(labels_or_n, strategy.name, strategy.data_split, strategy.seed, strategy.test_seed)
    indices = dict(zip(("train", "validation", "test"), parts))
    datasets = {
        name: dataset(folder, chosen[part], config, labels, dtype, f"{what} ({name})") for name, part in indices.items()
    }
    return datasets, indices


def dataset(folder: PackedFolder, indices, config, labels, dtype, what: str) -> PackedDataset:
    return PackedDataset(
        folder, indices, labels, dtype=dtype, cutoff=config.cutoff, pbc=config.pbc, cell=config.cell, what=what
    )


def _composition(dataset: PackedDataset) -> Tuple[List[int], np.ndarray]:
    """(elements of the split, sorted; [len(dataset), n_elements] counts, in the split's order)."""
    species, counts = dataset.folder.composition()
    counts = counts[dataset.indices]
    present = counts.any(axis=0)
    return [z for z, keep in zip(species, present) if keep], counts[:, present]


def species(dataset: PackedDataset) -> List[int]:
    return _composition(dataset)[0]


def periodic_flags(dataset: PackedDataset) -> set:
    if dataset.pbc is not None:
        return {bool(any(dataset.pbc))}
    return set(dataset.per_structure(K.PBC).any(axis=1).tolist())


def _energies(dataset: PackedDataset) -> Tuple[np.ndarray, np.ndarray]:
    """(the split's energies as read in its dtype, then float64; which structures have one)."""
    energy = torch.from_numpy(dataset.per_structure(K.ENERGY)).to(dataset.dtype).double().numpy()
    return energy, dataset.per_structure(K.mask_key(K.ENERGY))


def self_energies(dataset: PackedDataset) -> Dict[int, float]:
    """``fit_self_energies`` of the split: its least squares on the same composition matrix (every element of the
    split, labelled or not; the rows of the structures with an energy, in order) and energies, from the stored
    per-structure counts instead of a pass over the atoms."""
    elements, counts = _composition(dataset)
    energy, has = _energies(dataset)
    if not has.any():
        return fit_self_energies([])  # its error
    solution, *_ = np.linalg.lstsq(counts[has], energy[has], rcond=None)
    return {int(z): float(e) for z, e in zip(elements, solution, strict=True)}


def statistics(dataset: PackedDataset, self_energies: Mapping[int, float]) -> Dict[str, float | None]:
    """``energy_statistics`` of the split (its per-atom residual energies from the stored counts, equal up to the
    order of summation) with the force RMS from each structure's stored sum of squared forces."""
    elements, counts = _composition(dataset)
    check_self_energies(elements, self_energies)
    energy, has = _energies(dataset)
    reference = counts @ np.array([float(self_energies[z]) for z in elements], dtype=np.float64)
    residual = ((energy - reference) / counts.sum(axis=1))[has]
    components, squares = 0, 0.0
    if K.FORCES in dataset.labels:
        mask = dataset.per_structure(K.mask_key(K.FORCES))
        components = 3 * int(dataset.per_structure(K.N_ATOMS)[mask].sum())
        squares = float(dataset.per_structure("forces_sq")[mask].sum()) if components else 0.0
    return statistics_summary(residual, squares, components)


def shortest_pair_distances(dataset: PackedDataset, cutoff: float) -> Dict[str, float] | None:
    """The split's shortest distance per element pair (``shortest_pair_distances``' result) from the stored
    per-structure values; None when the folder stored them within a shorter cut-off or the split overrides pbc/cell
    (then compute them from the structures)."""
    overridden = dataset.pbc is not None or dataset.cell is not None
    if overridden or cutoff > float(dataset.folder.manifest.get("pair_cutoff", 0.0)):
        return None
    found = dataset.folder.shortest_pair_distances(dataset.indices, cutoff)
    return {pair_key(*key): found[key] for key in sorted(found)}


def split_sha256(dataset: PackedDataset) -> str:
    """A sha256 naming the split's data without reading it: the sha256 of every file of the folder (from its
    manifest), the split's folder indices in order, the labels, the dtype and the pbc/cell overrides. (Not the
    source file's ``dataset_sha256``: that would need a pass over every structure.)"""
    digest = hashlib.sha256()
    files = [
        (c["name"], sorted((f, e.get("sha256")) for f, e in c["files"].items()))
        for c in dataset.folder.manifest["chunks"]
    ]
    description = {
        "packed_files": files,
        "labels": list(dataset.labels),
        "dtype": str(dataset.dtype),
        "pbc": None if dataset.pbc is None else list(dataset.pbc),
        "cell": None if dataset.cell is None else [list(map(float, row)) for row in dataset.cell],
    }
    digest.update(json.dumps(description, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(dataset.indices, dtype=np.int64).tobytes())
    return digest.hexdigest()
