"""Potentials: energy models, priors and the exported top-level ``Potential`` module.

This package never imports Lightning, ASE calculators or OpenMM.
"""

from physml_md.models.build import (
    MAX_CUTOFF,
    MODEL_NAMES,
    PaiNN,
    Potential,
    TensorNet,
    build_model,
    check_cutoff,
    resolve_dtype,
    to_atomic_numbers,
)

__all__ = [
    "PaiNN",
    "TensorNet",
    "Potential",
    "build_model",
    "MODEL_NAMES",
    "MAX_CUTOFF",
    "check_cutoff",
    "resolve_dtype",
    "to_atomic_numbers",
]
