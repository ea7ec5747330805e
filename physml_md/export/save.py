"""Writing the exported file: ``export_potential``, checked against the model before it takes its name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Sequence, Union

import torch

from physml_md.atomic_write import PathLike, atomic_path
from physml_md.export import torchscript
from physml_md.export.agreement import file_agreement
from physml_md.export.load import load_potential, script_potential
from physml_md.export.metadata import METADATA_FILE, SUFFIXES, build_metadata, replace_metadata, resolve_format
from physml_md.export.metatomic import export_metatomic
from physml_md.export.program import save_program
from physml_md.models import Potential, resolve_dtype


def export_potential(
    model: Potential,
    path: PathLike,
    metadata: Dict[str, Any] | None = None,
    dtype: Union[str, torch.dtype, None] = None,
    format: str | None = None,
    structures: Sequence[Dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write ``model`` with its metadata to ``path`` (atomically: temporary name, then rename).

    ``metadata`` adds keys (for example ``data_sha256``, ``description``, training details) to the computed
    ones. ``dtype`` ("float32"/"float64") exports a copy in that dtype, e.g. a model trained in float32 as a
    float64 file for MD (the metadata then records ``trained_dtype``); default: the model's own. ``format``:
    "torchscript" (``.pt``, what TorchForce runs), "export" (a ``torch.export`` program, ``.pt2``),
    "aotinductor" (that program compiled, ``.pt2``) or "metatomic" (``.pt``, for LAMMPS and the other metatomic
    engines: ``physml_md.export.metatomic``); default: from the file name. Returns the path written.

    Before the file takes its name, it is loaded again and evaluated beside ``model`` on a few structures (the
    first ``MAX_AGREEMENT_STRUCTURES`` of ``structures``, structure dicts such as the training data's; else
    ``builtin_structures``); the largest differences of energy, forces and stress go into the metadata
    ("agreement"), and a difference over ``AGREEMENT_TOLERANCE`` raises ``AgreementError`` (nothing is written).
    """
    if not isinstance(model, Potential):
        raise TypeError(f"export_potential needs a physml_md.models.Potential, got {type(model).__name__}")
    path = Path(path)
    if path.is_dir():
        example = path / ("model" + SUFFIXES.get(format or "torchscript", ".pt"))
        raise ValueError(f"{path} is a directory: give the exported file's name, e.g. {example}")
    format = resolve_format(format, path)
    if dtype is not None:
        target = resolve_dtype(dtype)
        if target != model.shift.dtype:
            metadata = dict(metadata or {}, trained_dtype=str(model.shift.dtype).removeprefix("torch."))
            model = model.cast(target)
    if format == "metatomic":
        return export_metatomic(model, path, build_metadata(model, metadata, format), structures)
    source = "training" if structures else "built-in"
    if format != "torchscript":
        document = build_metadata(model, metadata, format)
        with atomic_path(path) as tmp:
            save_program(model, tmp, json.dumps(document, indent=2, sort_keys=True), format, model.shift.device)
            document["agreement"] = file_agreement(
                model, load_potential(tmp, model.shift.device), structures, source, path
            )
            replace_metadata(tmp, document)
        return path
    scripted = script_potential(model, metadata)
    with atomic_path(path) as tmp:
        torchscript.save(scripted.module, str(tmp), {METADATA_FILE: json.dumps(scripted.metadata)})
        exported = load_potential(tmp, model.shift.device)
        scripted.metadata["agreement"] = file_agreement(model, exported, structures, source, path)
        document = json.dumps(scripted.metadata, indent=2, sort_keys=True)
        torchscript.save(scripted.module, str(tmp), {METADATA_FILE: document})
    return path
