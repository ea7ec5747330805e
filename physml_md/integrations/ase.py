"""``PhysMLCalculator``: an exported potential as an ASE calculator.

    atoms.calc = PhysMLCalculator("model.pt")

Units are ASE's (angstrom, eV), no factor. Stress: (1/V) dE/d(strain), Voigt xx, yy, zz, yz, xz, xy, periodic
structures only. A new calculation runs when positions, numbers, cell, pbc or initial charges (their sum is the
charge head's ``total_charge``) change, and only then. Threads: a lock serialises each property request and
calculation, so a shared calculator never hands a thread another's results; for parallel throughput give each
thread its own (``PhysMLCalculator(calc.potential)`` shares the model) or use ``calculate_batch``.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from typing import Any, Dict, List, Sequence

import ase
import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from physml_md.data import keys as K
from physml_md.data.elements import check_known_elements
from physml_md.data.statistics import PairDistanceFloor, pairs_closer_than
from physml_md.export import load_model
from physml_md.threads import torch_threads

__all__ = ["ExtrapolationWarning", "PhysMLCalculator"]

_BASE_PROPERTIES = ("energy", "free_energy", "energies", "forces", "stress")
# a committee's uncertainties (physml_md.models.committee): energy_std (eV), forces_std [N] (eV/angstrom, per-atom
# force disagreement) and its largest value, max_forces_std (eV/angstrom)
COMMITTEE_PROPERTIES = ("energy_std", "forces_std", "max_forces_std")
_CHANGES = tuple(change for change in all_changes if change != "initial_magmoms")


def _has_volume(atoms: Atoms) -> bool:
    """Whether stress is defined: three non-zero cell vectors (ASE's cell.rank == 3) spanning a volume."""
    return atoms.cell.rank == 3 and atoms.cell.volume > 0.0


class ExtrapolationWarning(UserWarning):
    """A structure brings two atoms closer than the training data ever did: the model is extrapolating there."""


def extrapolation_message(pairs: Dict[str, Any]) -> str:
    """One sentence for ``pairs_closer_than``'s answer (not empty)."""
    described = "; ".join(
        f"{pair} atoms {distance:.3f} angstrom apart (training data: {minimum:.3f} angstrom at the closest)"
        for pair, (distance, minimum) in pairs.items()
    )
    return (
        f"the model is extrapolating: {described}. Its energy and forces at distances it never saw are not to "
        "be trusted; add such structures to the training data"
    )


# Where the calculator's warnings point: the first frame outside these packages (the user's line, not ours).
_INTERNAL = (os.path.dirname(os.path.dirname(__file__)) + os.sep, os.path.dirname(ase.__file__) + os.sep)


def _callers_level() -> int:
    """``warnings.warn``'s stacklevel, called from the warning function, that names the first caller outside
    physml-md and ASE (e.g. the user's ``dyn.run(...)`` or ``atoms.get_forces()`` line)."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


class PhysMLCalculator(Calculator):
    """ASE calculator for a physml-md potential.

    model: an exported file, a checkpoint (``.ckpt``, exported on the fly), an ``ExportedPotential`` or a
    ``Potential``; cutoff, species, units and dtype come from its metadata. dtype: None or the file's (a model
    runs only in its export dtype). num_threads: torch CPU threads per calculation (None: torch's setting).

    A committee file gives the members' mean, and ``energy_std`` (eV), ``forces_std`` [N] (eV/angstrom, per atom:
    rms over members of |F_member - F_mean|) and ``max_forces_std`` (its largest) in ``results``. A structure
    closer than the training data's ``shortest_pair_distances`` warns once (``ExtrapolationWarning``; the pairs
    go into ``extrapolated``), and the calculation goes on.
    """

    implemented_properties = list(_BASE_PROPERTIES)

    def __init__(
        self,
        model,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        num_threads: int | None = None,
        **kwargs,
    ):
        self._lock = threading.RLock()  # one thread at a time: see the module's docstring
        super().__init__(**kwargs)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device; use device='cpu'")
        self.potential = load_model(model, self.device)
        self.metadata = self.potential.metadata
        self.dtype = self.potential.dtype
        wanted = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if wanted is not None and wanted != self.dtype:
            wanted = str(wanted).removeprefix("torch.")
            raise ValueError(
                f"this model was exported in {self.metadata['dtype']} and runs only in it, not in {wanted}: export "
                f"it again with dtype='{wanted}', or leave dtype unset"
            )
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer, got {num_threads}")
        self.num_threads = num_threads
        outputs = self.metadata.get("outputs", [])
        self.has_charges = K.CHARGES in outputs
        self.is_committee = K.FORCES_STD in outputs
        self.implemented_properties = (
            list(_BASE_PROPERTIES)
            + (["charges", "dipole"] if self.has_charges else [])
            + (list(COMMITTEE_PROPERTIES) if self.is_committee else [])
        )
        self._known = set(self.potential.atomic_numbers)
        self._shortest = dict(self.metadata.get("shortest_pair_distances") or {})
        self._floor = PairDistanceFloor(self._shortest)
        self.extrapolated: Dict[str, Any] = {}  # the pairs of the first structure found below the training minimum

    # ------------------------------------------------------------------ ASE contract
    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> List[str]:
        """The changes that need a new calculation: all of ASE's except initial magnetic moments."""
        return [change for change in super().check_state(atoms, tol) if change != "initial_magmoms"]

    def get_property(self, name, atoms=None, allow_calculation=True):
        with self._lock:  # ASE's check_state, calculate and reading self.results, as one step
            return super().get_property(name, atoms, allow_calculation)

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=_CHANGES) -> None:
        with self._lock:
            self._calculate(atoms, properties, system_changes)

    def _calculate(self, atoms: Atoms | None, properties, system_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        if "stress" in properties and not self.atoms.pbc.any():
            raise PropertyNotImplementedError(
                "stress is defined for periodic structures only; this one has pbc=False in every direction "
                "(set a cell and atoms.pbc = True, or do not ask for stress)"
            )
        if "stress" in properties and not _has_volume(self.atoms):
            raise PropertyNotImplementedError(
                f"stress needs a cell with a volume, and this one has no volume (cell {self.atoms.cell.tolist()}; a "
                "slab or wire whose non-periodic cell vectors are zero): give those directions a vacuum, e.g. "
                "atoms.center(vacuum=10.0, axis=2) for a slab, or do not ask for stress"
            )
        self.results = self._evaluate([self.atoms])[0]

    def calculate_batch(self, structures: Sequence[Atoms]) -> List[Dict[str, Any]]:
        """Results of many structures (any sizes, periodic or not) from one model call: one dict each, as
        ``calc.results`` after a single-structure calculation."""
        if len(structures) == 0:
            return []
        return self._evaluate(list(structures))

    # ------------------------------------------------------------------ internals
    def _inputs(self, structures: List[Atoms]) -> Dict[str, torch.Tensor]:
        numbers = np.concatenate([a.numbers for a in structures])
        check_known_elements(numbers.tolist(), self._known, ", ".join(self.metadata["species"]))
        counts = torch.tensor([len(a) for a in structures], dtype=torch.long)
        tensor = {"dtype": self.dtype, "device": self.device}
        data = {
            K.POSITIONS: torch.as_tensor(np.concatenate([a.positions for a in structures]), **tensor),
            K.ATOMIC_NUMBERS: torch.as_tensor(numbers, dtype=torch.long, device=self.device),
            K.CELL: torch.as_tensor(np.stack([a.cell.array for a in structures]), **tensor),
            K.PBC: torch.as_tensor(np.stack([a.pbc for a in structures]), dtype=torch.bool, device=self.device),
        }
        if len(structures) > 1:
            data[K.BATCH] = torch.repeat_interleave(torch.arange(len(structures)), counts).to(self.device)
        if self.has_charges:
            charges = [a.get_initial_charges().sum() for a in structures]
            data[K.TOTAL_CHARGE] = torch.as_tensor(charges, **tensor)
        return data

    def _check_extrapolation(self, structures: List[Atoms]) -> None:
        """Warn (once per calculator) when a structure goes below the training data's shortest pair distances."""
        if self.extrapolated or not self._shortest:
            return
        for atoms in structures:
            data = {
                K.POSITIONS: torch.as_tensor(atoms.positions, dtype=torch.float64),
                K.ATOMIC_NUMBERS: torch.as_tensor(atoms.numbers, dtype=torch.long),
                K.CELL: torch.as_tensor(atoms.cell.array, dtype=torch.float64),
                K.PBC: torch.as_tensor(atoms.pbc, dtype=torch.bool),
            }
            if not self._floor.breached(*data.values()):  # every MD step: the cheap question first
                continue
            pairs = pairs_closer_than(self._shortest, [data])
            if pairs:
                self.extrapolated = pairs
                warnings.warn(extrapolation_message(pairs), ExtrapolationWarning, stacklevel=_callers_level())
                return

    def _evaluate(self, structures: List[Atoms]) -> List[Dict[str, Any]]:
        # forces need autograd even under the caller's no_grad / inference_mode (inputs made inside: see there)
        with torch_threads(self.num_threads), torch.inference_mode(False), torch.enable_grad():
            out = self.potential(self._inputs(structures))
        self._check_extrapolation(structures)  # after the model, which refuses bad input with its own sentence
        out = {key: value.detach().to("cpu", torch.float64).numpy() for key, value in out.items()}
        results = []
        start = 0
        for i, atoms in enumerate(structures):
            end = start + len(atoms)
            energy = float(out[K.ENERGY][i])
            result: Dict[str, Any] = {
                "energy": energy,
                "free_energy": energy,
                "energies": out[K.ENERGIES][start:end].copy(),
                "forces": out[K.FORCES][start:end].copy(),
            }
            if atoms.pbc.any() and K.STRESS in out and _has_volume(atoms):
                result["stress"] = full_3x3_to_voigt_6_stress(out[K.STRESS][i])
            if self.has_charges:
                result["charges"] = out[K.CHARGES][start:end].copy()
                result["dipole"] = out[K.DIPOLE][i].copy()
            if self.is_committee:
                result["energy_std"] = float(out[K.ENERGY_STD][i])
                result["forces_std"] = out[K.FORCES_STD][start:end].copy()
                result["max_forces_std"] = float(result["forces_std"].max())
            results.append(result)
            start = end
        return results
