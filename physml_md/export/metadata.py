"""The metadata document inside every exported file (``METADATA_FILE``): what it holds, reading and checking it;
every engine adapter reads cutoff, species, units and dtype from it. ``FORMATS`` (the document's "format"; none:
TorchScript): "torchscript" (``.pt``, neighbour list inside; what openmm-torch runs), "export" and "aotinductor"
(``.pt2``, ``physml_md.export.program``), "metatomic" (``.pt``, for LAMMPS etc.; physml-md's engines do not load it).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Dict

import torch

from physml_md._version import __version__
from physml_md.atomic_write import PathLike, atomic_path
from physml_md.data.elements import CHEMICAL_SYMBOLS
from physml_md.data.hashing import update_with_tensors
from physml_md.models import Potential

FORMAT_VERSION = 1
FORMATS = ("torchscript", "export", "aotinductor", "metatomic")
SUFFIXES = {"torchscript": ".pt", "export": ".pt2", "aotinductor": ".pt2", "metatomic": ".pt"}
METADATA_FILE = "physml_md_metadata.json"
REQUIRED_IMPORTS = ("vesin_torch",)  # registers the TorchScript class of the neighbour list
UNITS = {"length": "angstrom", "energy": "eV", "forces": "eV/angstrom", "stress": "eV/angstrom^3", "charge": "e"}
OUTPUTS = ("energy", "energies", "forces", "stress")
# Keys export_potential computes itself; a caller's metadata may not override them.
COMPUTED_KEYS = tuple(
    "format_version physml_md_version torch_version model species atomic_numbers cutoff units dtype self_energies "
    "scale hyperparameters weights_sha256 created requires imports outputs format device agreement committee".split()
)


class ExportFormatError(ValueError):
    """The file is not a physml-md export, or one this version cannot read."""


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the state dict, in sorted order."""
    digest = hashlib.sha256()
    update_with_tensors(digest, model.state_dict())
    return digest.hexdigest()


def _library_versions() -> Dict[str, str]:
    versions = {}
    for dist in ("torch", "vesin-torch"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def build_metadata(
    model: Potential, extra: Dict[str, Any] | None = None, format: str = "torchscript"
) -> Dict[str, Any]:
    """The metadata document written beside the module (JSON-serialisable)."""
    species = [CHEMICAL_SYMBOLS[z] for z in model.species]
    metadata: Dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "format": format,
        "device": model.shift.device.type,
        "physml_md_version": __version__,
        "torch_version": torch.__version__,
        "model": model.hyperparameters.get("name") or type(getattr(model, "energy_model", model)).__name__.lower(),
        "species": species,
        "atomic_numbers": list(model.species),
        "cutoff": model.cutoff,
        "units": dict(UNITS),
        "dtype": str(model.shift.dtype).removeprefix("torch."),
        "self_energies": {s: float(v) for s, v in zip(species, model.shift.tolist())},
        "scale": {s: float(v) for s, v in zip(species, model.scale.tolist())},
        "hyperparameters": model.hyperparameters,
        "weights_sha256": weights_sha256(model),
        "data_sha256": None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "requires": _library_versions(),
        "imports": list(REQUIRED_IMPORTS),
        "outputs": list(OUTPUTS)
        + (["charges", "total_charge", "dipole"] if model.use_charges else [])
        + (["energy_std", "forces_std"] if "committee" in model.hyperparameters else []),
        "committee": model.hyperparameters.get("committee"),
    }
    for key, value in (extra or {}).items():
        if key in COMPUTED_KEYS:
            raise ValueError(f"metadata key {key!r} is computed by export_potential and cannot be given")
        metadata[key] = value
    json.dumps(metadata)  # fail here, before writing, if the caller's metadata is not JSON-serialisable
    return metadata


def format_file(format: str) -> str:
    """The format's name with its article: "a torchscript file", "an export file", "an aotinductor file"."""
    return f"{'an' if format[:1] in 'aeiou' else 'a'} {format} file"


def resolve_format(format: str | None, path: Path) -> str:
    """The export format: ``format``, or from the file name (``.pt2``: "export", else "torchscript")."""
    if format is None:
        return "export" if path.suffix == ".pt2" else "torchscript"
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if (path.suffix == ".pt2") != (SUFFIXES[format] == ".pt2"):
        raise ValueError(
            f"{format_file(format)} is named *{SUFFIXES[format]}, not {path.name}: rename the output to "
            f"{path.with_suffix(SUFFIXES[format]).name} (or choose the format that the name implies)"
        )
    return format


