"""Convert between ``ase.Atoms`` and the structure dictionary of ``physml_md.data.keys`` (a batch of one).

Labels are masked, never faked: for every label that ``LabelKeys`` asks for, ``mask_key(label)`` is a [1] bool
tensor, True when the structure carries the label; a missing label holds zeros and mask False.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict

import ase
import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from torch import Tensor

from physml_md.data import keys as K

# Where each label is looked for after the calculator results: per-structure labels in atoms.info,
# per-atom labels in atoms.arrays.
_PER_ATOM = frozenset(K.PER_ATOM_LABELS)


@dataclass(frozen=True)
class LabelKeys:
    """Where each label lives in an ``ase.Atoms``: the name to look up for each of our labels.

    For each label the lookup order is ``atoms.calc.results`` (what ``ase.io.read`` of an extxyz file or an
    ASE database attaches as a ``SinglePointCalculator``; nothing is calculated), then ``atoms.info`` for
    per-structure labels (energy, stress, total_charge, dipole) or ``atoms.arrays`` for per-atom labels
    (forces, charges). A field set to ``None`` means "do not read this label" (it then gets no mask either).

    Example: a file that stores its reference energy as ``REF_energy`` and has no stress:
    ``LabelKeys(energy="REF_energy", stress=None)``.
    """

    energy: str | None = "energy"
    forces: str | None = "forces"
    stress: str | None = "stress"
    charges: str | None = "charges"
    total_charge: str | None = "total_charge"
    dipole: str | None = "dipole"

    def requested(self) -> Dict[str, str]:
        """``{our label: name in the Atoms}`` for every label that is read (fields not None)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


DEFAULT_KEYS = LabelKeys()  # ASE's own names for every label


def find_label(atoms: ase.Atoms, label: str, name: str) -> Any | None:
    """The raw value of ``label`` stored under ``name`` in ``atoms``, or None (see ``LabelKeys`` for the order)."""
    results = getattr(atoms.calc, "results", None)
    value = results.get(name) if isinstance(results, dict) else None
    return (atoms.arrays if label in _PER_ATOM else atoms.info).get(name) if value is None else value


def _check_not_stale(atoms: ase.Atoms) -> None:
    """Refuse calculator results that belong to other positions, cell, pbc or atomic numbers."""
    calc = atoms.calc
    if not getattr(calc, "results", None) or getattr(calc, "atoms", None) is None or not hasattr(calc, "check_state"):
        return
    changes = calc.check_state(atoms)
    if changes:
        raise ValueError(
            f"the calculator results attached to this structure are stale: {', '.join(changes)} changed after "
            "they were computed; recompute them (e.g. atoms.get_potential_energy()) or attach fresh results"
        )


def _stress_3x3(value: np.ndarray) -> np.ndarray:
    """Stress given as Voigt 6 (ASE order xx yy zz yz xz xy), 9 values or 3x3 -> full 3x3."""
    if value.shape == (3, 3):
        return value
    flat = value.reshape(-1)
    if flat.shape == (9,):
        return flat.reshape(3, 3)
    if flat.shape == (6,):
        xx, yy, zz, yz, xz, xy = flat
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError(f"stress has shape {value.shape}; expected Voigt 6 (xx yy zz yz xz xy), 9 values or 3x3")


