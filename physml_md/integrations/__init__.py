"""Engine adapters for exported potentials: ``ase`` (``PhysMLCalculator``), ``openmm`` (``create_force``,
``create_system``), ``openmm_torch`` (the module OpenMM runs), ``openmm_topology`` (ASE atoms to an OpenMM topology),
``openmmml`` (the openmm-ml plugin and ML/MM) and ``engine_agreement``. They read exported files or checkpoints only."""
