"""Data: ``keys`` (tensor names), ``elements``, ``structures`` and ``readers`` (ASE atoms to tensors), ``neighbors``,
``collate``, ``splits``, ``statistics``, ``hashing`` and ``packed/``. Never imports ``physml_md.models``; the ASE-based
parts are imported on first use, so that the models (which need keys and the neighbour list) do not load ASE."""

import importlib

from physml_md.data.collate import collate
from physml_md.data.hashing import dataset_sha256
from physml_md.data.neighbors import batch_neighbor_list, neighbor_list
from physml_md.data.statistics import energy_statistics, fit_self_energies

_LAZY = {
    "LabelKeys": "physml_md.data.structures",
    "atoms_to_dict": "physml_md.data.structures",
    "dict_to_atoms": "physml_md.data.structures",
    "read_structures": "physml_md.data.readers",
    "read_dataset": "physml_md.data.readers",
    "SUPPORTED_SUFFIXES": "physml_md.data.readers",
}

__all__ = [
    "collate",
    "dataset_sha256",
    "batch_neighbor_list",
    "neighbor_list",
    "energy_statistics",
    "fit_self_energies",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'physml_md.data' has no attribute {name!r}")
