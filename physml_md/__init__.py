"""physml-md: machine-learned interatomic potentials trained with Lightning, run in ASE and OpenMM."""

__version__ = "0.1.0"

from physml_md.export import export_potential, load_potential, read_metadata  # noqa: E402

__all__ = ["__version__", "PhysMLCalculator", "export_potential", "load_potential", "read_metadata"]


def __getattr__(name):
    # the ASE calculator is imported on first use, so `import physml_md` stays light
    if name == "PhysMLCalculator":
        from physml_md.integrations.ase import PhysMLCalculator

        return PhysMLCalculator
    raise AttributeError(f"module 'physml_md' has no attribute {name!r}")
