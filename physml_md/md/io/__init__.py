"""Files of an MD run: ``writing`` (``TrajectoryWriter``, ``EnergyLog``), ``formats`` (one backend per trajectory
format) and ``reading`` (``read_trajectory``, ``read_energy_log``)."""
