"""Molecular dynamics: ``runner`` (``run_md``), ``engines`` (ASE and OpenMM), ``frame`` (one record per step),
``arrays``, ``control``, ``geometry``, ``uncertainty``, ``blowups`` and ``io/`` (trajectory files). Nothing is
imported here, so importing one module does not load the engines."""
