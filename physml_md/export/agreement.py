"""The agreement report of an exported file ("agreement" in its metadata): the file, loaded again, against its eager
model on a few structures (``builtin_structures`` or the first ``MAX_AGREEMENT_STRUCTURES`` given): the largest
max |a - b| / max(1, max |b|) of energy, forces and stress. Over the dtype's tolerance the export fails
(``AgreementError``). Engines add rows (``physml_md.integrations.engine_agreement``); ``agreement_summary`` is its
line in ``physml-md info``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch

from physml_md.atomic_write import PathLike
from physml_md.models import Potential


class AgreementError(ValueError):
    """The exported file does not give the numbers of the model it was exported from."""


AGREEMENT_TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
AGREEMENT_QUANTITIES = ("energy", "forces", "stress")
AGREEMENT_INPUTS = ("positions", "atomic_numbers", "cell", "pbc")
MAX_AGREEMENT_STRUCTURES = 3


def builtin_structures(species: Sequence[int], cutoff: float, dtype: torch.dtype) -> List[Dict[str, torch.Tensor]]:
    """Two small structures over ``species`` for the agreement check when no training structures are given: a
    6-atom cluster and an 8-atom periodic, slightly sheared cell, atoms about ``min(0.45 cutoff, 2.5)`` angstrom
    apart and displaced at random (fixed seed) so that forces and stress are not zero by symmetry."""
    generator = torch.Generator().manual_seed(0)
    spacing = min(0.45 * cutoff, 2.5)
    structures = []
    for shape, periodic in (((3, 2, 1), False), ((2, 2, 2), True)):
        grid = torch.stack(
            torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in shape), indexing="ij"), dim=-1
        ).reshape(-1, 3)
        positions = spacing * (grid + 0.1 * torch.randn(grid.shape, generator=generator, dtype=torch.float64))
        cell = torch.zeros(3, 3, dtype=torch.float64)
        if periodic:
            cell = 2.0 * spacing * torch.eye(3, dtype=torch.float64)
            cell[1, 0] = 0.15 * spacing
        numbers = torch.tensor([species[i % len(species)] for i in range(len(grid))], dtype=torch.long)
        structures.append(
            {
                "positions": positions.to(dtype),
                "atomic_numbers": numbers,
                "cell": cell.to(dtype).unsqueeze(0),
                "pbc": torch.full((1, 3), periodic, dtype=torch.bool),
            }
        )
    return structures


def agreement_inputs(
    structures: Sequence[Dict[str, torch.Tensor]], dtype: torch.dtype, device: torch.device
) -> List[Dict[str, torch.Tensor]]:
    """The model inputs (positions, atomic numbers, cell, pbc; one structure each) of the first
    ``MAX_AGREEMENT_STRUCTURES`` structure dicts, in ``dtype`` on ``device``."""
    inputs = []
    for index in range(min(len(structures), MAX_AGREEMENT_STRUCTURES)):
        data = structures[index]
        missing = [key for key in AGREEMENT_INPUTS if key not in data]
        if missing:
            raise ValueError(
                f"a structure for the agreement check lacks {missing}; give structure dicts with keys "
                f"{', '.join(AGREEMENT_INPUTS)} (physml_md.data.structures.atoms_to_dict makes them)"
            )
        one = {key: data[key].detach().to(device) for key in AGREEMENT_INPUTS}
        one["positions"] = one["positions"].to(dtype)
        one["cell"] = one["cell"].to(dtype).reshape(1, 3, 3)
        one["pbc"] = one["pbc"].reshape(1, 3)
        inputs.append(one)
    return inputs


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |a - b| / max(1, max |b|), in float64."""
    actual, expected = actual.detach().to("cpu", torch.float64), expected.detach().to("cpu", torch.float64)
    if expected.numel() == 0:
        return 0.0
    return float((actual - expected).abs().max() / max(1.0, float(expected.abs().max())))


def largest_differences(outputs: Sequence[Dict[str, torch.Tensor]], references: Sequence[Dict[str, torch.Tensor]]):
    """{quantity: largest ``relative_difference`` over the structures} for energy, forces and stress (stress
    where both give it)."""
    found: Dict[str, float] = {}
    for out, reference in zip(outputs, references, strict=True):
        for key in AGREEMENT_QUANTITIES:
            if key in out and key in reference:
                found[key] = max(found.get(key, 0.0), relative_difference(out[key], reference[key]))
    return found


def check_agreement(
    pair: str, differences: Dict[str, float], tolerance: float, path: PathLike, consequence: str | None = None
) -> None:
    """Refuse (``AgreementError``) differences above ``tolerance``, naming the pair compared (``"X and Y"``), the
    quantity and ``consequence`` (default: the file was not written)."""
    consequence = consequence or "the exported file is not faithful, so it was not written"
    for key, value in differences.items():
        if not value <= tolerance:  # NaN fails too
            raise AgreementError(
                f"{path}: {pair} disagree on {key} by {value:.3g} (relative; the tolerance for this dtype is "
                f"{tolerance:g}): {consequence}. Report this with the model and the torch version"
            )


def evaluate_all(module, inputs: Sequence[Dict[str, torch.Tensor]]) -> List[Dict[str, torch.Tensor]]:
    """``module``'s outputs (detached) on each input, gradients enabled, TorchScript's graph optimisation off."""
    # TorchScript's profiling executor spends its first two calls profiling and optimising the graph (0.7 s for a
    # small PaiNN here, against 35 ms without): the check runs the file's code and weights without that, and the
    # engines' own rows (physml_md.integrations.engine_agreement) run it as the engines do
    with torch.inference_mode(False), torch.enable_grad(), torch.jit.optimized_execution(False):
        return [{k: v.detach() for k, v in module(dict(data)).items()} for data in inputs]


def file_agreement(
    model: Potential, exported, structures: Sequence[Dict[str, torch.Tensor]] | None, name: PathLike
) -> Dict[str, Any]:
    """Evaluate ``exported`` (the file just written, loaded again: an ``ExportedPotential``; to be called ``name``)
    and ``model`` (eager) on the agreement structures (the first of ``structures``, the training data's, else
    the built-in ones); the report, or an ``AgreementError`` over the tolerance."""
    dtype, device = model.shift.dtype, model.shift.device
    inputs = agreement_inputs(structures or builtin_structures(list(model.species), model.cutoff, dtype), dtype, device)
    tolerance = AGREEMENT_TOLERANCE[str(dtype).removeprefix("torch.")]
    was_training = model.training
    model.eval()
    try:
        eager = evaluate_all(model, inputs)
    finally:
        model.train(was_training)
    differences = largest_differences(evaluate_all(exported, inputs), eager)
    check_agreement(
        f"the exported {exported.format} file and the model it was exported from", differences, tolerance, name
    )
    return {
        "structures": len(inputs),
        "source": "training" if structures else "built-in",
        "tolerance": tolerance,
        "measure": "max |a - b| / max(1, max |b|)",
        "differences": {"file vs eager": differences},
    }


def agreement_summary(report: Dict[str, Any] | None) -> str:
    """One line for ``physml-md info``: the largest difference of each comparison."""
    if not report:
        return "not measured (exported before physml-md checked it)"
    rows = report.get("differences", {})
    parts = [f"{name}: {', '.join(f'{k} {v:.1e}' for k, v in values.items())}" for name, values in rows.items()]
    engines = "; engines on the built-in ones" if len(rows) > 1 and report.get("source") != "built-in" else ""
    return (
        f"{'; '.join(parts)} (largest relative difference, {report.get('structures')} {report.get('source')} "
        f"structures{engines}; tolerance {report.get('tolerance'):g})"
    )
