"""benchmarks/bench_uncertainty.py on a tiny budget (EMT-labelled ethanol in place of GFN2-xTB): it trains a
committee and reports, per test set, a rank correlation between uncertainty and error."""

import sys
from pathlib import Path

import numpy as np
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.io import write

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_uncertainty  # noqa: E402


def frames(n, amplitude, seed):
    out = []
    for i in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.rattle(amplitude, seed=seed + i)
        atoms.calc = EMT()
        atoms.get_forces()
        out.append(atoms)
    return out


def test_tiny_run_reports_both_test_sets(tmp_path):
    write(tmp_path / bench_uncertainty.COLD, frames(14, 0.05, 0))
    write(tmp_path / "ethanol_xtb_500K.extxyz", frames(6, 0.15, 100))
    rows = bench_uncertainty.run(tmp_path, n_train=10, n_test=4, epochs=1, members=2, out=tmp_path / "runs")
    assert list(rows) == ["300 K held out (in distribution)", "500 K (outside)"]
    for row in rows.values():
        assert row["frames"] == 4 and row["force_mae_mev_per_angstrom"] > 0
        assert row["mean_forces_std_mev_per_angstrom"] > 0
        rho = row["spearman_max_force_error_vs_uncertainty"]
        assert np.isnan(rho) or -1.0 <= rho <= 1.0
