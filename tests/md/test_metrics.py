"""physml_md.md.metrics: drift, temperature and blow-up checks, against independent references.

References: numpy least squares, ase.geometry.get_distances (minimum image) and forces from ASE's EMT calculator.

Also covers physml_md/md/arrays.py (input checks and the JSON form of the results of md/): the bad inputs and
the to_dict round trips below go through it (tests/test_layers.py: TESTED_THROUGH).
"""

import ast
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.geometry import get_distances

from physml_md.md import arrays, distributions, geometry, metrics, structure
from physml_md.md.metrics import (
    DEFAULT_MAX_FORCE,
    DEFAULT_MIN_DISTANCE,
    check_frame,
    distance_threshold_from_reference,
    energy_drift,
    max_force,
    minimum_distance,
    temperature_statistics,
)
from tests.helpers import random_rotation
from tests.md.helpers import A_CU, json_round_trip

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
        metrics: shared,
        distributions: {"physml_md.md.arrays", "scipy.spatial.distance"},
        structure: shared | {"physml_md.md.distributions", "ase.data"},
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
        lazy = ("mdtraj", "torch", "scipy", "ase", "physml_md.data")  # heavy or optional: only inside functions
        assert not [name for name in at_top if name.startswith(lazy)], module.__name__
    assert not {"mdtraj", "mdtraj.utils"} & imports_of(metrics)[0]  # the run-level numbers need no mdtraj at all
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


# ---- minimum distance and max force


