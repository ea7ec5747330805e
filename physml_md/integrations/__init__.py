"""Engine adapters: ASE (``ase.py``); OpenMM joins with its issue. They read only exported files or checkpoints."""
