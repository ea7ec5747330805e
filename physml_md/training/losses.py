"""Loss components (modelforge's names) and their masked errors.

Structures (or atoms) whose label is missing are masked out (``<label>_mask``), never compared with zeros; a batch
without the label contributes exactly zero. Each loss is the mean squared error over the compared numbers, in eV
(eV/atom with ``per_atom_energy``), eV/angstrom, eV/angstrom^3 (stress), e*angstrom (dipole) and e (charge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import Tensor

from physml_md.config.types import LOSS_COMPONENTS
from physml_md.data import keys as K

__all__ = ["COMPONENTS", "Component", "masked_pair", "component_errors"]


@dataclass(frozen=True)
class Component:
    """One loss component: the output/label key it compares and whether the label is per atom."""

    key: str
    per_atom: bool


_COMPARED = {  # what each of the configuration's loss components compares
    "per_system_energy": Component(K.ENERGY, per_atom=False),
    "per_atom_force": Component(K.FORCES, per_atom=True),
    "per_system_stress": Component(K.STRESS, per_atom=False),
    "per_system_dipole_moment": Component(K.DIPOLE, per_atom=False),
    "per_system_total_charge": Component(K.TOTAL_CHARGE, per_atom=False),
    "per_atom_charge": Component(K.CHARGES, per_atom=True),
}
COMPONENTS: Dict[str, Component] = {name: _COMPARED[name] for name in LOSS_COMPONENTS}


def _structure_mask(batch: Dict[str, Tensor], key: str) -> Tensor:
    mask = batch.get(K.mask_key(key))
    if mask is None:
        n_structures = batch[K.N_ATOMS].shape[0]
        present = key in batch
        return torch.full((n_structures,), present, dtype=torch.bool, device=batch[K.POSITIONS].device)
    return mask.to(torch.bool)


def masked_pair(
    name: str, outputs: Dict[str, Tensor], batch: Dict[str, Tensor], per_atom_energy: bool = True
) -> Tuple[Tensor, Tensor] | None:
    """(prediction, reference) of component ``name`` restricted to the labelled rows, flattened.

    None when the model did not produce the output or the batch has no label for it (e.g. stress of a
    molecule batch). The energy is divided by the number of atoms when ``per_atom_energy``.
    """
    component = COMPONENTS[name]
    key = component.key
    if key not in outputs or key not in batch:
        return None
    mask = _structure_mask(batch, key)
    if component.per_atom:
        mask = mask.index_select(0, batch[K.BATCH])
    prediction = outputs[key]
    reference = batch[key].to(prediction.dtype)
    if name == "per_system_energy" and per_atom_energy:
        n_atoms = batch[K.N_ATOMS].to(prediction.dtype)
        prediction = prediction / n_atoms
        reference = reference / n_atoms
    return prediction[mask].reshape(-1), reference[mask].reshape(-1)


def component_errors(
    names, outputs: Dict[str, Tensor], batch: Dict[str, Tensor], per_atom_energy: bool = True
) -> Dict[str, Tuple[Tensor, Tensor, Tensor]]:
    """For each component name: (mse loss, prediction, reference); the loss keeps the autograd graph.

    A component without labelled rows in this batch gets a zero loss that still depends on the outputs (so
    every rank of a distributed run back-propagates through the same graph).
    """
    errors: Dict[str, Tuple[Tensor, Tensor, Tensor]] = {}
    anchor = outputs[K.ENERGY].sum() * 0.0
    for name in names:
        pair = masked_pair(name, outputs, batch, per_atom_energy)
        if pair is None or pair[0].numel() == 0:
            empty = anchor.new_zeros(0)
            errors[name] = (anchor, empty, empty)
            continue
        prediction, reference = pair
        errors[name] = (torch.mean((prediction - reference) ** 2), prediction, reference)
    return errors
