"""physml-md: machine-learned interatomic potentials trained with Lightning, run in ASE and OpenMM."""

from physml_md._version import __version__

__all__ = ["__version__", "PhysMLCalculator", "export_potential", "load_potential", "read_metadata"]


def __getattr__(name):
    # imported on first use, so that `import physml_md` (and `physml-md --version`) does not load torch
    if name == "PhysMLCalculator":
        from physml_md.integrations.ase import PhysMLCalculator

        return PhysMLCalculator
    if name in ("export_potential", "load_potential", "read_metadata"):
        import physml_md.export

        return getattr(physml_md.export, name)
    raise AttributeError(f"module 'physml_md' has no attribute {name!r}")
