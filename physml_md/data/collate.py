"""Join structure (or batch) dictionaries into one batch dictionary (``physml_md.data.keys``): per-atom and
per-structure tensors (masks included) are concatenated, ``batch`` and ``n_atoms`` rebuilt; ``edge_index`` (offset
by the atoms before each input) and ``cell_shifts`` are kept only when every input has both.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import Tensor

from physml_md.data import keys as K

PER_ATOM_KEYS = frozenset({K.POSITIONS, K.ATOMIC_NUMBERS, K.ENERGIES, *K.PER_ATOM_LABELS})
PER_STRUCTURE_KEYS = frozenset({K.CELL, K.PBC, *K.PER_STRUCTURE_LABELS})
# rebuilt (batch, n_atoms) or kept only when every input has them (edges), never concatenated as they come
_NOT_JOINED = frozenset({K.EDGE_INDEX, K.CELL_SHIFTS, K.BATCH, K.N_ATOMS})


def _n_atoms(data: Dict[str, Tensor]) -> Tensor:
    n_atoms = data.get(K.N_ATOMS)
    if n_atoms is None:
        return torch.tensor([data[K.POSITIONS].shape[0]], dtype=torch.int64, device=data[K.POSITIONS].device)
    return n_atoms.reshape(-1).to(torch.int64)


def _cat(key: str, parts: List[Tensor]) -> Tensor:
    try:
        return torch.cat(parts, dim=0)
    except RuntimeError as exc:
        shapes = ", ".join(str(tuple(p.shape)) for p in parts)
        raise ValueError(f"cannot collate {key!r}: shapes {shapes} do not fit together ({exc})") from None


def _keys_of(structures: Sequence[Dict[str, Tensor]], known: frozenset) -> List[str]:
    """Every key of the inputs in order of appearance, after one ValueError for an undeclared or missing one."""
    all_keys = list(dict.fromkeys(key for data in structures for key in data))
    unknown = [k for k in all_keys if k not in known]
    if unknown:
        raise ValueError(
            f"collate does not know whether {', '.join(map(repr, unknown))} is per atom or per structure; "
            "pass it in extra_per_atom or extra_per_structure (or remove it)"
        )
    for key in (K.POSITIONS, K.ATOMIC_NUMBERS):
        lacking = [i for i, d in enumerate(structures) if key not in d]
        if lacking:
            raise ValueError(f"collate: input {lacking[0]} has no {key!r}")
    return all_keys


def _joined(key: str, structures: Sequence[Dict[str, Tensor]], rows: List[int]) -> Tensor:
    """``key`` of every input concatenated; zeros of ``rows[i]`` rows where input i lacks a label."""
    template = next(d[key] for d in structures if key in d)
    parts = []
    for i, data in enumerate(structures):
        if key in data:
            parts.append(data[key])
        elif key in K.LABEL_KEYS:
            parts.append(template.new_zeros((rows[i],) + tuple(template.shape[1:])))
        else:
            raise ValueError(f"collate: input {i} has no {key!r} but others have it; it is not a label")
    return _cat(key, parts)


def _mask(label: str, structures: Sequence[Dict[str, Tensor]], rows: List[int]) -> Tensor:
    """The label's mask over all inputs: an input's own mask, else True where it has the label."""
    parts = []
    for i, data in enumerate(structures):
        mask = data.get(K.mask_key(label))
        if mask is None:
            device = data[K.POSITIONS].device
            mask = torch.full((rows[i],), label in data, dtype=torch.bool, device=device)
        parts.append(mask.reshape(-1).to(torch.bool))
    return _cat(K.mask_key(label), parts)


def collate(
    structures: Sequence[Dict[str, Tensor]],
    extra_per_atom: Sequence[str] = (),
    extra_per_structure: Sequence[str] = (),
) -> Dict[str, Tensor]:
    """One batch dictionary of ``structures`` (each a structure or a batch dictionary).

    A label (``keys.LABEL_KEYS``) that some inputs lack is treated as absent there: zeros of the right shape and
    mask False. When an input has a label but no mask, its mask is True. Keys other than those of
    ``physml_md.data.keys`` must be declared in ``extra_per_atom`` or ``extra_per_structure`` (and be present in
    every input); an undeclared key is a ValueError. An empty sequence is a ValueError.
    """
    if len(structures) == 0:
        raise ValueError("collate needs at least one structure; got an empty sequence")
    per_atom = PER_ATOM_KEYS | set(extra_per_atom)
    masks = frozenset(K.mask_key(label) for label in K.LABEL_KEYS)
    all_keys = _keys_of(structures, per_atom | PER_STRUCTURE_KEYS | set(extra_per_structure) | masks | _NOT_JOINED)
    atom_rows = [int(d[K.POSITIONS].shape[0]) for d in structures]
    structure_rows = [int(_n_atoms(d).numel()) for d in structures]
    out = {
        key: _joined(key, structures, atom_rows if key in per_atom else structure_rows)
        for key in all_keys
        if key not in _NOT_JOINED and key not in masks
    }
    for label in (key for key in all_keys if key in K.LABEL_KEYS):
        out[K.mask_key(label)] = _mask(label, structures, structure_rows)

    device = out[K.POSITIONS].device
    counts = torch.cat([_n_atoms(d).to(device) for d in structures])
    out[K.N_ATOMS] = counts
    out[K.BATCH] = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)
    if int(counts.sum()) != out[K.POSITIONS].shape[0]:
        raise ValueError(
            f"collate: n_atoms sums to {int(counts.sum())} but there are {out[K.POSITIONS].shape[0]} positions"
        )
    if all(K.EDGE_INDEX in d and K.CELL_SHIFTS in d for d in structures):
        offsets = torch.cumsum(torch.tensor([0] + atom_rows[:-1], device=device), dim=0)
        out[K.EDGE_INDEX] = torch.cat([d[K.EDGE_INDEX] + offsets[i] for i, d in enumerate(structures)], dim=1)
        out[K.CELL_SHIFTS] = _cat(K.CELL_SHIFTS, [d[K.CELL_SHIFTS] for d in structures])
    return out
