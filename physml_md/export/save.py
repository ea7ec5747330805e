"""Writing the exported file: ``export_potential``, checked against the model before it takes its name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Sequence, Union

import torch

from physml_md.atomic_write import PathLike, atomic_path
from physml_md.export import torchscript
from physml_md.export.agreement import file_agreement
from physml_md.export.loading import load_potential, script_potential
from physml_md.export.metadata import METADATA_FILE, SUFFIXES, build_metadata, replace_metadata, resolve_format
from physml_md.export.program import save_program
from physml_md.models import Potential, resolve_dtype


def export_potential(
    model: Potential,
    path: PathLike,
    metadata: Dict[str, Any] | None = None,
    dtype: Union[str, torch.dtype, None] = None,
    format: str | None = None,
    structures: Sequence[Dict[str, torch.Tensor]] | None = None,
    engines: Callable[[Path, Path], Dict[str, Dict[str, float]]] | None = None,
) -> Path:
    """Write ``model`` with its metadata to ``path`` (atomically: temporary name, then rename); returns ``path``.

    ``metadata`` adds keys (``data_sha256``, training details, ...) to the computed ones. ``dtype`` exports a copy
    in that dtype (the metadata then records ``trained_dtype``). ``format``: one of ``FORMATS``
    (``physml_md.export.metadata``), default from the file name. Before the file takes its name it is loaded
    again and evaluated beside ``model`` on the first structures of ``structures`` (else built-in ones); the
    differences go into the metadata ("agreement"), and one over the tolerance raises ``AgreementError``.
    ``engines(file, path)`` (a TorchScript or torch.export file) adds rows of its own to the report
    (``physml_md.integrations.engine_agreement.export_model`` gives the engines'; this layer cannot reach them).
    """
    if not isinstance(model, Potential):
        raise TypeError(f"export_potential needs a physml_md.models.Potential, got {type(model).__name__}")
    path = Path(path)
    if path.is_dir():
        example = path / ("model" + SUFFIXES.get(format or "torchscript", ".pt"))
        raise ValueError(f"{path} is a directory: give the exported file's name, e.g. {example}")
    format = resolve_format(format, path)
    if dtype is not None and resolve_dtype(dtype) != model.shift.dtype:
        metadata = dict(metadata or {}, trained_dtype=str(model.shift.dtype).removeprefix("torch."))
        model = model.cast(resolve_dtype(dtype))
    if format == "metatomic":
        from physml_md.export.metatomic import export_metatomic  # needs metatomic-torch, an optional dependency

        return export_metatomic(model, path, build_metadata(model, metadata, format), structures)
    with atomic_path(path) as tmp:
        if format == "torchscript":
            scripted = script_potential(model, metadata)
            document = scripted.metadata
            torchscript.save(scripted.module, str(tmp), {METADATA_FILE: json.dumps(document)})
        else:
            document = build_metadata(model, metadata, format)
            save_program(model, tmp, json.dumps(document), format, model.shift.device)
        exported = load_potential(tmp, model.shift.device)
        document["agreement"] = file_agreement(model, exported, structures, path)
        if engines is not None:
            document["agreement"]["differences"].update(engines(tmp, path))
        replace_metadata(tmp, document)
    return path
