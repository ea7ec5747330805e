"""physml_md/validation/metrics.py: energy drift and temperature statistics, against independent references (numpy least
squares, the kinetic-energy distribution); and the import rules of the numeric md/ modules.

Also covers physml_md/md/arrays.py (input checks and the JSON form of the results of md/): the bad inputs and
the to_dict round trips below go through it (tests/test_layers.py: TESTED_THROUGH).
"""

import ast
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from physml_md.md import arrays, blowups, geometry
from physml_md.validation import distributions, metrics, structure
from physml_md.validation.metrics import energy_drift, temperature_statistics
from tests.md.helpers import json_round_trip

# ---- layer rule


def imports_of(module):
    """Every module that ``module`` imports (also inside functions), and its module-level import statements."""
    tree = ast.parse(Path(module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    return imported, [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_modules_import_only_numpy_mdtraj_units_and_stdlib():
    shared = {"physml_md.units", "physml_md.md.arrays", "physml_md.md.geometry"}
    ours = {
        arrays: set(),
        geometry: {"physml_md.units", "physml_md.md.arrays", "physml_md.data.neighbors", "torch", "ase.cell"},
        metrics: shared | {"physml_md.md.blowups"},
        blowups: shared | {"physml_md.config.md"},  # the MD settings (its thresholds)
        distributions: {"physml_md.md.arrays", "scipy.spatial.distance"},
        structure: shared | {"physml_md.validation.distributions", "ase.data"},
    }
    for module, allowed in ours.items():
        imported, top_level = imports_of(module)
        outside = {
            name
            for name in imported
            if name.split(".")[0] not in sys.stdlib_module_names | {"numpy", "mdtraj", "__future__"}
            and name not in allowed
        }
        assert not outside, f"{module.__name__} imports {sorted(outside)}"
        at_top = {node.module if isinstance(node, ast.ImportFrom) else node.names[0].name for node in top_level}
        lazy = ("mdtraj", "scipy")  # loaded on first use (torch and ase, core dependencies, are imported at the top)
        assert not [name for name in at_top if name.startswith(lazy)], module.__name__
    for numbers in (metrics, blowups):  # the run-level numbers need no mdtraj at all
        assert not {"mdtraj", "mdtraj.utils"} & imports_of(numbers)[0]
    assert "mdtraj" in imports_of(geometry)[0]


def test_no_private_name_is_imported_across_md_modules():
    for path in Path(metrics.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("physml_md"):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"


# ---- energy drift


def test_drift_recovers_slope_of_noisy_line():
    rng = np.random.default_rng(0)
    n_atoms, true_drift = 64, 0.3  # meV/atom/ps
    time = np.arange(2001) * 5.0  # fs, 10 ps
    slope = true_drift / 1000.0 * n_atoms / 1000.0  # eV/fs
    noise = 0.01e-3 * n_atoms  # 0.01 meV/atom
    energy = -230.0 + slope * time + rng.normal(scale=noise, size=time.size)
    result = energy_drift(time, energy, n_atoms)
    reference_slope, reference_intercept = np.polyfit(time, energy, 1)
    assert result.drift_mev_per_atom_per_ps == pytest.approx(reference_slope * 1e6 / n_atoms, rel=1e-9)
    assert result.intercept_ev == pytest.approx(reference_intercept, rel=1e-12)
    standard_error = noise / np.sqrt(np.sum((time - time.mean()) ** 2)) * 1e6 / n_atoms
    assert abs(result.drift_mev_per_atom_per_ps - true_drift) < 4 * standard_error
    assert standard_error < 0.01 * true_drift  # the check above is a real one
    assert result.residual_rms_mev_per_atom == pytest.approx(0.01, rel=0.1)
    assert result.max_deviation_mev_per_atom == pytest.approx(np.max(np.abs(energy - energy[0])) * 1e3 / n_atoms)
    assert result.duration_ps == pytest.approx(10.0) and result.n_points == 2001 and result.n_atoms == 64
    assert json_round_trip(result)["drift_mev_per_atom_per_ps"] == result.drift_mev_per_atom_per_ps


def test_drift_units_one_ev_per_ps_is_1000_mev():
    time = np.linspace(0.0, 2000.0, 11)  # fs
    result = energy_drift(time, 1.0e-3 * time, n_atoms=1)  # 1 eV/ps for one atom
    assert result.drift_mev_per_atom_per_ps == pytest.approx(1000.0, rel=1e-12)
    assert result.residual_rms_mev_per_atom == pytest.approx(0.0, abs=1e-9)
    assert result.max_deviation_mev_per_atom == pytest.approx(2000.0)
    assert energy_drift(time, 1.0e-3 * time, n_atoms=4).drift_mev_per_atom_per_ps == pytest.approx(250.0)


def test_constant_energy_has_no_drift():
    time = np.arange(500) * 0.5
    exact = energy_drift(time, np.full(500, -12.5), 10)
    assert exact.drift_mev_per_atom_per_ps == 0.0 and exact.residual_rms_mev_per_atom == 0.0
    rng = np.random.default_rng(1)
    noisy = energy_drift(time, -12.5 + rng.normal(scale=1e-4, size=500), 10)
    standard_error = 1e-4 / np.sqrt(np.sum((time - time.mean()) ** 2)) * 1e6 / 10
    assert abs(noisy.drift_mev_per_atom_per_ps) < 4 * standard_error
    assert noisy.intercept_ev == pytest.approx(-12.5, abs=1e-4)


# ---- temperature


def test_temperature_statistics_skip_and_moments():
    rng = np.random.default_rng(2)
    warmup = np.linspace(600.0, 320.0, 50)
    production = rng.normal(300.0, 12.0, size=200)
    temperature = np.concatenate([warmup, production])
    result = temperature_statistics(temperature, 300.0, skip_fraction=0.2)
    assert result.n_skipped == 50 and result.n_samples == 200
    assert result.mean_k == pytest.approx(production.mean(), rel=1e-12)
    assert result.std_k == pytest.approx(production.std(), rel=1e-12)
    assert result.deviation_k == pytest.approx(production.mean() - 300.0, rel=1e-12)
    assert result.relative_deviation == pytest.approx((production.mean() - 300.0) / 300.0, rel=1e-12)
    assert result.expected_std_k is None and result.std_ratio is None
    unskipped = temperature_statistics(temperature, 300.0, skip_fraction=0.0)
    assert unskipped.mean_k > result.mean_k + 20  # the warm-up was really discarded above
    assert json_round_trip(result)["n_atoms"] is None


def test_canonical_spread_matches_kinetic_energy_distribution():
    # in the canonical ensemble 3N k T_inst / T is chi-square with 3N degrees of freedom
    rng = np.random.default_rng(3)
    n_atoms, target = 50, 500.0
    temperature = target * rng.chisquare(3 * n_atoms, size=20000) / (3 * n_atoms)
    result = temperature_statistics(temperature, target, skip_fraction=0.0, n_atoms=n_atoms)
    assert result.expected_std_k == pytest.approx(target * math.sqrt(2 / 150), rel=1e-12)
    assert result.std_ratio == pytest.approx(1.0, abs=0.03)
    assert abs(result.deviation_k) < 4 * result.expected_std_k / math.sqrt(20000)
    suppressed = temperature_statistics(target + 0.3 * (temperature - target), target, 0.0, n_atoms=n_atoms)
    assert suppressed.std_ratio == pytest.approx(0.3, abs=0.01)


# ---- bad inputs: one clear error each


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: energy_drift([0, 1], [1.0, 2.0], 4), "at least 3 points"),
        (lambda: energy_drift([0, 1, 2], [1.0, 2.0], 4), "time_fs has 3 values but total_energy_ev has 2"),
        (
            lambda: energy_drift([0, 1, 2, 3], [1.0, np.nan, 2.0, np.inf], 4),
            r"total_energy_ev is not finite .* \[1, 3\]",
        ),
        (lambda: energy_drift([0, 1, np.nan], [1.0, 2.0, 3.0], 4), r"time_fs is not finite .* \[2\]"),
        (lambda: energy_drift([0, 2, 1], [1.0, 2.0, 3.0], 4), r"time_fs must increase strictly, but time_fs\[2\]"),
        (lambda: energy_drift([0, 1, 2], [1.0, 2.0, 3.0], 0), "n_atoms must be a positive integer"),
        (lambda: temperature_statistics([300.0, 301.0, 299.0], 300.0, 0.9), "only 1 temperature sample"),
        (lambda: temperature_statistics([300.0, -1.0, 299.0], 300.0), r"negative at indices \[1\]"),
        (lambda: temperature_statistics([300.0, 301.0, 299.0], 300.0, 1.0), r"skip_fraction must be in \[0, 1\)"),
        (lambda: temperature_statistics([300.0, 301.0], 0.0), "target_k must be a positive"),
    ],
)
def test_bad_inputs_raise_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
