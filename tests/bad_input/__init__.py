"""Bad input through every entry point, one module each (issue 15): the Python API, the ASE calculator, the OpenMM
adapter and the command line. Every case asserts the exception type (exit code 2 for the command line), that the
message names the problem and the fix, and that no traceback reaches the user. Shared cases: ``cases.py``."""
