"""The exported file: a TorchScript archive or a torch.export program, carrying its own metadata.

``export_potential(model, path, format=...)`` writes a ``physml_md.models.Potential`` with one JSON document
inside (see ``METADATA_FILE``); ``load_potential(path)`` reads it back and checks it. Every engine adapter (ASE,
OpenMM) reads cutoff, species, units and dtype from that metadata: nobody passes them by hand.

Formats (``FORMATS``; the metadata's "format" names it, files without one are TorchScript):
- "torchscript" (``.pt``): the scripted module, neighbour list inside; what openmm-torch's TorchForce runs. It
  needs ``vesin_torch`` imported before ``torch.jit.load`` (its neighbour list is a TorchScript class);
  ``load_potential`` does that.
- "export" and "aotinductor" (``.pt2``): a ``torch.export`` program, TorchScript-free, AOTInductor-compiled for
  the second (``physml_md.export_program``); the neighbour list and the input checks run in Python before it.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Union

import torch

from physml_md import __version__, torchscript
from physml_md.atomic import PathLike, atomic_path
from physml_md.data.elements import CHEMICAL_SYMBOLS
from physml_md.data.hashing import update_with_tensors
from physml_md.models import Potential, resolve_dtype

FORMAT_VERSION = 1
FORMATS = ("torchscript", "export", "aotinductor")
SUFFIXES = {"torchscript": ".pt", "export": ".pt2", "aotinductor": ".pt2"}
METADATA_FILE = "physml_md_metadata.json"
REQUIRED_IMPORTS = ("vesin_torch",)  # registers the TorchScript class of the neighbour list
UNITS = {
    "length": "angstrom",
    "energy": "eV",
    "forces": "eV/angstrom",
    "stress": "eV/angstrom^3",
    "charge": "e",
}
OUTPUTS = ("energy", "energies", "forces", "stress")
# Keys export_potential computes itself; a caller's metadata may not override them.
_COMPUTED_KEYS = (
    "format_version",
    "physml_md_version",
    "torch_version",
    "model",
    "species",
    "atomic_numbers",
    "cutoff",
    "units",
    "dtype",
    "self_energies",
    "scale",
    "hyperparameters",
    "weights_sha256",
    "created",
    "requires",
    "imports",
    "outputs",
    "format",
    "device",
    "agreement",
)


class ExportFormatError(ValueError):
    """The file is not a physml-md export, or one this version cannot read."""


class AgreementError(ValueError):
    """The exported file does not give the numbers of the model it was exported from."""


# The agreement report ("agreement" in the metadata): the largest difference, relative to the scale of the reference
# (max |a - b| / max(1, max |b|), in eV, eV/angstrom, eV/angstrom^3), of energy, forces and stress between the
# model as exported (eager) and the written file, on a few structures; engines add their own rows
# (physml_md.integrations.agreement). Over the tolerance of the file's dtype the export fails.
AGREEMENT_TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
AGREEMENT_QUANTITIES = ("energy", "forces", "stress")
AGREEMENT_INPUTS = ("positions", "atomic_numbers", "cell", "pbc")
MAX_AGREEMENT_STRUCTURES = 3


# the last line of a torch.jit.Error's message: "builtins.ValueError: <the sentence>" (torch 2.9 to 2.14 alike)
_SCRIPTED_ERROR = re.compile(r"^builtins\.(ValueError|RuntimeError): (.*)", re.MULTILINE | re.DOTALL)


def plain_error(error: Exception) -> Exception | None:
    """The ValueError (or RuntimeError) that a TorchScript module raised, as Python raises it: the sentence of a
    ``torch.jit.Error`` without its TorchScript trace; None when ``error`` carries no such exception."""
    match = _SCRIPTED_ERROR.search(str(error))
    if match is None:
        return None
    return {"ValueError": ValueError, "RuntimeError": RuntimeError}[match.group(1)](match.group(2).strip())


@contextlib.contextmanager
def model_errors() -> Iterator[None]:
    """Inside: an error raised by a TorchScript module surfaces as the plain ValueError (RuntimeError) it raised,
    as a torch.export program's does. Wrap every call of a loaded module in it."""
    try:
        yield
    except torch.jit.Error as exc:
        plain = plain_error(exc)
        if plain is None:
            raise
        raise plain from None


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the state dict, in sorted order."""
    digest = hashlib.sha256()
    update_with_tensors(digest, model.state_dict())
    return digest.hexdigest()


def _library_versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

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
        "model": model.hyperparameters.get("name", type(model.energy_model).__name__.lower()),
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
        "outputs": list(OUTPUTS) + (["charges", "total_charge", "dipole"] if model.use_charges else []),
    }
    for key, value in (extra or {}).items():
        if key in _COMPUTED_KEYS:
            raise ValueError(f"metadata key {key!r} is computed by export_potential and cannot be given")
        metadata[key] = value
    json.dumps(metadata)  # fail here, before writing, if the caller's metadata is not JSON-serialisable
    return metadata


def resolve_format(format: str | None, path: Path) -> str:
    """The export format: ``format``, or from the file name (``.pt2``: "export", else "torchscript")."""
    if format is None:
        return "export" if path.suffix == ".pt2" else "torchscript"
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if (path.suffix == ".pt2") != (SUFFIXES[format] == ".pt2"):
        raise ValueError(
            f"a {format} file is named *{SUFFIXES[format]}, not {path.name}: rename the output to "
            f"{path.with_suffix(SUFFIXES[format]).name} (or choose the format that the name implies)"
        )
    return format


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


def _evaluate_all(module, inputs: Sequence[Dict[str, torch.Tensor]]) -> List[Dict[str, torch.Tensor]]:
    # TorchScript's profiling executor spends its first two calls profiling and optimising the graph (0.7 s for a
    # small PaiNN here, against 35 ms without): the check runs the file's code and weights without that, and the
    # engines' own rows (physml_md.integrations.agreement) run it as the engines do
    with torch.inference_mode(False), torch.enable_grad(), torch.jit.optimized_execution(False):
        return [{k: v.detach() for k, v in module(dict(data)).items()} for data in inputs]


def file_agreement(
    model: Potential, path: Path, structures: Sequence[Dict[str, torch.Tensor]] | None, source: str, name: Path
) -> Dict[str, Any]:
    """Evaluate the written file ``path`` (to be called ``name``) and ``model`` (eager) on the agreement
    structures; the report, or an ``AgreementError`` over the tolerance."""
    dtype, device = model.shift.dtype, model.shift.device
    inputs = agreement_inputs(structures or builtin_structures(list(model.species), model.cutoff, dtype), dtype, device)
    tolerance = AGREEMENT_TOLERANCE[str(dtype).removeprefix("torch.")]
    was_training = model.training
    model.eval()
    try:
        eager = _evaluate_all(model, inputs)
    finally:
        model.train(was_training)
    exported = load_potential(path, device)
    differences = largest_differences(_evaluate_all(exported, inputs), eager)
    check_agreement(
        f"the exported {exported.format} file and the model it was exported from", differences, tolerance, name
    )
    return {
        "structures": len(inputs),
        "source": source,
        "tolerance": tolerance,
        "measure": "max |a - b| / max(1, max |b|)",
        "differences": {"file vs eager": differences},
    }


def agreement_summary(report: Dict[str, Any] | None) -> str:
    """One line for ``physml-md info``: the largest difference of each comparison."""
    if not report:
        return "not measured (exported before physml-md checked it)"
    parts = []
    for name, differences in report.get("differences", {}).items():
        values = ", ".join(f"{key} {value:.1e}" for key, value in differences.items())
        parts.append(f"{name}: {values}")
    return (
        f"{'; '.join(parts)} (largest relative difference, {report.get('structures')} {report.get('source')} "
        f"structures; tolerance {report.get('tolerance'):g})"
    )


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
    "torchscript" (``.pt``, what TorchForce runs), "export" (a ``torch.export`` program, ``.pt2``) or
    "aotinductor" (that program compiled, ``.pt2``); default: from the file name. Returns the path written.

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
    source = "training" if structures else "built-in"
    if format != "torchscript":
        from physml_md.export_program import save_program

        document = build_metadata(model, metadata, format)
        with atomic_path(path) as tmp:
            save_program(model, tmp, json.dumps(document, indent=2, sort_keys=True), format, model.shift.device)
            document["agreement"] = file_agreement(model, tmp, structures, source, path)
            replace_metadata(tmp, document)
        return path
    scripted = script_potential(model, metadata)
    with atomic_path(path) as tmp:
        torchscript.save(scripted.module, str(tmp), {METADATA_FILE: json.dumps(scripted.metadata)})
        scripted.metadata["agreement"] = file_agreement(model, tmp, structures, source, path)
        document = json.dumps(scripted.metadata, indent=2, sort_keys=True)
        torchscript.save(scripted.module, str(tmp), {METADATA_FILE: document})
    return path


def replace_metadata(path: PathLike, metadata: Dict[str, Any]) -> None:
    """Rewrite the metadata member of an exported zip archive in place (every other member is copied unchanged,
    in order, stored uncompressed as torch writes them)."""
    import shutil

    path = Path(path)
    document = json.dumps(metadata, indent=2, sort_keys=True).encode()
    rewritten = path.with_name(path.name + ".metadata")
    try:
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(rewritten, "w", zipfile.ZIP_STORED) as target:
            for info in source.infolist():
                if info.filename.endswith("/extra/" + METADATA_FILE):
                    target.writestr(info.filename, document)
                else:
                    with source.open(info) as member, target.open(info, "w") as copy:
                        shutil.copyfileobj(member, copy)
        rewritten.replace(path)
    finally:
        rewritten.unlink(missing_ok=True)


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
        if not names:
            raise ExportFormatError(
                f"{path} is a zip archive but not a physml-md export (it has no {METADATA_FILE}); "
                "export the model with physml_md.export_potential"
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


def import_required_libraries(metadata: Dict[str, Any]) -> None:
    """Import the Python modules whose TorchScript classes the file uses (vesin_torch)."""
    import importlib

    for name in metadata.get("imports", REQUIRED_IMPORTS):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"the exported model needs {name!r}: pip install vesin-torch ({exc})") from exc


def load_potential(path: PathLike, device: Union[str, torch.device] = "cpu") -> ExportedPotential:
    """Load an exported file onto ``device`` after checking its metadata."""
    path = Path(path)
    metadata = read_metadata(path)
    import_required_libraries(metadata)
    if metadata["format"] != "torchscript":
        from physml_md.export_program import load_program

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

    model: an exported file, a training checkpoint (``.ckpt``: its EMA weights are scripted on the fly), a
    ``Potential`` (scripted on the fly) or an already loaded ``ExportedPotential``.
    """
    if isinstance(model, ExportedPotential):
        exported = model
    elif isinstance(model, Potential):
        exported = script_potential(model)
    elif isinstance(model, (str, Path)) and Path(model).suffix == ".ckpt":
        from physml_md.checkpoint import exportable_from_checkpoint

        exported = script_potential(*exportable_from_checkpoint(model))
        exported.path = Path(model)
    elif isinstance(model, (str, Path)):
        return load_potential(model, device)
    else:
        raise TypeError(
            "expected an exported file, a checkpoint (.ckpt), a Potential or an ExportedPotential; got "
            + type(model).__name__
        )
    device = torch.device(device)
    if exported.format != "torchscript":
        loaded_on = exported.module.shift.device
        if loaded_on.type != device.type:
            raise ValueError(
                f"this {exported.format} model was loaded on {loaded_on.type}; load the file again on {device.type} "
                f"(load_potential(path, device={device.type!r}))"
            )
        return exported
    exported.module.to(device)
    return exported
