"""Engine adapters: ASE (``ase.py``), OpenMM (``openmm*.py``) and the openmm-ml plugin (``openmmml.py``).

They read only exported files or checkpoints, never training code."""