def rewrite_zip(path: PathLike, replace: Callable[[str], str | None]) -> None:
    """Rewrite a zip archive in place (atomically): a member for which ``replace(name)`` gives text takes it, every
    other is copied unchanged; in order, stored uncompressed as torch writes them."""
    path = Path(path)
    with atomic_path(path) as rewritten:  # a temporary of our own name (never a user's file), renamed onto path
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(rewritten, "w", zipfile.ZIP_STORED) as target:
            for info in source.infolist():
                text = replace(info.filename)
                if text is not None:
                    target.writestr(info.filename, text)
                else:
                    with source.open(info) as member, target.open(info, "w") as copy:
                        shutil.copyfileobj(member, copy)


def replace_metadata(path: PathLike, metadata: Dict[str, Any]) -> None:
    """Rewrite the metadata member of an exported zip archive in place (``rewrite_zip``)."""
    document = json.dumps(metadata, indent=2, sort_keys=True)
    rewrite_zip(path, lambda name: document if name.endswith("/extra/" + METADATA_FILE) else None)


def read_metadata(path: PathLike) -> Dict[str, Any]:
    """Read the metadata of an exported file without loading the module; checks the format version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {path}")
    if not zipfile.is_zipfile(path):
        raise ExportFormatError(
            f"{path} is not a physml-md export (not a zip archive): the file is damaged or truncated (copy it again), "
            "or not an export; export a model with physml_md.export_potential or `physml-md export`"
        )
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/extra/" + METADATA_FILE)]
        if not names and any(name.endswith("/extra/model-metadata") for name in archive.namelist()):
            raise ExportFormatError(
                f"{path} is a metatomic model (for LAMMPS' pair_style metatomic, i-PI, torch-sim, metatomic-ase), "
                "which physml-md's own engines do not load: give them the TorchScript (.pt) or .pt2 export"
            )
        if not names:
            raise ExportFormatError(
                f"{path} is a zip archive without physml-md's {METADATA_FILE}: it is damaged or truncated (its end, "
                "where the metadata sits, is missing: copy it again), or it is not a physml-md export (export the "
                "model with physml_md.export_potential)"
            )
        try:
            metadata = json.loads(archive.read(names[0]))
        except ValueError as exc:
            raise ExportFormatError(f"{path}: the metadata is not valid JSON ({exc}); export the model again") from None
    version = metadata.get("format_version")
    if not isinstance(version, int):
        raise ExportFormatError(f"{path}: metadata has no integer format_version; export the model again")
    if version > FORMAT_VERSION:
        raise ExportFormatError(
            f"{path} has format_version {version}, newer than this physml-md {__version__} reads "
            f"(up to {FORMAT_VERSION}): upgrade physml-md (pip install -U physml-md)"
        )
    for key in ("species", "atomic_numbers", "cutoff", "dtype", "units"):
        if key not in metadata:
            raise ExportFormatError(f"{path}: metadata lacks {key!r}; export the model again")
    metadata.setdefault("format", "torchscript")  # files written before the "format" key are TorchScript
    if metadata["format"] not in FORMATS:
        raise ExportFormatError(
            f"{path} is in format {metadata['format']!r}, which this physml-md {__version__} does not read "
            f"(it reads {', '.join(FORMATS)}): upgrade physml-md, or export the model again"
        )
    return metadata


def check_against_module(path: Path, metadata: Dict[str, Any], numbers: list, cutoff: float) -> None:
    """Refuse a file whose metadata (species, cutoff) differ from what its module uses: it was altered."""
    if numbers != list(metadata["atomic_numbers"]) or [CHEMICAL_SYMBOLS[z] for z in numbers] != metadata["species"]:
        raise ExportFormatError(
            f"{path}: the metadata species {metadata['species']} do not match the module's {numbers}; "
            "the file was altered after export: export the model again"
        )
    if float(metadata["cutoff"]) != cutoff:
        raise ExportFormatError(
            f"{path}: the metadata cutoff {metadata['cutoff']} angstrom does not match the module's {cutoff} angstrom; "
            "the file was altered after export: export the model again"
        )
