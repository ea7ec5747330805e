"""benchmarks/run_all.py (`make bench`) ends with one table of every ratio."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import run_all  # noqa: E402


def test_ratio_table_lists_every_ratio_once():
    ratios = [("neighbour list, 100 Cu atoms", "ase / ours", 31.25), ("OpenMM step", "torchforce / bare", 1.0834)]
    table = run_all.format_ratios(ratios).splitlines()
    assert table[0].startswith("All ratios") and len(table) == 3 + len(ratios)
    assert table[3].split()[-1] == "31.250" and table[4].split()[-1] == "1.083"
    assert "ase / ours" in table[3] and "torchforce / bare" in table[4]
