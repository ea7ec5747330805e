"""Molecular dynamics: the MD runner (ASE or OpenMM engine), reporters, validation metrics and analysis.

``physml_md.md.metrics`` holds the engine-free numbers (energy drift, temperature statistics, blow-up checks,
structure comparison through mdtraj). Nothing is imported here, so importing one module of this package
does not load the engines.
"""
