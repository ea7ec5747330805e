"""Loading an exported file (or a checkpoint, a committee of checkpoints, a model in memory) for an engine."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Union

import torch

from physml_md.atomic_write import PathLike
from physml_md.export import torchscript
from physml_md.export.checkpoint import committee_from_checkpoints, exportable_from_checkpoint
from physml_md.export.metadata import (
    REQUIRED_IMPORTS,
    ExportFormatError,
    build_metadata,
    check_against_module,
    format_file,
    read_metadata,
)
from physml_md.export.program import load_program
from physml_md.export.torchscript import model_errors
from physml_md.models import Potential


@dataclass
class ExportedPotential:
    """A loaded exported file: the module (TorchScript, or a ``ProgramPotential`` for the torch.export formats)
    and its metadata."""

    module: torch.nn.Module
    metadata: Dict[str, Any]
    path: Path | None = None

    @property
    def format(self) -> str:
        return self.metadata.get("format", "torchscript")

    @property
    def cutoff(self) -> float:
        return float(self.metadata["cutoff"])

    @property
    def atomic_numbers(self) -> list:
        return list(self.metadata["atomic_numbers"])

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.metadata["dtype"])

    def __call__(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        with model_errors():
            return self.module(data)


def load_potential(path: PathLike, device: Union[str, torch.device] = "cpu") -> ExportedPotential:
    """Load an exported file onto ``device`` after checking its metadata."""
    path = Path(path)
    metadata = read_metadata(path)
    for name in metadata.get("imports", REQUIRED_IMPORTS):  # the modules whose TorchScript classes the file uses
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"the exported model needs {name!r}: pip install vesin-torch ({exc})") from exc
    if metadata["format"] != "torchscript":
        return ExportedPotential(module=load_program(path, metadata, device), metadata=metadata, path=path)
    try:
        module = torchscript.load(str(path), map_location=torch.device(device))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportFormatError(
            f"{path} cannot be read ({first_line}): the file is damaged or truncated; copy it again, or export "
            "the model again"
        ) from None
    module.eval()
    check_against_module(path, metadata, list(module.species), float(module.cutoff))
    return ExportedPotential(module=module, metadata=metadata, path=path)


def script_potential(model: Potential, metadata: Dict[str, Any] | None = None) -> ExportedPotential:
    """``model`` scripted in memory, as if it had been exported and loaded again (no file is written)."""
    if not isinstance(model, Potential):
        raise TypeError(f"script_potential needs a physml_md.models.Potential, got {type(model).__name__}")
    document = build_metadata(model, metadata)
    was_training = model.training
    model.eval()
    try:
        scripted = torchscript.script(model)
    finally:
        model.train(was_training)
    return ExportedPotential(module=scripted, metadata=document, path=None)


def load_model(model: Union[PathLike, Potential, ExportedPotential], device: Union[str, torch.device] = "cpu"):
    """Whatever a user hands an engine adapter, as an ``ExportedPotential`` on ``device``.

    model: an exported file, a training checkpoint (``.ckpt``: its EMA weights are scripted on the fly), a list of
    checkpoints (the members of a committee), a ``Potential`` (scripted on the fly) or an already loaded
    ``ExportedPotential``.
    """
    if isinstance(model, ExportedPotential):
        exported = model
    elif isinstance(model, Potential):
        exported = script_potential(model)
    elif isinstance(model, (list, tuple)) and all(isinstance(m, (str, Path)) for m in model):
        exported = script_potential(*committee_from_checkpoints(model))
    elif isinstance(model, (str, Path)) and Path(model).suffix == ".ckpt":
        exported = script_potential(*exportable_from_checkpoint(model))
        exported.path = Path(model)
    elif isinstance(model, (str, Path)):
        return load_potential(model, device)
    else:
        raise TypeError(
            "expected an exported file, a checkpoint (.ckpt), a list of checkpoints (a committee), a Potential or an "
            "ExportedPotential; got " + type(model).__name__
        )
    device = torch.device(device)
    if exported.format != "torchscript":
        loaded_on = exported.module.shift.device
        if loaded_on.type != device.type:
            raise ValueError(
                f"this model ({format_file(exported.format)}) was loaded on {loaded_on.type}; load the file again on "
                f"{device.type} (load_potential(path, device={device.type!r}))"
            )
        return exported
    exported.module.to(device)
    return exported
