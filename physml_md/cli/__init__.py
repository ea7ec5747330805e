"""The ``physml-md`` command line: ``main`` (the parser), ``commands`` (what each command does) and ``inspect``
(``info`` and ``evaluate``)."""
