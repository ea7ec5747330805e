"""Molecular dynamics: the MD runner (ASE or OpenMM engine), reporters, validation metrics and analysis.

``physml_md.md.metrics`` holds the engine-free run numbers (energy drift, temperature statistics, blow-up
checks) and ``physml_md.md.structure`` the structure comparison (g(r), bond and dihedral distributions through
mdtraj, histogram distances). Nothing is imported here, so importing one module of this package does not load
the engines.
"""
