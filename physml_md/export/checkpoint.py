"""Read training checkpoints safely and rebuild the potential they hold.

``torch.load(weights_only=True)`` refuses any pickled object other than tensors and plain data before creating it,
so loading never runs code from the file (physml-md writes nothing else: no allow-list needed). Layout
(``physml_md.training.PotentialModule``): ``hyper_parameters["model_kwargs"]`` are the ``build_model`` arguments;
``state_dict`` holds ``model.*`` and, with an EMA, ``ema.*`` (the averaged weights, preferred for evaluation).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

import torch

from physml_md.atomic_write import PathLike
from physml_md.export.metadata import METADATA_FILE
from physml_md.models import Potential, build_model
from physml_md.models.committee import Committee

MODEL_KWARGS = "model_kwargs"
MODEL_PREFIX = "model."
EMA_PREFIX = "ema."


class CheckpointError(ValueError):
    """A checkpoint that cannot (or must not) be loaded."""


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> Dict[str, Any]:
    """The checkpoint dict, loaded with ``weights_only=True``; a clear error for anything else."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint: give the .ckpt file that training wrote")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    # torch.save writes a zip archive, whose directory is at its end: a truncated copy has none (torch.load would
    # fail with "OSError: [Errno 22] Invalid argument"), and bytes that are no archive at all would be read as a
    # legacy pickle
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (a zip archive): it is damaged or truncated, or another kind of file; "
            "copy it again from where training wrote it, or give another checkpoint"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"{path} is not a readable zip archive ({exc}): it is damaged or truncated; copy it again from where "
            "training wrote it, or give another checkpoint"
        ) from None
    if any(name.endswith("/extra/" + METADATA_FILE) for name in names):
        raise CheckpointError(
            f"{path} is an exported model, not a training checkpoint: it is ready to use as it is (physml-md "
            "md / evaluate, PhysMLCalculator, OpenMM); to export again, give the .ckpt file that training wrote"
        )
    if any(name.split("/")[1:2] == ["code"] for name in names):
        raise CheckpointError(
            f"{path} is a TorchScript file, not a training checkpoint: give the .ckpt file that training wrote"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line or "global" in line), None)
        if reason is None:
            raise CheckpointError(
                f"{path} is damaged: its data cannot be unpickled ({lines[-1] if lines else type(exc).__name__}); "
                "copy it again from where training wrote it, or give another checkpoint"
            ) from None
        raise CheckpointError(
            f"refusing to load {path}: it contains pickled Python objects other than tensors and plain data "
            f"({reason}). physml-md loads checkpoints with weights_only=True so that a file cannot run code; "
            "use a checkpoint written by physml-md, or export the model where it was trained"
        ) from None
    except (RuntimeError, OSError, EOFError, IndexError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({first_line}): it is damaged or truncated; copy it again "
            "from where training wrote it, or give another checkpoint"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    return checkpoint


def model_kwargs(checkpoint: Dict[str, Any], path: PathLike = "checkpoint") -> Dict[str, Any]:
    """The ``build_model`` arguments stored in a physml-md checkpoint."""
    kwargs = checkpoint.get("hyper_parameters", {}).get(MODEL_KWARGS)
    if not isinstance(kwargs, dict):
        raise CheckpointError(
            f"{path} was not written by physml-md's PotentialModule (no hyper_parameters['{MODEL_KWARGS}'])"
        )
    return dict(kwargs)


def potential_from_checkpoint(path: PathLike, use_ema: bool = True) -> Potential:
    """The potential of a checkpoint in eval mode (the EMA weights when present and ``use_ema``)."""
    return exportable_from_checkpoint(path, use_ema)[0]


def exportable_from_checkpoint(path: PathLike, use_ema: bool = True) -> Tuple[Potential, Dict[str, Any]]:
    """(potential, extra export metadata) of a checkpoint, read once: the metadata names the checkpoint, whether
    the EMA weights were used, and carries the training data hash, periodicity and shortest distance per element
    pair when the checkpoint has them."""
    checkpoint = load_checkpoint(path)
    model = build_model(**model_kwargs(checkpoint, path))
    state = checkpoint["state_dict"]
    has_ema = any(k.startswith(EMA_PREFIX) for k in state)
    prefix = EMA_PREFIX if use_ema and has_ema else MODEL_PREFIX
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the model they describe (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); the checkpoint was written by an incompatible physml-md version"
        )
    metadata: Dict[str, Any] = {"training": {"checkpoint": str(path), "ema": prefix == EMA_PREFIX}}
    hyper_parameters = checkpoint.get("hyper_parameters", {})
    if hyper_parameters.get("data_sha256"):
        metadata["data_sha256"] = hyper_parameters["data_sha256"]
    if hyper_parameters.get("periodic") is not None:
        metadata["periodic"] = bool(hyper_parameters["periodic"])
    if hyper_parameters.get("shortest_pair_distances"):
        metadata["shortest_pair_distances"] = dict(hyper_parameters["shortest_pair_distances"])
    return model.eval(), metadata


def committee_from_checkpoints(paths: Sequence[PathLike], use_ema: bool = True) -> Tuple[Committee, Dict[str, Any]]:
    """(committee, extra export metadata) of the checkpoints of its members, one per member.

    The metadata names every checkpoint; ``shortest_pair_distances`` is the shortest over the members' training
    data (each member may have seen a bootstrap sample); ``data_sha256`` and ``periodic`` are kept where the
    members agree."""
    if len(paths) < 2:
        raise CheckpointError(f"a committee needs the checkpoints of 2 or more members, got {len(paths)}")
    members, documents = zip(*(exportable_from_checkpoint(path, use_ema) for path in paths))
    metadata: Dict[str, Any] = {
        "training": {
            "checkpoints": [str(path) for path in paths],
            "ema": [document["training"]["ema"] for document in documents],
        }
    }
    for key in ("data_sha256", "periodic"):
        values = {repr(document.get(key)) for document in documents}
        if len(values) == 1 and documents[0].get(key) is not None:
            metadata[key] = documents[0][key]
    shortest: Dict[str, float] = {}
    for document in documents:
        for pair, distance in (document.get("shortest_pair_distances") or {}).items():
            shortest[pair] = min(float(distance), shortest.get(pair, float("inf")))
    if shortest:
        metadata["shortest_pair_distances"] = shortest
    try:
        committee = Committee(list(members))
    except ValueError as exc:
        raise CheckpointError(f"these checkpoints do not make one committee: {exc}") from None
    return committee.eval(), metadata