def assert_matches_ase(positions, cell, pbc):
    distance, pair = minimum_distance(positions, cell, pbc)
    _, lengths = get_distances(positions, cell=cell, pbc=None if cell is None else pbc)
    lengths[np.tril_indices(len(positions))] = np.inf
    expected = np.unravel_index(np.argmin(lengths), lengths.shape)
    assert pair == tuple(int(i) for i in expected)
    assert distance == pytest.approx(lengths[expected], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_minimum_distance_periodic_triclinic_against_ase(seed):
    rng = np.random.default_rng(seed)
    # skewed cells, rotated away from any standard orientation, positions anywhere (also outside the cell)
    cell = np.diag(rng.uniform(4.0, 7.0, 3)) + np.triu(rng.uniform(-3.0, 3.0, (3, 3)), 1)
    cell = cell @ random_rotation(rng)
    positions = rng.uniform(-0.5, 1.5, (int(rng.integers(8, 40)), 3)) @ cell
    assert_matches_ase(positions, cell, True)
    pbc = rng.random(3) < 0.5
    assert_matches_ase(positions, cell, pbc)


def test_minimum_distance_needs_images_beyond_the_wrapped_one():
    # a very flat, skewed cell: the wrapped displacement is not the minimum image
    cell = np.array([[5.0, 0.0, 0.0], [4.6, 1.0, 0.0], [2.2, 0.7, 0.9]])
    rng = np.random.default_rng(7)
    for _ in range(20):
        positions = rng.uniform(0.0, 1.0, (5, 3)) @ cell
        assert_matches_ase(positions, cell, True)


def test_minimum_distance_non_periodic_and_mixed_pbc_with_zero_vector():
    rng = np.random.default_rng(4)
    positions = rng.uniform(0.0, 6.0, (30, 3))
    assert_matches_ase(positions, None, False)
    distance, pair = minimum_distance(positions)  # no cell: not periodic
    assert (distance, pair) == minimum_distance(positions, np.eye(3) * 6.0, False)
    slab = np.array([[6.0, 0.0, 0.0], [1.0, 6.0, 0.0], [0.0, 0.0, 0.0]])  # no vector along z
    assert_matches_ase(positions, slab, [True, True, False])


def test_minimum_distance_beyond_the_first_search_radius():
    # a dilute gas: no pair within the first neighbour-list radius, the search widens until it finds one
    rng = np.random.default_rng(5)
    cell = np.array([[90.0, 0.0, 0.0], [20.0, 80.0, 0.0], [-10.0, 15.0, 85.0]])
    positions = rng.uniform(0.0, 1.0, (12, 3)) @ cell
    assert minimum_distance(positions, cell)[0] > 2 * metrics._SEARCH_RADIUS  # two widenings
    assert_matches_ase(positions, cell, True)
    assert_matches_ase(positions, None, False)


def test_minimum_distance_names_the_first_of_equally_close_pairs():
    lattice = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(3)  # 648 pairs at exactly a / sqrt(2)
    distance, pair = minimum_distance(lattice.positions, lattice.cell[:])
    assert distance == pytest.approx(A_CU / math.sqrt(2), rel=1e-12) and pair == (0, 1)


def test_max_force():
    rng = np.random.default_rng(6)
    forces = rng.normal(size=(40, 3))
    forces[23] = [3.0, -4.0, 12.0]
    assert max_force(forces) == (13.0, 23)


# ---- blow-up detection


@pytest.fixture(scope="module")
def cu_frame():
    atoms = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    return atoms.get_positions(), atoms.get_forces(), atoms.cell[:]


def test_sound_frame_passes(cu_frame):
    positions, forces, cell = cu_frame
    assert check_frame(positions, forces, cell, True) is None
    assert check_frame(positions, None, cell, True) is None


def test_close_contact_across_the_boundary(cu_frame):
    positions, forces, cell = cu_frame
    positions = positions.copy()
    positions[17] = positions[3] + np.array([0.21, 0.0, 0.0]) + cell[0]  # one cell away: only the image is close
    found = check_frame(positions, forces, cell, True)
    assert found.reason == "close_contact" and found.atoms == (3, 17)
    assert found.value == pytest.approx(0.21)
    assert found.message == "atoms 3 and 17 are 0.21 Å apart (threshold 0.5 Å)"
    assert check_frame(positions, forces, cell, False) is None  # without periodicity they are far apart
    assert check_frame(positions, forces, cell, True, min_distance_threshold=None) is None
    assert json_round_trip(found)["message"] == found.message


def test_large_force_and_non_finite_values(cu_frame):
    positions, forces, cell = cu_frame
    forces = forces.copy()
    forces[5] = [812.0, 0.0, 0.0]
    found = check_frame(positions, forces, cell)
    assert (found.reason, found.atoms, found.value, found.threshold) == ("large_force", (5,), 812.0, 100.0)
    assert found.message == "force on atom 5 is 812 eV/Å (threshold 100 eV/Å)"
    assert check_frame(positions, forces, cell, max_force_threshold=1000.0) is None
    forces[9, 1] = np.inf
    forces[30, 0] = np.nan
    found = check_frame(positions, forces, cell)
    assert (found.reason, found.atoms) == ("non_finite_forces", (9, 30))
    assert found.message == "forces are not finite (nan or inf) on atoms [9, 30]"
    bad_positions = positions.copy()
    bad_positions[[2, 7]] = np.nan
    bad_positions[8] = bad_positions[9]  # also a close contact, but non-finite numbers are reported first
    found = check_frame(bad_positions, forces, cell)
    assert (found.reason, found.atoms) == ("non_finite_positions", (2, 7))


def test_default_thresholds_and_reference_threshold(cu_frame):
    positions, _, cell = cu_frame
    assert (DEFAULT_MIN_DISTANCE, DEFAULT_MAX_FORCE) == (0.5, 100.0)
    nearest = minimum_distance(positions, cell)[0]
    assert 2.2 < nearest < 2.55  # nearest neighbours of the rattled lattice
    threshold = distance_threshold_from_reference([positions, positions + 0.01], cell)
    assert threshold == pytest.approx(0.5 * nearest)
    squeezed = positions.copy()
    squeezed[1] = squeezed[0] + [0.0, 0.0, 1.0]  # passes the absolute default, fails the data-aware threshold
    assert check_frame(squeezed, None, cell) is None
    assert check_frame(squeezed, None, cell, min_distance_threshold=threshold).atoms == (0, 1)


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
        (lambda: minimum_distance(np.zeros((1, 3))), "at least 2 atoms"),
        (lambda: minimum_distance(np.zeros((4, 2))), r"shape \[n_atoms, 3\]"),
        (lambda: minimum_distance(np.zeros((3, 3)), None, True), "no cell was given"),
        (lambda: minimum_distance(np.eye(3), np.diag([5.0, 5.0, 0.0]), True), r"cell vector 2 is zero but pbc\[2\]"),
        (lambda: minimum_distance([[0, 0, 0], [np.nan, 0, 0]]), r"positions are not finite .* atoms \[1\]"),
        (lambda: max_force([[0, 0, np.inf]]), r"forces are not finite .* atoms \[0\]"),
        (lambda: check_frame(np.eye(3), np.zeros((2, 3))), "forces has 2 atoms but positions has 3"),
        (lambda: check_frame(np.eye(3), max_force_threshold=-1.0), "max_force_threshold must be a positive"),
    ],
)
def test_bad_inputs_raise_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
