"""Read structures with their labels from extxyz files and ASE databases: ``read_structures`` (``ase.Atoms``),
``read_dataset`` (structure dictionaries, required labels checked) and ``read_structure`` (one structure, an MD
start, of any file ASE reads). Units as stored (ASE's). An empty or damaged file or an index past the end is one
ValueError that says so.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import ase
import ase.db
import ase.io
import numpy as np
import torch
from ase.io.formats import UnknownFileTypeError, string2index
from torch import Tensor

from physml_md.data import keys as K
from physml_md.data.statistics import warn_label_outliers
from physml_md.data.structures import DEFAULT_KEYS, LabelKeys, atoms_to_dict, find_label

# file suffix -> how it is read
_FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".db": "db", ".json": "db"}
SUPPORTED_SUFFIXES = tuple(_FORMATS)

Index = Union[str, int, slice]
Source = Union[str, Path, Sequence[ase.Atoms]]

_SHOW_INDICES = 5  # how many structure indices an error message lists


def _read_db(path: Path, index: Index) -> List[ase.Atoms]:
    """Rows of an ASE database as Atoms; key_value_pairs go to ``info``, ``data`` to ``arrays`` or ``info``.

    ``ase.io.read`` drops key_value_pairs and data; custom labels (e.g. ``REF_energy``) live there.
    A ``data`` entry whose first dimension is the number of atoms goes to ``arrays``, anything else to ``info``.
    """
    images = []
    with ase.db.connect(str(path), type="db" if path.suffix.lower() == ".db" else "json") as db:
        for row in db.select():
            atoms = row.toatoms()
            atoms.info.update(row.key_value_pairs)
            for name, value in row.get("data", {}).items():
                if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == len(atoms):
                    if name not in atoms.arrays:
                        atoms.arrays[name] = value
                else:
                    atoms.info.setdefault(name, value)
            images.append(atoms)
    selected = images[index]
    return selected if isinstance(selected, list) else [selected]


def read_structures(path: Union[str, Path], index: Index = ":") -> List[ase.Atoms]:
    """Read the structures of an extxyz file (``.xyz``, ``.extxyz``) or an ASE database (``.db``, ``.json``).

    ``index`` selects structures as in ``ase.io.read`` (``":"``, ``"-10:"``, an int or a slice); the result is
    always a list. Raises FileNotFoundError for a missing file and ValueError for an unknown suffix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot read {str(path)!r}: unknown file type {path.suffix!r}; supported: "
            f"{', '.join(SUPPORTED_SUFFIXES)} (extxyz files and ASE databases). Convert other formats with "
            "ase.io.read and ase.io.write(..., format='extxyz')"
        )
    selection = string2index(index) if isinstance(index, str) else index
    if not isinstance(selection, (int, slice)):
        raise ValueError(f"index {index!r} is not a structure index; use an int, a slice or a string like '-10:'")
    index = selection
    _check_not_empty(path)
    try:
        images = _read_db(path, index) if fmt == "db" else _ase_read(path, index, fmt)
    except (IndexError, StopIteration):  # an int index past the end
        count = len(read_structures(path))
        raise ValueError(
            f"cannot read {str(path)!r} as {fmt} (index={index!r}): {_out_of_range(path, index, count)}"
        ) from None
    except (ValueError, KeyError, OSError, UnknownFileTypeError, sqlite3.Error) as exc:
        raise ValueError(
            f"cannot read {str(path)!r} as {fmt} (index={index!r}): {type(exc).__name__}: {exc}; the file may be "
            "truncated or damaged: check it, e.g. with ase.io.read, or write it again"
        ) from None
    images = images if isinstance(images, list) else [images]
    if not images and index != slice(None):
        raise ValueError(
            f"index {index!r} selects no structures of {str(path)!r}, which holds {len(read_structures(path))}"
        )
    _check_atoms(path, images, index)
    return images


