"""physml-md: machine-learned interatomic potentials trained with Lightning, run in ASE and OpenMM."""

__version__ = "0.1.0"

from physml_md.export import export_potential, load_potential, read_metadata  # noqa: E402

__all__ = ["__version__", "export_potential", "load_potential", "read_metadata"]
