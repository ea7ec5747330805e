"""``AtomsDataModule``: structures with labels and precomputed neighbour lists, split and batched for Lightning.

Data: one ``source`` split by a ``splitting_strategy`` (``physml_md.data.splits``), or a file, list of ``ase.Atoms``
or packed folder per split. Neighbour lists are computed once per structure and kept as ``PackedStructures``: in RAM
(``pre_batch="in_memory"``) or memory-mapped from ``cache_dir`` (``"on_disk"``; the file is named by a hash of the
data, cut-off, pbc/cell overrides and cache format). A packed folder (``physml-md pack``) is split by index (the same
split as its source file's) and read lazily in the workers (``physml_md.training.packed_data``). The training loader
is a ``ResumableLoader`` (exact mid-epoch resume, shards by rank: run Lightning with ``use_distributed_sampler=False``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import ase
import lightning
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from physml_md.atomic_write import atomic_path
from physml_md.config.data import SPLITS, DataConfig
from physml_md.config.types import ConfigError, validate
from physml_md.data import keys as K
from physml_md.data.collate import PER_ATOM_KEYS, collate
from physml_md.data.hashing import dataset_sha256
from physml_md.data.neighbors import neighbor_list
from physml_md.data.packed.folder import PackedDataset, PackedFolder, is_packed_folder
from physml_md.data.readers import read_dataset, read_structures
from physml_md.data.splits import RANDOM_RECORD, record_label, split_indices
from physml_md.data.statistics import energy_statistics, fit_self_energies, shortest_pair_distances
from physml_md.models import resolve_dtype
from physml_md.training import packed_data
from physml_md.training.loader import ResumableLoader

CACHE_FORMAT_VERSION = 1
_N_EDGES = "n_edges"  # [B] int64, edges of each structure in a PackedStructures


class PackedStructures(Dataset):
    """Structure dicts stored as concatenated tensors: per-atom keys along atoms, per-structure keys along
    structures, ``edge_index`` along edges (dim 1, local atom indices), plus ``n_atoms`` and ``n_edges``.

    ``tensors`` is a plain dict of tensors (what the on-disk cache holds). Item ``i`` is the structure dict
    of structure ``i`` (views into the tensors), with ``batch`` zeros.
    """

    def __init__(self, tensors: Dict[str, Tensor]):
        if K.N_ATOMS not in tensors or _N_EDGES not in tensors:
            raise ValueError("PackedStructures needs n_atoms and n_edges")
        self.tensors = tensors
        zero = torch.zeros(1, dtype=torch.int64)
        self._atoms = torch.cat([zero, torch.cumsum(tensors[K.N_ATOMS], 0)]).tolist()
        self._edges = torch.cat([zero, torch.cumsum(tensors[_N_EDGES], 0)]).tolist()

    @classmethod
    def pack(cls, structures: Sequence[Dict[str, Tensor]]) -> PackedStructures:
        """Pack single-structure dicts that all have the same keys, ``edge_index`` and ``cell_shifts``."""
        if not structures:
            raise ValueError("PackedStructures.pack needs at least one structure")
        keys = [k for k in structures[0] if k != K.BATCH]
        for i, data in enumerate(structures):
            if set(data) - {K.BATCH} != set(keys):
                raise ValueError(f"structure {i} has keys {sorted(data)}, structure 0 has {sorted(keys)}")
        tensors = {}
        for key in keys:
            dim = 1 if key == K.EDGE_INDEX else 0
            tensors[key] = torch.cat([data[key] for data in structures], dim=dim)
        tensors[_N_EDGES] = torch.tensor([int(data[K.EDGE_INDEX].shape[1]) for data in structures], dtype=torch.int64)
        return cls(tensors)

    def __len__(self) -> int:
        return len(self._atoms) - 1

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"structure {index} of {len(self)}")
        index = index % len(self)
        a0, a1 = self._atoms[index], self._atoms[index + 1]
        e0, e1 = self._edges[index], self._edges[index + 1]
        data: Dict[str, Tensor] = {}
        for key, tensor in self.tensors.items():
            if key == _N_EDGES:
                continue
            if key == K.EDGE_INDEX:
                data[key] = tensor[:, e0:e1]
            elif key == K.CELL_SHIFTS:
                data[key] = tensor[e0:e1]
            elif key in PER_ATOM_KEYS:
                data[key] = tensor[a0:a1]
            else:
                data[key] = tensor[index : index + 1]
        data[K.BATCH] = torch.zeros(a1 - a0, dtype=torch.int64)
        return data

    def __iter__(self) -> Iterator[Dict[str, Tensor]]:
        return (self[i] for i in range(len(self)))


class AtomsDataModule(lightning.LightningDataModule):
    """Training, validation, test and predict data for a potential (see the module docstring).

    ``config``: the validated ``[data]`` section (``DataConfig``), or its keys as keyword arguments
    (``cut_off=4.0, train={"batch_size": 8}, ...``, validated here; ``source`` may be a list of ``ase.Atoms``).
    ``train_data`` etc. give a split's data (a path or a list of ``ase.Atoms``) instead of ``config.<split>.path``.
    ``dtype`` of the float tensors; ``shuffle_seed`` fixes the training order (epoch e uses ``shuffle_seed + e``).
    ``bootstrap_seed`` replaces the training split by a seeded bootstrap sample of it (a committee member's data).

    After ``setup``: ``splits`` maps each non-empty split name to its ``PackedStructures``;
    ``split_indices_`` maps train/validation/test to indices into ``source`` (None without ``source``);
    ``cache_paths`` the cache file of each split and ``cache_written`` the splits whose cache was (re)built.
    """

    def __init__(
        self,
        config: DataConfig | None = None,
        *,
        dtype: str | torch.dtype = "float64",
        shuffle_seed: int = 42,
        bootstrap_seed: int | None = None,
        train_data: str | os.PathLike | Sequence[ase.Atoms] | None = None,
        validation_data: str | os.PathLike | Sequence[ase.Atoms] | None = None,
        test_data: str | os.PathLike | Sequence[ase.Atoms] | None = None,
        predict_data: str | os.PathLike | Sequence[ase.Atoms] | None = None,
        **data: Any,
    ):
        super().__init__()
        source = None
        if config is None:
            if not isinstance(data.get("source"), (str, os.PathLike, type(None))):
                source = data.pop("source")  # a list of ase.Atoms
            config = validate(DataConfig, data, "data")
        elif data:
            raise ConfigError(
                f"give the [data] section as a DataConfig or as keyword arguments, not both: {sorted(data)}"
            )
        self.config = config
        self.cutoff = config.cutoff
        self.dtype = resolve_dtype(dtype)
        self.cache_dir = None if config.cache_dir is None else Path(config.cache_dir)
        self.num_workers = config.num_workers
        self.shuffle_seed = shuffle_seed
        self.bootstrap_seed = bootstrap_seed
        self.label_keys = config.label_keys()
        self.batch_sizes: Dict[str, int] = {name: getattr(config, name).batch_size for name in SPLITS}

        direct = {"train": train_data, "validation": validation_data, "test": test_data, "predict": predict_data}
        self._given = self._given_splits(config, direct)
        source = config.source if source is None else source
        self.source = None if source is None else self._checked_data("source", source)
        self._check_sources()

        self.splits: Dict[str, PackedStructures | PackedDataset] = {}
        self.split_indices_: Dict[str, List[int]] | None = None
        self.cache_paths: Dict[str, Path] = {}
        self.cache_written: List[str] = []
        self._sha256: Dict[str, str] = {}
        self._is_setup = False

    @classmethod
    def _given_splits(cls, config: DataConfig, direct: Dict[str, Any]) -> Dict[str, Any]:
        """split -> path or list of Atoms, for the splits given explicitly (``config.<split>.path`` or ``*_data``)."""
        given = {}
        for name in SPLITS:
            path = getattr(config, name).path
            if path is not None and direct[name] is not None:
                raise ConfigError(f"{name} data given twice: as data.{name}.path and as {name}_data; give one")
            value = direct[name] if direct[name] is not None else path
            if value is not None:
                given[name] = cls._checked_data(f"{name} data", value)
        return given

    def _check_sources(self) -> None:
        """Training data given once: a source to split, or a training file, not both."""
        if self.source is None and "train" not in self._given:
            raise ConfigError(
                "no training data: give source (one file split into train/validation/test by splitting_strategy) "
                "or a training file (data.train.path or train_data=...)"
            )
        clash = [name for name in ("train", "validation", "test") if name in self._given]
        if self.source is not None and clash:
            raise ConfigError(
                f"both source and {', '.join(clash)} data were given: source is split into train, validation "
                "and test by splitting_strategy; give either source or files per split, not both"
            )

    @staticmethod
    def _checked_data(what: str, value: Any) -> Any:
        if isinstance(value, (str, os.PathLike)):
            if is_packed_folder(value):
                return Path(value)
            if Path(value).is_dir():
                raise ConfigError(
                    f"{what}: {str(value)!r} is a folder without a packed-folder manifest; give a file (extxyz or ASE "
                    "db) or a folder written by physml-md pack (a pack that was stopped leaves none)"
                )
            if not Path(value).is_file():
                raise ConfigError(f"{what}: no such file {str(value)!r}")
            return Path(value)
        if isinstance(value, ase.Atoms):
            return [value]
        if isinstance(value, Sequence) and all(isinstance(a, ase.Atoms) for a in value):
            return list(value)
        raise ConfigError(f"{what} must be a file path or a list of ase.Atoms, got {type(value).__name__}")

    # ----------------------------------------------------------------------------------------- reading

    def _read(self, what: str, data: Path | List[ase.Atoms], required: Sequence[str]):
        """(structure dicts, Atoms) of a file or list, with the pbc/cell overrides applied to the dicts."""
        atoms = read_structures(data, self.config.index) if isinstance(data, Path) else data
        where = f"{what} {str(data)!r}" if isinstance(data, Path) else what
        try:
            structures = read_dataset(atoms, self.label_keys, required=required, dtype=self.dtype)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        pbc, cell = self.config.pbc, self.config.cell
        for data_dict in structures:
            if pbc is not None:
                data_dict[K.PBC] = torch.tensor([pbc], dtype=torch.bool)
            if cell is not None:
                data_dict[K.CELL] = torch.tensor([cell], dtype=self.dtype)
        return structures, atoms

    def _records(self, atoms: Sequence[ase.Atoms]) -> List[Hashable]:
        key = self.config.splitting_strategy.record_key
        return [record_label(a, key, i) for i, a in enumerate(atoms)]

    def _with_edges(self, what: str, structures: List[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
        for i, data in enumerate(structures):
            try:
                edges = neighbor_list(data[K.POSITIONS], data[K.CELL][0], data[K.PBC][0], self.cutoff)
            except ValueError as exc:
                raise ValueError(f"{what} structure {i}: {exc}") from None
            data[K.EDGE_INDEX], data[K.CELL_SHIFTS] = edges
        return structures

    def _cache_key(self, sha256: str) -> str:
        description = {
            "format_version": CACHE_FORMAT_VERSION,
            "data_sha256": sha256,
            "cut_off": repr(self.cutoff),  # the key written by earlier versions: their caches stay valid
            "pbc": self.config.pbc,
            "cell": self.config.cell,
        }
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()

    def _load_cache(self, path: Path, key: str) -> PackedStructures | None:
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, weights_only=True, mmap=True)
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError):
            return None  # unreadable: rebuilt
        if not isinstance(stored, dict) or stored.get("format_version") != CACHE_FORMAT_VERSION:
            return None
        if stored.get("key") != key or not isinstance(stored.get("tensors"), dict):
            return None
        return PackedStructures(stored["tensors"])

    def _pack(self, name: str, structures: List[Dict[str, Tensor]]) -> PackedStructures:
        sha256 = dataset_sha256(structures)
        self._sha256[name] = sha256
        if self.config.pre_batch == "in_memory":
            return PackedStructures.pack(self._with_edges(name, structures))
        key = self._cache_key(sha256)
        path = self.cache_dir / f"{name}-{key[:24]}.pt"
        self.cache_paths[name] = path
        packed = self._load_cache(path, key)
        if packed is not None:
            return packed
        packed = PackedStructures.pack(self._with_edges(name, structures))
        with atomic_path(path) as tmp:
            torch.save({"format_version": CACHE_FORMAT_VERSION, "key": key, "tensors": packed.tensors}, tmp)
        self.cache_written.append(name)
        return self._load_cache(path, key)

    def setup(self, stage: str | None = None) -> None:
        """Read, split and precompute neighbour lists (once; later calls, for any stage, do nothing)."""
        if self._is_setup:
            return
        required = (K.ENERGY,)
        split_data: Dict[str, List[Dict[str, Tensor]]] = {}
        if isinstance(self.source, Path) and self.source.is_dir():
            folder = self._folder("source", self.source)
            lazy, self.split_indices_ = packed_data.packed_splits(
                folder, self.config, list(self.label_keys.requested()), self.dtype, "source"
            )
            self.splits.update({name: data for name, data in lazy.items() if len(data)})
        elif self.source is not None:
            structures, atoms = self._read("source", self.source, required)
            strategy = self.config.splitting_strategy
            labels = self._records(atoms) if strategy.name == RANDOM_RECORD else len(structures)
            parts = split_indices(labels, strategy.name, strategy.data_split, strategy.seed, strategy.test_seed)
            self.split_indices_ = dict(zip(("train", "validation", "test"), parts))
            for name, indices in self.split_indices_.items():
                split_data[name] = [structures[i] for i in indices]
            del structures, atoms
        for name, data in self._given.items():
            if isinstance(data, Path) and data.is_dir():
                folder = self._folder(f"{name} data", data)
                indices = packed_data.selected(folder, self.config.index)
                labels = list(self.label_keys.requested())
                if len(indices):
                    self.splits[name] = packed_data.dataset(folder, indices, self.config, labels, self.dtype, name)
                continue
            split_data[name], _ = self._read(f"{name} data", data, () if name == "predict" else required)
        for name, lazy in self.splits.items():
            if name != "predict":
                packed_data.check_required(lazy, required, f"{name} data")
        train = split_data.get("train") or self.splits.get("train")
        if self.bootstrap_seed is not None and train:
            draw = np.random.default_rng(self.bootstrap_seed).integers(0, len(train), len(train))
            if isinstance(train, PackedDataset):
                train.indices = train.indices[draw]
            else:
                split_data["train"] = [train[i] for i in draw]
        for name in SPLITS:
            if split_data.get(name):
                self.splits[name] = self._pack(name, split_data.pop(name))
        self._is_setup = True

    def _folder(self, what: str, path: Path) -> PackedFolder:
        folder = PackedFolder(path)
        packed_data.check_labels(folder, list(self.label_keys.requested()), what)
        return folder

    # ----------------------------------------------------------------------------------------- statistics

    def _split(self, name: str) -> PackedStructures:
        self.setup()
        if name not in self.splits:
            raise ValueError(f"there is no {name} data; give {name} data or a source with a {name} fraction")
        return self.splits[name]

    def species(self) -> List[int]:
        """Sorted atomic numbers found in all splits (a model must know every element it will see)."""
        self.setup()
        found = set()
        for data in self.splits.values():
            lazy = isinstance(data, PackedDataset)
            found.update(packed_data.species(data) if lazy else torch.unique(data.tensors[K.ATOMIC_NUMBERS]).tolist())
        return sorted(int(z) for z in found)

    def periodic(self) -> bool | None:
        """True when every structure of every split is periodic, False when none is, None when both occur."""
        self.setup()
        flags = set()
        for data in self.splits.values():
            lazy = isinstance(data, PackedDataset)
            flags.update(packed_data.periodic_flags(data) if lazy else data.tensors[K.PBC].any(dim=1).tolist())
        return flags.pop() if len(flags) == 1 else None

    def self_energies(self) -> Dict[int, float]:
        """Per-element reference energies (eV) fitted on the training split (``fit_self_energies``)."""
        train = self._split("train")
        if isinstance(train, PackedDataset):
            return packed_data.self_energies(train)
        return fit_self_energies(train)

    def statistics(self, self_energies: Mapping[int, float] | None = None) -> Dict[str, float | None]:
        """``energy_statistics`` of the training split (self-energies fitted on it when None)."""
        train = self._split("train")
        if self_energies is None:
            self_energies = self.self_energies()
        if isinstance(train, PackedDataset):
            return packed_data.statistics(train, self_energies)
        return energy_statistics(train, self_energies)

    def shortest_pair_distances(self, cutoff: float, split: str = "train") -> Dict[str, float]:
        """``shortest_pair_distances`` of a split (from a packed folder's stored values when it has them)."""
        data = self._split(split)
        if isinstance(data, PackedDataset):
            found = packed_data.shortest_pair_distances(data, cutoff)
            if found is not None:
                return found
        return shortest_pair_distances(data, cutoff)

    def dataset_sha256(self, split: str = "train") -> str:
        """``dataset_sha256`` of a split's structures as read (labels, pbc/cell overrides; no neighbour lists). For a
        packed folder, without reading the structures: ``packed_data.split_sha256`` (its files' sha256 from the
        manifest, the split's indices, labels, dtype and overrides)."""
        data = self._split(split)
        if split not in self._sha256 and isinstance(data, PackedDataset):
            self._sha256[split] = packed_data.split_sha256(data)
        return self._sha256[split]

    # ----------------------------------------------------------------------------------------- loaders

    def loader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """An ordered, unsharded loader of any split (batch size of that split unless given)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        return DataLoader(self._split(split), batch_size or self.batch_sizes[split], shuffle=False, **self._workers())

    def _workers(self) -> Dict[str, Any]:
        return {"collate_fn": collate, "num_workers": self.num_workers, "persistent_workers": self.num_workers > 0}

    def train_dataloader(self) -> ResumableLoader:
        return ResumableLoader(
            self._split("train"), self.batch_sizes["train"], seed=self.shuffle_seed, shuffle=True, **self._workers()
        )

    def val_dataloader(self) -> DataLoader | list:
        """Ordered validation loader; an empty list (Lightning then skips validation) without validation data."""
        self.setup()
        return self.loader("validation") if "validation" in self.splits else []

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.loader("predict")
