"""Training with Lightning: ``run`` (``train``), ``module`` (``PotentialModule``), ``datamodule``,
``packed_data`` (splits of a packed folder), ``loader``, ``losses``, ``callbacks``, ``logs``, ``figures`` and ``api``
(``PhysMLModel``). Importing this package loads Lightning; the names below are imported on first use."""

from importlib import import_module

_EXPORTS = {
    "PhysMLModel": "physml_md.training.api",
    "load_from_dict": "physml_md.training.api",
    "AtomsDataModule": "physml_md.training.datamodule",
    "PotentialModule": "physml_md.training.module",
    "LossWeightMixing": "physml_md.training.callbacks",
    "TrainResult": "physml_md.training.run",
    "train": "physml_md.training.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'physml_md.training' has no attribute {name!r}")