def _label_array(label: str, name: str, value: Any, n: int) -> np.ndarray | None:
    """Convert a raw label value to a float64 array of the structure-dict shape; None if it is all NaN."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"label {label!r} (stored as {name!r}) is not numeric: {value!r}") from None
    if label == K.STRESS:
        array = _stress_3x3(array)
    shape = K.label_shape(label, n)
    if array.size != int(np.prod(shape)):
        raise ValueError(
            f"label {label!r} (stored as {name!r}) has shape {array.shape}; a structure of {n} atoms needs "
            f"{shape} (or the same number of values)"
        )
    array = array.reshape(shape)
    if np.isnan(array).all():
        return None  # an all-NaN label is how some files say "missing"
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(
            f"label {label!r} (stored as {name!r}) is not finite: {non_finite_entries(label, array)}; fix the "
            "file, or store the whole label as NaN to mark it missing"
        )
    return array


_SHOW_ENTRIES = 5  # how many bad entries a message lists


def non_finite_entries(label: str, array: np.ndarray) -> str:
    """The non-finite entries of a label array, named for a message: "atom 3 (nan), atom 7 (inf)" for a per-atom
    label, "nan" or "inf" for a per-structure one; at most a few, then how many more."""
    array = np.asarray(array, dtype=np.float64)
    if label not in _PER_ATOM:
        return ", ".join(sorted({str(v) for v in array[~np.isfinite(array)].tolist()}))
    rows = array.reshape(array.shape[0], -1)
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    shown = [f"atom {i} ({', '.join(sorted({str(v) for v in rows[i][~np.isfinite(rows[i])].tolist()}))})" for i in bad]
    more = len(shown) - _SHOW_ENTRIES
    return ", ".join(shown[:_SHOW_ENTRIES]) + (f" and {more} more atoms" if more > 0 else "")


def atoms_to_dict(
    atoms: ase.Atoms, keys: LabelKeys = DEFAULT_KEYS, dtype: torch.dtype = torch.float64
) -> Dict[str, Tensor]:
    """Structure dictionary (a batch of one) of ``atoms``, with the labels that ``keys`` asks for.

    Floats are ``dtype``; atomic_numbers, batch and n_atoms are int64; pbc and masks are bool. Units are taken
    as they are stored (ASE's: angstrom, eV, e). A non-periodic structure keeps its cell (zeros when it has
    none). A label that is not found, or is stored as all NaN, is zeros with mask False; a label with some
    non-finite values (or any infinity) is an error naming the atoms. Calculator results that no longer match the
    atoms (positions, cell, pbc or numbers changed since) are an error.
    """
    _check_not_stale(atoms)
    n = len(atoms)
    data = structure_inputs(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc, dtype)
    for label, name in keys.requested().items():
        value = find_label(atoms, label, name)
        array = None if value is None else _label_array(label, name, value, n)
        data[label] = torch.tensor(np.zeros(K.label_shape(label, n)) if array is None else array, dtype=dtype)
        data[K.mask_key(label)] = torch.tensor([array is not None], dtype=torch.bool)
    return data


def structure_inputs(positions, numbers, cell, pbc, dtype: torch.dtype = torch.float64) -> Dict[str, Tensor]:
    """The inputs of one structure's dictionary (positions, atomic_numbers, cell, pbc, batch, n_atoms) from arrays
    of the values in any shape (a packed folder's rows, an ``ase.Atoms``' attributes)."""
    n = int(np.asarray(numbers).size)
    return {
        K.POSITIONS: torch.tensor(np.asarray(positions), dtype=dtype).reshape(n, 3),
        K.ATOMIC_NUMBERS: torch.tensor(np.asarray(numbers), dtype=torch.int64).reshape(n),
        K.CELL: torch.tensor(np.asarray(cell), dtype=dtype).reshape(1, 3, 3),
        K.PBC: torch.tensor(np.asarray(pbc), dtype=torch.bool).reshape(1, 3),
        K.BATCH: torch.zeros(n, dtype=torch.int64),
        K.N_ATOMS: torch.tensor([n], dtype=torch.int64),
    }


def dict_to_atoms(data: Dict[str, Tensor]) -> ase.Atoms:
    """``ase.Atoms`` of a single-structure dictionary; present labels go to a ``SinglePointCalculator``.

    energy, forces, stress (as Voigt 6, ASE order), charges and dipole become calculator results;
    total_charge goes to ``atoms.info["total_charge"]``. A label whose mask is False is left out.
    """
    n_atoms = data.get(K.N_ATOMS)
    if n_atoms is not None and n_atoms.numel() != 1:
        raise ValueError(f"dict_to_atoms takes a single structure; this batch holds {n_atoms.numel()}")
    atoms = ase.Atoms(
        numbers=data[K.ATOMIC_NUMBERS].detach().cpu().numpy(),
        positions=data[K.POSITIONS].detach().cpu().numpy(),
        cell=data[K.CELL].detach().cpu().numpy().reshape(3, 3) if K.CELL in data else None,
        pbc=data[K.PBC].detach().cpu().numpy().reshape(3) if K.PBC in data else False,
    )
    results: Dict[str, Any] = {}
    for label in K.LABEL_KEYS:
        if label not in data:
            continue
        mask = data.get(K.mask_key(label))
        if mask is not None and not bool(mask.reshape(-1)[0]):
            continue
        value = data[label].detach().cpu().numpy().astype(np.float64)
        if label == K.ENERGY:
            results[label] = float(value.reshape(-1)[0])
        elif label == K.STRESS:
            s = value.reshape(3, 3)
            results[label] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        elif label == K.TOTAL_CHARGE:
            atoms.info[label] = float(value.reshape(-1)[0])
        elif label == K.DIPOLE:
            results[label] = value.reshape(3)
        else:
            results[label] = value
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms
