"""Judging MD runs: ``suite`` (``validate``), ``criteria``, ``metrics`` (energy drift, temperatures),
``structure`` (g(r), bond and angle distributions), ``distributions`` (how far two are apart) and ``plots``."""
