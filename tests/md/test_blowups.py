"""physml_md/md/blowups.py: blow-ups seen in both engines and named (issue 15, item 6), and bad starting
structures named before any MD.

A timestep of one second moves every atom ~1e13 angstrom per step: before, OpenMM ran on with atoms at 7.7e12
angstrom and reported a sound run, and ASE fed the exploded positions to the model. Both engines now stop at
step 0 and say which atom, how far it would move per step, and that the timestep is the likely cause.

The checks themselves against independent references: ase.geometry.get_distances (minimum image) and forces
from ASE's EMT calculator.
"""

import math

import numpy as np
import pytest
from ase import units
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.geometry import get_distances

from physml_md.cli.main import main
from physml_md.md import blowups
from physml_md.md.blowups import (
    DEFAULT_MAX_FORCE,
    DEFAULT_MIN_DISTANCE,
    check_frame,
    check_progress,
    max_force,
    minimum_distance,
)
from physml_md.md.frame import Frame
from physml_md.md.runner import initial_velocities, run_md
from physml_md.models import build_model
from tests.helpers import random_rotation
from tests.md.helpers import A_CU, json_round_trip

ENGINES = ["ase", "openmm"]


@pytest.fixture(scope="module")
def water_model():
    return build_model("painn", species=["H", "O"], cutoff=4.0, features=8, n_interactions=1, seed=0).eval()


@pytest.fixture(scope="module")
def water_file(water_model, tmp_path_factory):
    from physml_md.export import export_potential

    return export_potential(water_model, tmp_path_factory.mktemp("blowups") / "water.pt")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_one_second_timestep_stops_at_step_0_naming_the_timestep(water_model, engine):
    result = run_md(water_model, molecule("H2O"), engine=engine, timestep="1 s", steps=100, temperature="300 K")
    assert not result.stable and result.blow_up_step == 0 and result.steps_done == 0
    blow_up = result.blow_up
    assert blow_up.reason == "large_step"
    (atom,) = blow_up.atoms
    # independent check: the fastest atom's speed from the velocities drawn at 300 K, times 1e15 fs
    speed = np.linalg.norm(initial_velocities(molecule("H2O"), 300.0, 0).get_velocities(), axis=1) * units.fs
    assert atom == int(np.argmax(speed)) and blow_up.threshold == 1.0
    assert blow_up.value == pytest.approx(speed.max() * 1e15, rel=1e-6)  # angstrom/fs * fs
    message = blow_up.message
    assert f"atom {atom} would move" in message and "per step" in message
    assert "likely cause: the timestep (1e+15 fs) is too long" in message


@pytest.mark.parametrize("engine", ENGINES)
def test_command_line_names_the_blow_up_and_exits_1(water_file, engine, tmp_path, capsys):
    from ase.io import write

    structure = tmp_path / "water.extxyz"
    write(structure, molecule("H2O"))
    code = main(["md", str(water_file), str(structure), "--engine", engine, "--timestep", "1 s", "--steps", "100"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "blow-up at step 0" in err and "Traceback" not in err
    assert "likely cause: the timestep (1e+15 fs) is too long" in err


def _frame(step, positions, velocities=None, potential=-10.0, temperature=300.0):
    return Frame(
        step=step,
        time_fs=step * 0.5,
        positions=np.asarray(positions, dtype=float),
        velocities=None if velocities is None else np.asarray(velocities, dtype=float),
        potential_energy=potential,
        kinetic_energy=0.1,
        temperature_k=temperature,
    )


START = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _check(previous, frame):
    return check_progress(previous, frame, timestep_fs=0.5, target_temperature_k=300.0, n_atoms=3)


def test_sound_progress_passes():
    later = START + 0.05
    assert _check(_frame(0, START), _frame(10, later, np.full((3, 3), 0.01))) is None


def test_an_atom_that_jumped_is_named_with_the_distance_per_step():
    later = START.copy()
    later[2] += [30.0, 40.0, 0.0]  # 50 angstrom in 10 steps: at least one step moved it 5 angstrom
    blow_up = _check(_frame(0, START), _frame(10, later))
    assert blow_up.reason == "large_displacement" and blow_up.atoms == (2,)
    assert blow_up.value == pytest.approx(5.0) and blow_up.threshold == 1.0
    assert "atom 2 moved 50 Å in 10 steps" in blow_up.message and "timestep (0.5 fs)" in blow_up.message


def test_a_fast_atom_is_named_before_the_next_step():
    velocities = np.zeros((3, 3))
    velocities[1] = [0.0, 0.0, -4.0]  # 4 angstrom/fs * 0.5 fs = 2 angstrom per step
    blow_up = _check(None, _frame(0, START, velocities))
    assert blow_up.reason == "large_step" and blow_up.atoms == (1,) and blow_up.value == pytest.approx(2.0)


def test_a_hot_frame_is_named_with_its_temperature():
    blow_up = _check(_frame(0, START), _frame(10, START, temperature=2.5e4))
    assert blow_up.reason == "high_temperature" and blow_up.value == 2.5e4 and blow_up.threshold == 1e4
    assert "temperature is 25000 K" in blow_up.message and "likely cause" in blow_up.message
    hot_target = check_progress(None, _frame(0, START, temperature=2.5e4), 0.5, 3000.0, 3)  # 10 x 3000 K allowed
    assert hot_target is None


def test_an_energy_jump_is_named_per_atom():
    blow_up = _check(_frame(0, START, potential=-10.0), _frame(10, START, potential=-10.0 - 3 * 12.0))
    assert blow_up.reason == "large_energy_change" and blow_up.value == pytest.approx(-12.0)
    assert "potential energy changed by -12 eV per atom" in blow_up.message


@pytest.mark.parametrize("name", ["potential_energy", "temperature_k"])
def test_a_non_finite_energy_or_temperature_is_named(name):
    frame = _frame(10, START)
    setattr(frame, name, float("nan"))
    blow_up = _check(_frame(0, START), frame)
    assert blow_up.reason == "non_finite_energy" and name.split("_")[0] in blow_up.message


@pytest.mark.parametrize("engine", ENGINES)
def test_nan_positions_are_named_before_any_md(water_model, engine):
    atoms = molecule("H2O")
    atoms.positions[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"positions contain NaN or infinite values \(atom 1\).*check the structure"):
        run_md(water_model, atoms, engine=engine, steps=10)


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
    assert minimum_distance(positions, cell)[0] > 2 * blowups._SEARCH_RADIUS  # two widenings
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


def test_default_thresholds_and_a_stricter_one(cu_frame):
    positions, _, cell = cu_frame
    assert (DEFAULT_MIN_DISTANCE, DEFAULT_MAX_FORCE) == (0.5, 100.0)
    nearest = minimum_distance(positions, cell)[0]
    assert 2.2 < nearest < 2.55  # nearest neighbours of the rattled lattice
    threshold = 0.5 * nearest
    squeezed = positions.copy()
    squeezed[1] = squeezed[0] + [0.0, 0.0, 1.0]  # passes the absolute default, fails a stricter one
    assert check_frame(squeezed, None, cell) is None
    assert check_frame(squeezed, None, cell, min_distance_threshold=threshold).atoms == (0, 1)


@pytest.mark.parametrize(
    "call, message",
    [
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
