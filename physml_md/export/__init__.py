"""The exported file: metadata, writing (TorchScript, torch.export, metatomic), loading, checkpoints, agreement.

``metadata`` (the document inside every file) · ``save`` (``export_potential``) · ``loading`` (``load_potential``,
``load_model``) · ``torchscript`` and ``program`` (the two containers) · ``metatomic`` (the LAMMPS container) ·
``checkpoint`` (training checkpoints as models) · ``agreement`` (the file checked against the model).
"""

from physml_md.export.loading import ExportedPotential, load_model, load_potential, script_potential
from physml_md.export.metadata import (
    FORMATS,
    METADATA_FILE,
    ExportFormatError,
    format_file,
    read_metadata,
    replace_metadata,
    resolve_format,
)
from physml_md.export.save import export_potential

__all__ = [
    "FORMATS",
    "METADATA_FILE",
    "ExportFormatError",
    "ExportedPotential",
    "export_potential",
    "format_file",
    "load_model",
    "load_potential",
    "read_metadata",
    "replace_metadata",
    "resolve_format",
    "script_potential",
]
