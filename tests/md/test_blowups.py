"""Blow-ups seen in both engines and named (issue 15, item 6), and bad starting structures named before any MD.

A timestep of one second moves every atom ~1e13 angstrom per step: before, OpenMM ran on with atoms at 7.7e12
angstrom and reported a sound run, and ASE fed the exploded positions to the model. Both engines now stop at
step 0 and say which atom, how far it would move per step, and that the timestep is the likely cause.
"""

import numpy as np
import pytest
from ase import units
from ase.build import molecule

from physml_md.cli import main
from physml_md.md.frame import Frame
from physml_md.md.metrics import check_progress
from physml_md.md.runner import initial_velocities, run_md
from physml_md.models import build_model

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