def _ase_read(path: Path, index: int | slice, fmt: str | None = None):
    """``ase.io.read``, but an int index below -N is past the start (ase.io.read gives the first structure)."""
    if isinstance(index, int) and index < 0:
        return ase.io.read(str(path), index=":", format=fmt)[index]
    return ase.io.read(str(path), index=index, format=fmt)


def _check_atoms(path: Path, images: List[ase.Atoms], index: int | slice) -> None:
    """Refuse a structure without atoms (it has no energy per atom, nothing to learn), naming its index in the file."""
    empty = [i for i, atoms in enumerate(images) if len(atoms) == 0]
    if not empty:
        return
    if index != slice(None):  # the selection's positions -> the file's indices
        count = len(ase.io.read(str(path), index=":")) if _FORMATS.get(path.suffix.lower()) != "db" else None
        count = len(_read_db(path, slice(None))) if count is None else count
        positions = range(count)[index]
        empty = [positions if isinstance(positions, int) else positions[i] for i in empty]
    which = f"structures {_shown(empty)} (counted from 0) have" if len(empty) > 1 else f"structure {empty[0]} has"
    raise ValueError(
        f"{str(path)!r}: {which} no atoms; remove {'them' if len(empty) > 1 else 'it'} from the file (a structure "
        "without atoms has nothing to learn from or predict for)"
    )


def _check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise ValueError(f"{str(path)!r} holds no structures (the file is empty): give a file with at least one")


def _out_of_range(path: Path, index: int, count: int) -> str:
    plural = "" if count == 1 else "s"
    valid = f"valid: {-count} to {count - 1}" if count else "it holds none"
    return f"index {index} is out of range: {str(path)!r} holds {count} structure{plural} ({valid})"


_READ_ERRORS = (ValueError, KeyError, IndexError, StopIteration, OSError, EOFError, AssertionError, TypeError)


