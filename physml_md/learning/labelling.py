"""Label structures with a reference method: any ASE calculator, named by its import path.

    frames = label_frames(frames, "tblite.ase.TBLite", {"method": "GFN2-xTB", "verbosity": 0})

Each frame gets energy and forces (and stress when periodic in all three directions and given) under the data set's
label names (``LabelKeys``). A failure or a non-finite label raises ``LabellingError`` naming the frame; nothing is
returned half-labelled.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
from typing import Any, Dict, Iterator, List, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator

from physml_md.data.structures import LabelKeys, non_finite_entries

__all__ = ["LabellingError", "calculator_class", "label_frames", "openmp_threads"]


class LabellingError(ValueError):
    """The reference calculator could not label a frame (or could not be made)."""


def calculator_class(path: str):
    """The class at an import path such as "ase.calculators.emt.EMT"; a clear error when it is not there."""
    module_name, _, name = str(path).rpartition(".")
    if not module_name:
        raise LabellingError(
            f"calculator {path!r} is not an import path: write module.Class, e.g. 'ase.calculators.emt.EMT'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LabellingError(
            f"calculator {path!r}: cannot import {module_name} ({exc}); install it or fix the path"
        ) from None
    if not hasattr(module, name):
        raise LabellingError(f"calculator {path!r}: {module_name} has no {name}")
    return getattr(module, name)


@contextlib.contextmanager
def openmp_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` OpenMP threads (libgomp's omp_set_num_threads; no-op without libgomp or n): one is
    fastest for small molecules in codes such as tblite; the count is restored (torch shares the libgomp runtime)."""
    if n is None:
        yield
        return
    try:
        runtime = ctypes.CDLL("libgomp.so.1")
        get_threads, set_threads = runtime.omp_get_max_threads, runtime.omp_set_num_threads
    except (OSError, AttributeError):  # another OpenMP runtime (or none): leave it as it is
        yield
        return
    before = get_threads()
    set_threads(int(n))
    try:
        yield
    finally:
        set_threads(before)


def _labelled(atoms: Atoms, results: Dict[str, Any], keys: LabelKeys) -> Atoms:
    frame = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc, info=dict(atoms.info))
    if keys.energy == "energy" and keys.forces == "forces" and keys.stress in ("stress", None):
        frame.calc = SinglePointCalculator(frame, **results)
        return frame
    frame.info[keys.energy] = results["energy"]
    frame.arrays[keys.forces] = results["forces"]
    if "stress" in results and keys.stress:
        frame.info[keys.stress] = results["stress"]
    return frame


def label_frames(
    frames: Sequence[Atoms],
    calculator: str,
    kwargs: Dict[str, Any] | None = None,
    keys: LabelKeys | None = None,
    threads: int | None = 1,
) -> List[Atoms]:
    """Copies of ``frames`` labelled by the calculator class at ``calculator`` (made once, with ``kwargs``)."""
    keys = keys or LabelKeys()
    cls = calculator_class(calculator)
    try:
        calc = cls(**(kwargs or {}))
    except Exception as exc:  # the user's calculator: any failure is reported as one sentence
        raise LabellingError(
            f"calculator {calculator}({kwargs or {}}) could not be made: {type(exc).__name__}: {exc}"
        ) from None
    labelled = []
    with openmp_threads(threads):
        for index, atoms in enumerate(frames):
            work = atoms.copy()
            work.calc = calc
            try:
                results = {"energy": float(work.get_potential_energy()), "forces": np.array(work.get_forces())}
                if work.pbc.all():
                    with contextlib.suppress(PropertyNotImplementedError, NotImplementedError):
                        results["stress"] = np.array(work.get_stress())
            except Exception as exc:  # noqa: BLE001  (the reference code's own failure, reported with the frame)
                raise LabellingError(
                    f"{calculator} failed on {_frame_name(atoms, index)}: {type(exc).__name__}: {exc}; {_NOTHING}"
                ) from None
            for label, value in results.items():
                if not np.isfinite(value).all():
                    raise LabellingError(
                        f"{calculator} gave non-finite {label} on {_frame_name(atoms, index)}: "
                        f"{non_finite_entries(label, np.reshape(value, (-1, 3)) if label == 'forces' else value)}; "
                        f"{_NOTHING}"
                    )
            labelled.append(_labelled(atoms, results, keys))
    return labelled


_NOTHING = (
    "nothing of this round was labelled (fix the calculator or its settings and run again: the loop resumes at this "
    "round)"
)


def _frame_name(atoms: Atoms, index: int) -> str:
    step = atoms.info.get("step")
    return f"frame {index}" + (f" (MD step {step})" if step is not None else "")
