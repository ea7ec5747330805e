"""Molecular dynamics: the MD runner (ASE or OpenMM engine), reporters, validation metrics and analysis.

``physml_md.validation.metrics`` holds the engine-free run numbers (energy drift, temperature statistics, blow-up
checks), ``physml_md.validation.structure`` the structure distributions (g(r), bond and dihedral distributions through
mdtraj) and ``physml_md.validation.distributions`` the distances between two of them (histogram overlap,
Jensen-Shannon, g(r) difference). Nothing is imported here, so importing one module of this package does not load
the engines.
"""
