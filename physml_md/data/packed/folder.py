"""Packed folders: structures with labels as ``.npy`` arrays, read one structure at a time.

A packed folder (``physml_md.data.packed.writer``, ``physml-md pack``) holds ``manifest.json`` (format, labels, each
chunk's files with byte sizes and sha256, and a summary; written last) and one ``chunk-000000/`` folder per chunk
(an append adds chunks, never changes one). A chunk of B structures, N atoms: ``positions`` [N, 3] float64,
``atomic_numbers`` [N] uint8, ``n_atoms`` [B] int64, ``cell`` [B, 3, 3], ``pbc`` [B, 3] bool; per label
``<label>_mask`` [B] bool and, when any structure has it, ``<label>`` (shapes of ``keys``, float64, bit for bit the
source's); ``records`` [B] str ("s:<text>" or "i:<integer>"); ``forces_sq`` [B] (sum of squared force components)
and ``pairs_structure``/``pairs_code``/``pairs_distance`` [P] (shortest distance per element pair within
``pair_cutoff``; code = 256 Z_low + Z_high); with ``pack --neighbor-cutoff R`` (manifest ``neighbor_cutoff``, format
version 2; version 1 is read too) ``neighbor_counts`` [B] int64, ``neighbor_index`` [E, 2] (atom indices within
the structure) and ``neighbor_shifts`` [E, 3] (the smallest of int8/16/32 that holds them): ``neighbor_list`` of
the float64 structure at R.

``PackedFolder`` checks the manifest and every file's size on opening (``PackedFolderError`` naming the file), then
reads structures with ``os.pread`` (no mapping kept: memory stays flat; safe in forked DataLoader workers).
``PackedDataset`` is the torch Dataset of some of them, each neighbour list taken from the stored one (at a cut-off
<= the stored one; ``PackedFolder.neighbors``) or computed when read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from physml_md.data import keys as K
from physml_md.data.neighbors import neighbor_list
from physml_md.data.structures import structure_inputs

FORMAT_NAME = "physml-md packed structures"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: without stored neighbour lists
NEIGHBOR_ARRAYS = ("neighbor_counts", "neighbor_index", "neighbor_shifts")
MANIFEST = "manifest.json"
PER_ATOM_ARRAYS = frozenset({K.POSITIONS, K.ATOMIC_NUMBERS, *K.PER_ATOM_LABELS})


class PackedFolderError(ValueError):
    """A folder that is not a complete, undamaged packed folder (the message names the file)."""


def is_packed_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder with a packed-folder manifest (complete or not is checked on opening)."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> Dict[str, Any]:
    """The manifest of ``folder``, checked for format name and version (``PackedFolderError`` otherwise)."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise PackedFolderError(f"{folder} is not a folder: give a folder written by physml-md pack")
    if not path.is_file():
        raise PackedFolderError(
            f"{folder} has no {MANIFEST}: it is not a complete packed folder (a pack that was stopped leaves none); "
            "pack the data again"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PackedFolderError(f"{path} is damaged ({exc}); pack the data again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise PackedFolderError(f"{path} is not a {FORMAT_NAME!r} manifest; give a folder written by physml-md pack")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise PackedFolderError(
            f"{path} has format version {manifest.get('format_version')!r}; this physml-md reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: pack the data again with this version"
        )
    chunks = manifest.get("chunks")
    if not isinstance(chunks, list) or not all(isinstance(c, dict) and "files" in c for c in chunks):
        raise PackedFolderError(f"{path} is damaged (no list of chunks); pack the data again")
    return manifest


def _npy_layout(path: Path) -> Tuple[np.dtype, Tuple[int, ...], int]:
    """(dtype, shape, offset of the data) of a C-ordered ``.npy`` file."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            offset = handle.tell()
    except (OSError, ValueError) as exc:
        raise PackedFolderError(f"{path} is damaged ({exc}); pack the data again") from None
    if fortran:
        raise PackedFolderError(f"{path} is Fortran-ordered; pack the data again")
    return dtype, tuple(shape), offset


class _Chunk:
    def __init__(self, folder: Path, record: Dict[str, Any], verify: bool):
        self.name = str(record.get("name"))
        self.path = folder / self.name
        # name -> (path, dtype, shape, offset of the data, bytes per row, shape of a row)
        self.arrays: Dict[str, Tuple[Path, np.dtype, Tuple[int, ...], int, int, Tuple[int, ...]]] = {}
        for filename, entry in record["files"].items():
            path = self.path / filename
            if not path.is_file():
                raise PackedFolderError(f"{path} is missing: the folder is damaged; pack the data again")
            size = path.stat().st_size
            if size != entry.get("bytes"):
                raise PackedFolderError(
                    f"{path} has {size} bytes, the manifest says {entry.get('bytes')}: the file is truncated or "
                    "damaged; pack the data again"
                )
            if verify and file_sha256(path) != entry.get("sha256"):
                raise PackedFolderError(f"{path} does not match its sha256 in the manifest: it is damaged")
            dtype, shape, offset = _npy_layout(path)
            if offset + int(np.prod(shape)) * dtype.itemsize != size:
                raise PackedFolderError(f"{path} holds fewer bytes than its header says: it is truncated")
            row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            self.arrays[filename.removesuffix(".npy")] = (path, dtype, shape, offset, row, tuple(shape[1:]))
        self.n_atoms = self.load(K.N_ATOMS)
        self.atom_start = np.concatenate([[0], np.cumsum(self.n_atoms)]).astype(np.int64)
        if len(self.n_atoms) != record.get("n_structures") or self.atom_start[-1] != record.get("n_atoms"):
            raise PackedFolderError(f"{self.path / 'n_atoms.npy'} does not match the manifest's counts: damaged")
        self.edge_start = None
        if "neighbor_counts" in self.arrays:
            self.edge_start = np.concatenate([[0], np.cumsum(self.load("neighbor_counts"))]).astype(np.int64)
            if self.edge_start[-1] != self.arrays["neighbor_index"][2][0]:
                raise PackedFolderError(f"{self.path / 'neighbor_counts.npy'} does not match neighbor_index: damaged")

    def load(self, name: str) -> np.ndarray:
        """A whole array of this chunk, read into memory."""
        return np.load(self.arrays[name][0], allow_pickle=False)


class PackedFolder:
    """A packed folder opened for reading (see the module docstring). ``verify`` also checks every sha256."""

    def __init__(self, path: str | os.PathLike, verify: bool = False):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.labels: List[str] = list(self.manifest.get("labels", []))
        self.chunks = [_Chunk(self.path, record, verify) for record in self.manifest["chunks"]]
        sizes = [len(chunk.n_atoms) for chunk in self.chunks]
        self.structure_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._fds: Dict[Path, int] = {}  # (a forked worker shares them: pread keeps no file position)

    def __len__(self) -> int:
        return int(self.structure_start[-1])

    def __getstate__(self) -> Dict[str, Any]:  # (DataLoader workers started by spawn open their own files)
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def summary(self) -> Dict[str, Any]:
        return dict(self.manifest.get("summary") or {})

    def locate(self, index: int) -> Tuple[_Chunk, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"structure {index} of {len(self)} in {self.path}")
        c = int(np.searchsorted(self.structure_start, index, side="right")) - 1
        return self.chunks[c], index - int(self.structure_start[c])

    def _read(self, chunk: _Chunk, name: str, start: int, stop: int) -> np.ndarray:
        path, dtype, _, offset, row, row_shape = chunk.arrays[name]
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        buffer = os.pread(fd, (stop - start) * row, offset + start * row)
        return np.frombuffer(buffer, dtype=dtype).reshape((stop - start, *row_shape))

    def arrays(self, index: int) -> Dict[str, np.ndarray]:
        """The stored arrays of structure ``index`` (per-structure arrays with a leading dimension of 1)."""
        chunk, i = self.locate(int(index))
        a0, a1 = int(chunk.atom_start[i]), int(chunk.atom_start[i + 1])
        out = {}
        for name in chunk.arrays:
            if name.startswith(("pairs_", "neighbor_")) or name in ("forces_sq", "records"):
                continue
            out[name] = self._read(chunk, name, *((a0, a1) if name in PER_ATOM_ARRAYS else (i, i + 1)))
        return out

    def structure(
        self, index: int, labels: Sequence[str] | None = None, dtype: torch.dtype = torch.float64
    ) -> Dict[str, Tensor]:
        """Structure ``index`` as ``atoms_to_dict`` makes it: inputs, and for each of ``labels`` (default: the stored
        ones) the label (zeros when the structure or the folder lacks it) and its mask."""
        stored = self.arrays(index)
        n = int(stored[K.N_ATOMS][0])
        data = structure_inputs(stored[K.POSITIONS], stored[K.ATOMIC_NUMBERS], stored[K.CELL], stored[K.PBC], dtype)
        for label in self.labels if labels is None else labels:
            mask = stored.get(K.mask_key(label))
            present = mask is not None and bool(mask[0])
            shape = K.label_shape(label, n)
            value = stored[label].reshape(shape) if present else np.zeros(shape)
            data[label] = torch.tensor(value, dtype=dtype)
            data[K.mask_key(label)] = torch.tensor([present], dtype=torch.bool)
        return data

    def neighbors(self, index: int, cutoff: float, positions: Tensor, cell: Tensor) -> Tuple[Tensor, Tensor] | None:
        """``neighbor_list(positions, cell, pbc, cutoff)`` of structure ``index`` from its stored list (the same
        edges; the same order too at the stored cut-off in float64), or None when the folder stores none within
        ``cutoff`` (then compute it). ``positions``/``cell``: the structure's, as read (in its dtype); below float64
        the stored list is used only for a cut-off shorter than the stored one by more than the rounding can move a
        distance."""
        stored = self.manifest.get("neighbor_cutoff")
        chunk, i = self.locate(int(index))
        if stored is None or chunk.edge_start is None or not cutoff <= stored:
            return None
        e0, e1 = int(chunk.edge_start[i]), int(chunk.edge_start[i + 1])
        pairs = self._read(chunk, "neighbor_index", e0, e1).astype(np.int64)
        shifts = self._read(chunk, "neighbor_shifts", e0, e1).astype(np.int64)
        exact = positions.dtype == torch.float64 and cell.dtype == torch.float64
        if len(pairs) and not (exact and cutoff == stored):
            x, box = positions.detach().double().numpy(), cell.detach().double().numpy()
            if not exact:  # the stored list (from float64) must hold every pair within cutoff of the rounded structure
                reach = np.abs(x).max() + np.abs(box).max() * (1.0 + np.abs(shifts).max())
                if stored - cutoff <= 16.0 * torch.finfo(positions.dtype).eps * (1.0 + reach):
                    return None
            r = x[pairs[:, 1]] - x[pairs[:, 0]] + shifts @ box
            keep = np.einsum("ij,ij->i", r, r) < cutoff * cutoff
            pairs, shifts = pairs[keep], shifts[keep]
        return torch.from_numpy(np.ascontiguousarray(pairs.T)), torch.from_numpy(shifts)

    def column(self, name: str, indices: np.ndarray | None = None) -> np.ndarray:
        """A per-structure array over the folder (or at sorted ``indices``); a missing label is zeros."""
        parts = []
        for chunk in self.chunks:
            if name in chunk.arrays:
                parts.append(chunk.load(name))
            else:
                shape = K.LABEL_SHAPES.get(name.removesuffix(K.MASK_SUFFIX), ())
                dtype = bool if name.endswith(K.MASK_SUFFIX) else np.float64
                parts.append(np.zeros((len(chunk.n_atoms), *shape), dtype=dtype))
        whole = np.concatenate(parts)
        return whole if indices is None else whole[indices]

    def records(self) -> List[str | int]:
        """Each structure's record (``random_record_splitting_strategy``): its ``info[manifest["record_key"]]``,
        else its chemical formula; strings and integers as they were."""
        found: List[str | int] = []
        for chunk in self.chunks:
            found.extend(value[2:] if value[0] == "s" else int(value[2:]) for value in chunk.load("records").tolist())
        return found

    def composition(self) -> Tuple[List[int], np.ndarray]:
        """(the elements of the folder, sorted; [n_structures, n_elements] float64 counts of each in each structure),
        counted chunk by chunk (memory: the counts, not the atoms) and kept."""
        if getattr(self, "_composition", None) is None:
            numbers = [chunk.load(K.ATOMIC_NUMBERS) for chunk in self.chunks]
            species = sorted({int(z) for part in numbers for z in np.unique(part)})
            column = np.zeros(256, dtype=np.int64)
            column[species] = np.arange(len(species))
            parts = []
            for chunk, z in zip(self.chunks, numbers):
                owner = np.repeat(np.arange(len(chunk.n_atoms)), chunk.n_atoms)
                flat = np.bincount(owner * len(species) + column[z], minlength=len(chunk.n_atoms) * len(species))
                parts.append(flat.reshape(len(chunk.n_atoms), len(species)).astype(np.float64))
            self._composition = (species, np.concatenate(parts) if parts else np.zeros((0, len(species))))
        return self._composition

    def shortest_pair_distances(self, indices: np.ndarray, cutoff: float) -> Dict[Tuple[int, int], float]:
        """``{(Z_low, Z_high): shortest distance}`` over the structures ``indices``, pairs closer than ``cutoff``
        (at most the manifest's ``pair_cutoff``)."""
        wanted = np.zeros(len(self), dtype=bool)
        wanted[indices] = True
        shortest: Dict[Tuple[int, int], float] = {}
        for c, chunk in enumerate(self.chunks):
            if "pairs_code" not in chunk.arrays:
                continue
            structure = chunk.load("pairs_structure") + self.structure_start[c]
            code, distance = chunk.load("pairs_code"), chunk.load("pairs_distance")
            keep = wanted[structure] & (distance < cutoff)
            for value in np.unique(code[keep]):
                key = (int(value) // 256, int(value) % 256)
                found = float(distance[keep & (code == value)].min())
                shortest[key] = min(found, shortest.get(key, found))
        return shortest


class PackedDataset(Dataset):
    """The structures ``indices`` of a ``PackedFolder`` as structure dicts in ``dtype`` with the ``labels`` asked for,
    ``pbc``/``cell`` overrides applied and, when ``cutoff`` is given, ``edge_index``/``cell_shifts``: the stored
    list (``PackedFolder.neighbors``; without overrides) or computed on reading (``neighbor_list``, the in-memory
    path's call). ``what`` names it in errors.
    ``log``, when a list, records every folder index read (to check what a process reads)."""

    def __init__(
        self,
        folder: PackedFolder,
        indices: Sequence[int],
        labels: Sequence[str],
        dtype: torch.dtype = torch.float64,
        cutoff: float | None = None,
        pbc: Sequence[bool] | None = None,
        cell: Sequence[Sequence[float]] | None = None,
        what: str = "packed data",
        log: List[int] | None = None,
    ):
        self.folder = folder
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = list(labels)
        self.dtype = dtype
        self.cutoff = cutoff
        self.pbc = pbc
        self.cell = cell
        self.what = what
        self.log = log

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"structure {index} of {len(self)}")
        index = index % len(self)
        source = int(self.indices[index])
        if self.log is not None:
            self.log.append(source)
        data = self.folder.structure(source, self.labels, self.dtype)
        if self.pbc is not None:
            data[K.PBC] = torch.tensor([self.pbc], dtype=torch.bool)
        if self.cell is not None:
            data[K.CELL] = torch.tensor([self.cell], dtype=self.dtype)
        overridden = self.pbc is not None or self.cell is not None
        edges = None
        if self.cutoff is not None and not overridden:
            edges = self.folder.neighbors(source, self.cutoff, data[K.POSITIONS], data[K.CELL][0])
        if self.cutoff is not None and edges is None:
            try:
                edges = neighbor_list(data[K.POSITIONS], data[K.CELL][0], data[K.PBC][0], self.cutoff)
            except ValueError as exc:
                raise ValueError(f"{self.what} structure {index}: {exc}") from None
        if edges is not None:
            data[K.EDGE_INDEX], data[K.CELL_SHIFTS] = edges
        return data

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def per_structure(self, name: str) -> np.ndarray:
        """A per-structure array (``n_atoms``, ``pbc``, a label mask, ...) of these structures, in their order."""
        return self.folder.column(name)[self.indices]