def read_structure(path: Union[str, Path], index: int = 0) -> ase.Atoms:
    """One structure of any file that ``ase.io.read`` reads (its format guessed from the name or content).

    Raises FileNotFoundError for a missing file and one ValueError naming the problem for an empty file, a file
    ASE cannot parse (e.g. truncated) or an ``index`` past the end (it then says how many structures there are).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    _check_not_empty(path)
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"index must be an integer (which structure of the file), got {index!r}")
    atoms = None
    try:
        atoms = _ase_read(path, index)
    except (IndexError, StopIteration):
        pass  # past the end: counted below
    except (*_READ_ERRORS, UnknownFileTypeError, sqlite3.Error) as exc:
        raise ValueError(
            f"cannot read {str(path)!r} ({type(exc).__name__}: {exc}); the file may be truncated or damaged, or not "
            "a structure file: check it, e.g. with ase.io.read, or write it again"
        ) from None
    if atoms is not None:
        _check_atoms(path, [atoms], index)
        return atoms
    try:
        count = len(ase.io.read(str(path), index=":"))
    except (*_READ_ERRORS, UnknownFileTypeError, sqlite3.Error) as exc:
        raise ValueError(
            f"cannot read structure {index} of {str(path)!r} ({type(exc).__name__}: {exc}); the file may be "
            "truncated or damaged: check it, e.g. with ase.io.read, or write it again"
        ) from None
    raise ValueError(_out_of_range(path, index, count))


def _shown(indices: List[int]) -> str:
    return ", ".join(str(i) for i in indices[:_SHOW_INDICES]) + (", ..." if len(indices) > _SHOW_INDICES else "")


def _found_names(atoms: ase.Atoms) -> List[str]:
    """Names under which ``atoms`` stores anything: calculator results, info, arrays (for error messages)."""
    results = getattr(atoms.calc, "results", None) or {}
    names = [f"calc.results[{k!r}]" for k in results]
    names += [f"info[{k!r}]" for k in atoms.info]
    names += [f"arrays[{k!r}]" for k in atoms.arrays if k not in ("numbers", "positions")]
    return names


def _images(source: Source, where: str | None) -> Tuple[List[ase.Atoms], str]:
    """(the structures of ``source``, how messages name it)."""
    if isinstance(source, (str, Path)):
        return read_structures(source), repr(str(source))
    images = list(source)
    bad = [type(a).__name__ for a in images if not isinstance(a, ase.Atoms)]
    if bad:
        raise TypeError(f"read_dataset takes a path or a list of ase.Atoms; the list holds {bad[0]}")
    return images, where or "the given list of structures"


def _check_required(required: Sequence[str], requested: Dict[str, str]) -> None:
    for label in required:
        if label not in K.LABEL_KEYS:
            raise ValueError(f"unknown required label {label!r}; labels are {', '.join(K.LABEL_KEYS)}")
        if label not in requested:
            raise ValueError(
                f"{label!r} is required but LabelKeys({label}=None) says not to read it; "
                f"set keys.{label} or drop {label!r} from required"
            )


def _missing_label_error(label: str, name: str, missing: List[int], images, n: int, where: str) -> ValueError:
    """The error for a required ``label`` (looked up as ``name``) that the structures ``missing`` lack."""
    nan = [i for i in missing if find_label(images[i], label, name) is not None]
    if nan:  # stored, but as NaN (how some files mark a missing value): the name is right
        return ValueError(
            f"required label {label!r} (stored as {name!r}) is stored as NaN in {len(nan)} of "
            f"{n} structures of {where} (indices {_shown(nan)}), which marks it missing: give those "
            f"structures a finite {label!r} or remove them (or drop {label!r} from required)"
        )
    found = sorted({found_name for i in missing for found_name in _found_names(images[i])})
    example = "REF_" + label
    return ValueError(
        f"required label {label!r} (looked up as {name!r} in calc.results, "
        f"{'arrays' if label in K.PER_ATOM_LABELS else 'info'}) is missing in {len(missing)} of {n} "
        f"structures of {where} (indices {_shown(missing)}). Those structures store: "
        f"{', '.join(found) if found else 'nothing but positions and numbers'}. "
        f"Fix: set keys.{label} to the name your file uses, e.g. LabelKeys({label}={example!r}), "
        f"or drop {label!r} from required"
    )


def read_dataset(
    source: Source,
    keys: LabelKeys = DEFAULT_KEYS,
    required: Sequence[str] = (K.ENERGY,),
    dtype: torch.dtype = torch.float64,
    where: str | None = None,
) -> List[Dict[str, Tensor]]:
    """Structure dictionaries of a file (see ``read_structures``) or of a list of ``ase.Atoms``.

    Every label named in ``keys`` is read (missing ones are masked); each label in ``required`` must be present
    in every structure, otherwise one ValueError says which label, how many structures lack it, what those
    structures do store, and how to fix ``keys`` or ``required``. An empty source, a structure without atoms and
    a label with non-finite values (other than all NaN, which marks it missing) are each a ValueError naming the
    structure. Labels far outside the data's own distribution (``physml_md.data.statistics.label_outliers``) get
    a ``LabelOutlierWarning`` naming structure and atom. ``where`` names a list of structures in messages.
    """
    images, where = _images(source, where)
    if not images:
        raise ValueError(f"{where} holds no structures")
    requested = keys.requested()
    _check_required(required, requested)
    data = []
    for i, atoms in enumerate(images):
        if len(atoms) == 0:
            raise ValueError(f"{where}, structure {i} has no atoms; remove it (it has nothing to learn from)")
        try:
            data.append(atoms_to_dict(atoms, keys, dtype))
        except ValueError as exc:
            raise ValueError(f"{where}, structure {i}: {exc}") from None
    for label in required:
        missing = [i for i, d in enumerate(data) if not bool(d[K.mask_key(label)][0])]
        if missing:
            raise _missing_label_error(label, requested[label], missing, images, len(data), where)
    warn_label_outliers(data, where)
    return data
