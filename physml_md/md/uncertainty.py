"""A committee's uncertainty along an MD run: its largest per-atom force disagreement per frame, ``max_forces_std``
(eV/angstrom; ``physml_md.models.committee``), the usual active-learning criterion since one atom in an unfamiliar
place spoils a run. ``UncertaintyWatch`` flags frames over a threshold, can stop the run at the first, and writes
them to extxyz (atomically, when the run ends) for labelling with the reference method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import ase.io
import numpy as np
import torch
from ase import Atoms

from physml_md.atomic_write import PathLike, atomic_path
from physml_md.data import keys as K
from physml_md.data.structures import structure_inputs
from physml_md.md.frame import Frame
from physml_md.units import EV_TO_MEV, parse_quantity

__all__ = [
    "UncertaintyWatch",
    "forces_std_of",
    "rank_correlation",
    "parse_force_threshold",
    "is_committee",
    "watch_for",
    "committee_errors",
]


def is_committee(potential) -> bool:
    """Whether a loaded model (``ExportedPotential``) gives uncertainties."""
    return K.FORCES_STD in potential.metadata.get("outputs", ())


def parse_force_threshold(value, name: str = "uncertainty_threshold") -> float:
    """A force threshold (eV/angstrom) from a number or a quantity string such as "0.1 eV/angstrom"."""
    threshold = parse_quantity(value, "force", name)
    if not threshold > 0 or not np.isfinite(threshold):
        raise ValueError(f"{name} must be a positive force, e.g. '0.1 eV/angstrom', got {value!r}")
    return threshold


def forces_std_of(potential, positions: np.ndarray, numbers: np.ndarray, cell, pbc) -> np.ndarray:
    """The committee's per-atom force disagreement [N] (eV/angstrom) at one structure."""
    data = structure_inputs(positions, numbers, np.zeros((3, 3)) if cell is None else cell, pbc, potential.dtype)
    device = potential.module.shift.device if hasattr(potential.module, "shift") else torch.device("cpu")
    with torch.inference_mode(False), torch.enable_grad():
        out = potential({key: value.to(device) for key, value in data.items()})
    return out[K.FORCES_STD].detach().to("cpu", torch.float64).numpy()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two series (NaN when either is constant or shorter than 3)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


class UncertaintyWatch:
    """Flags frames whose ``max_forces_std`` exceeds ``threshold`` (eV/angstrom), keeping at most ``keep``.

    ``observe(frame)`` returns True when the run should stop (``stop`` and a flagged frame). ``write()`` writes the
    flagged frames to ``path`` as extxyz (positions, cell, pbc; info: step, time_fs, max_forces_std), all or
    nothing; with no flagged frame no file is written.
    """

    def __init__(
        self,
        threshold: float,
        symbols: List[str],
        pbc,
        stop: bool = False,
        path: PathLike | None = None,
        keep: int = 1000,
    ):
        self.threshold = parse_force_threshold(threshold)
        self.symbols = list(symbols)
        self.pbc = np.asarray(pbc, dtype=bool)
        self.stop = bool(stop)
        self.path = None if path is None else Path(path)
        if self.path is not None and self.path.suffix != ".extxyz":
            raise ValueError(f"the flagged frames are written as extxyz: name the file *.extxyz, not {self.path.name}")
        self.keep = int(keep)
        self.flagged: List[Atoms] = []
        self.flagged_steps: List[int] = []

    def observe(self, frame: Frame) -> bool:
        if frame.forces_std is None:
            return False
        value = frame.max_forces_std
        if not value > self.threshold:
            return False
        self.flagged_steps.append(int(frame.step))
        if len(self.flagged) < self.keep:
            atoms = Atoms(self.symbols, positions=frame.positions, pbc=self.pbc)
            if frame.cell is not None:
                atoms.cell = frame.cell
            atoms.info.update(step=int(frame.step), time_fs=float(frame.time_fs), max_forces_std=float(value))
            self.flagged.append(atoms)
        return self.stop

    def write(self) -> Path | None:
        if self.path is None or not self.flagged:
            return None
        with atomic_path(self.path) as tmp:
            ase.io.write(tmp, self.flagged, format="extxyz")
        return self.path

    def summary(self) -> Dict[str, Any]:
        return {
            "threshold_ev_per_angstrom": self.threshold,
            "flagged_frames": len(self.flagged_steps),
            "first_flagged_step": self.flagged_steps[0] if self.flagged_steps else None,
            "stopped": self.stop and bool(self.flagged_steps),
            "file": str(self.path) if self.path is not None and self.flagged else None,
        }


def watch_for(potential, atoms: Atoms, threshold, stop: bool, path: PathLike | None) -> UncertaintyWatch | None:
    """The watch of a run with ``potential`` from ``atoms`` (None without a threshold); one error for options that
    cannot work: a threshold on a single potential, a file or a stop without a threshold."""
    if threshold is None:
        if path is not None or stop:
            raise ValueError("uncertain_frames and stop_on_uncertainty need an uncertainty_threshold, e.g. '0.1 eV/Å'")
        return None
    if not is_committee(potential):
        raise ValueError(
            "uncertainty_threshold needs a committee model (it gives forces_std); this one is a single potential: "
            "train with [training] committee = 4 (or physml-md train --committee 4), or drop the threshold"
        )
    return UncertaintyWatch(threshold, atoms.get_chemical_symbols(), atoms.pbc, stop, path)


def committee_errors(potential, batches) -> Dict[str, float]:
    """A committee's errors and uncertainty over labelled batches (data dicts with energy and forces labels and
    their masks, e.g. a datamodule's loader or one ``collate``d list): energy MAE (meV/atom), force MAE
    (meV/angstrom), mean per-atom force std (meV/angstrom) and Spearman's correlation of each structure's largest
    force error with its largest force std (how well the uncertainty ranks the structures by their error)."""
    energy_errors, force_errors, sigmas, frame_errors, frame_sigmas = [], [], [], [], []
    for batch in batches:
        with torch.inference_mode(False), torch.enable_grad():
            out = potential(batch)
        sigma = out[K.FORCES_STD].detach().double()
        sigmas.append(sigma)
        energy_error = (out[K.ENERGY].detach() - batch[K.ENERGY]).double() / batch[K.N_ATOMS]
        energy_errors.append(energy_error[batch[K.mask_key(K.ENERGY)]])
        if K.FORCES not in batch:  # structures without force labels: energy and uncertainty only
            continue
        difference = (out[K.FORCES].detach() - batch[K.FORCES]).double()
        labelled = batch[K.mask_key(K.FORCES)]
        force_errors.append(difference[labelled[batch[K.BATCH]]].abs().flatten())
        error = torch.linalg.vector_norm(difference, dim=-1)
        for index in torch.nonzero(labelled).flatten().tolist():
            atoms = batch[K.BATCH] == index
            frame_errors.append(float(error[atoms].max()))
            frame_sigmas.append(float(sigma[atoms].max()))
    forces = torch.cat(force_errors) if force_errors else torch.full((1,), float("nan"))
    return {
        "energy_mae_mev_per_atom": EV_TO_MEV * float(torch.cat(energy_errors).abs().mean()),
        "force_mae_mev_per_angstrom": EV_TO_MEV * float(forces.mean()),
        "mean_forces_std_mev_per_angstrom": EV_TO_MEV * float(torch.cat(sigmas).mean()),
        "spearman_max_force_error_vs_uncertainty": rank_correlation(np.asarray(frame_errors), np.asarray(frame_sigmas)),
    }
