"""The criteria of the MD validation suite (``physml_md.validation.suite``): ``Criterion``, one pass/fail judgement,
and the two that say whether the model could be trusted along a run.

- Extrapolation in distance: the closest contact of each element pair in the recorded frames against the
  shortest in the training data (the exported metadata's ``shortest_pair_distances``).
- Committee uncertainty: the largest per-atom force disagreement of a committee model (``max_forces_std``,
  eV/angstrom) over the recorded frames, against a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from ase import Atoms

from physml_md.data.statistics import EXTRAPOLATION_MARGIN, shortest_pair_distances
from physml_md.data.structures import structure_inputs
from physml_md.export import ExportedPotential, read_metadata
from physml_md.export.checkpoint import load_checkpoint
from physml_md.md.runner import MDResult

__all__ = ["Criterion", "CLOSEST_CONTACT", "training_distances", "extrapolation_criterion", "uncertainty_criterion"]


@dataclass
class Criterion:
    """One pass/fail judgement: ``value`` against ``threshold`` (pass when value <= threshold, or >= for "min")."""

    name: str
    value: float | None
    threshold: float
    passed: bool
    unit: str = ""
    relation: str = "<="
    detail: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "relation": self.relation,
            "unit": self.unit,
            "passed": self.passed,
            "detail": self.detail,
        }

    @property
    def message(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:.4g}"
        verdict = "pass" if self.passed else "FAIL"
        text = f"{verdict}  {self.name}: {value} {self.unit} (pass when {self.relation} {self.threshold:g})"
        return text + (f" - {self.detail}" if self.detail else "")


# The closest contact of a pair may come this close to the training data's shortest (as a fraction of it) before the
# run counts as extrapolating: the margin the ASE calculator's ExtrapolationWarning allows too.
CLOSEST_CONTACT = 1.0 - EXTRAPOLATION_MARGIN


def training_distances(model) -> Dict[str, float]:
    """The shortest distance per element pair in the model's training data (its metadata), {} when unknown."""
    if isinstance(model, ExportedPotential):
        return dict(model.metadata.get("shortest_pair_distances") or {})
    if isinstance(model, (str, Path)) and Path(model).suffix == ".ckpt":
        return dict(load_checkpoint(model).get("hyper_parameters", {}).get("shortest_pair_distances") or {})
    if isinstance(model, (str, Path)):
        return dict(read_metadata(model).get("shortest_pair_distances") or {})
    return {}


def extrapolation_criterion(
    shortest: Dict[str, float], runs: List[MDResult], atoms: Atoms, threshold: float = CLOSEST_CONTACT
) -> Criterion:
    """The closest contact of each element pair in the recorded frames, as a fraction of the training data's: below
    ``threshold`` (default ``CLOSEST_CONTACT``) the model was extrapolating during the run."""
    frames = [
        structure_inputs(positions, atoms.numbers, np.zeros((3, 3)) if cell is None else cell, atoms.pbc)
        for run in runs
        for positions, cell in zip(run.positions, run.cells)
    ]
    found = shortest_pair_distances(frames, max(shortest.values()) * (1.0 + 1e-9))
    ratios = {pair: distance / shortest[pair] for pair, distance in found.items() if pair in shortest}
    if not ratios:
        return Criterion("closest contact / training data's", None, threshold, True, "", ">=", "no pair came close")
    pair = min(ratios, key=ratios.get)
    return Criterion(
        "closest contact / training data's",
        ratios[pair],
        threshold,
        ratios[pair] >= threshold,
        "",
        ">=",
        f"{pair} {found[pair]:.3f} angstrom, training data {shortest[pair]:.3f} angstrom"
        + ("" if ratios[pair] >= threshold else ": the model was extrapolating"),
    )


def uncertainty_criterion(runs: List[MDResult], threshold: float) -> Criterion | None:
    """The largest ``max_forces_std`` of the recorded frames against ``threshold`` (eV/angstrom); None when the
    model is not a committee."""
    series = [(value, run.ensemble) for run in runs for value in run.max_forces_std]
    if not series:
        return None
    values = np.asarray([value for value, _ in series])
    largest, where = max(series)
    over = int(np.sum(values > threshold))
    return Criterion(
        "committee force uncertainty (largest per-atom std)",
        float(largest),
        threshold,
        bool(largest <= threshold),
        "eV/angstrom",
        detail=f"mean {values.mean():.3g}, largest in the {where.upper()} run; {over} of {len(values)} frames over "
        "the threshold" + ("" if over == 0 else ": the model is unsure there; label those frames and retrain"),
    )
