"""run_md (physml_md/md/runner.py) and its engines: blow-ups named, engines agreeing, clear errors."""

import numpy as np
import pytest
from ase.build import bulk
from ase.geometry import get_distances

from physml_md.config.md import md_settings
from physml_md.md.runner import run_md
from physml_md.units import FS_TO_PS
from tests.helpers import random_cu_model, rattled_cu


@pytest.fixture(scope="module")
def random_cu():
    """Random weights: nothing keeps two Cu atoms apart."""
    return random_cu_model()


def test_random_model_is_flagged_unstable_with_step_and_atoms(random_cu, tmp_path):
    result = run_md(
        random_cu,
        rattled_cu(),
        ensemble="nvt",
        temperature="600 K",
        steps=3000,
        report_every=10,
        seed=1,
        trajectory=tmp_path / "run.extxyz",
        log=tmp_path / "run.csv",
    )
    assert not result.stable and result.blow_up.reason == "close_contact"
    assert 0 < result.blow_up_step == result.steps_done < 3000  # stopped early, at the step it says
    i, j = result.blow_up.atoms
    assert f"atoms {i} and {j} are" in result.blow_up.message
    last = result.positions[-1]
    distance = get_distances(last[i], last[j], cell=result.cells[-1], pbc=True)[1][0, 0]  # independent check
    assert distance == pytest.approx(result.blow_up.value, abs=1e-9) and distance < 0.5
    from physml_md.md.io.writing import read_energy_log, read_trajectory

    frames = read_trajectory(tmp_path / "run.extxyz")
    assert len(frames.positions) == len(result.times_fs) == result.steps_done // 10 + 1  # up to the blow-up
    assert np.allclose(frames.positions[-1], last)
    assert read_energy_log(tmp_path / "run.csv")["step"][-1] == result.blow_up_step
    assert result.summary()["blow_up"]["step"] == result.blow_up_step


def test_force_threshold_stops_the_run_at_once(random_cu):
    result = run_md(random_cu, rattled_cu(), ensemble="nve", steps=100, max_force=1e-3)
    assert result.blow_up.reason == "large_force" and result.blow_up_step == 0 and result.steps_done == 0
    assert "force on atom" in result.blow_up.message


def test_trained_model_holds_300_k(cu_model):
    result = run_md(cu_model.model_path, rattled_cu(1), ensemble="nvt", friction="5/ps", steps=1000, seed=4)
    assert result.stable and result.steps_done == 1000
    mean = np.mean(result.temperatures_k[len(result.temperatures_k) // 5 :])
    # 32 atoms: the canonical spread of T is sqrt(2/(3N)) * 300 = 43 K per frame; the mean of ~80 correlated
    # frames is good to ~15 K
    assert abs(mean - 300.0) < 30.0, mean


def test_velocities_start_at_the_temperature_without_drift(cu_model):
    result = run_md(
        cu_model.model_path, rattled_cu(3), ensemble="nve", steps=1, report_every=1, seed=6, temperature="450 K"
    )
    assert result.temperatures_k[0] == pytest.approx(450.0, rel=0.35)  # one draw of 96 velocity components
    again = run_md(
        cu_model.model_path, rattled_cu(3), ensemble="nve", steps=1, report_every=1, seed=6, temperature="450 K"
    )
    assert again.kinetic_energies[0] == result.kinetic_energies[0]  # seeded


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timestep": "0.5 K"}, "timestep needs a time"),
        ({"temperature": "300 fs"}, "temperature needs a temperature"),
        ({"steps": 10, "time": "1 ps"}, "either steps"),
        ({}, "either steps"),
        ({"steps": 0}, "at least one step"),
        ({"steps": 5, "engine": "lammps"}, "engine must be one of 'ase', 'openmm', got 'lammps'"),
        ({"steps": 5, "ensemble": "npt"}, "ensemble must be one of 'nve', 'nvt', got 'npt'"),
        ({"steps": 5, "report_every": 0}, "report_every must be >= 1"),
        ({"steps": 5, "min_distnace": 0.4}, "unknown key 'min_distnace'; did you mean 'min_distance'"),
    ],
)
def test_bad_input_is_one_clear_error(cu_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_md(cu_model.model_path, rattled_cu(), **kwargs)


def test_element_the_model_does_not_know(cu_model):
    atoms = rattled_cu()
    atoms.symbols[0] = "Ag"
    with pytest.raises(ValueError, match="element\\(s\\) Ag in the structure are not known to this model, .* on Cu"):
        run_md(cu_model.model_path, atoms, steps=5)


def test_progress_bar(cu_model, capsys):
    run_md(cu_model.model_path, rattled_cu(), steps=20, report_every=10, progress=True)
    assert "ns/day" in capsys.readouterr().err


@pytest.mark.parametrize("third_vector", [0.0, 7.0], ids=["zero-third-vector", "third-vector-shorter-than-slab"])
def test_slab_runs_with_its_own_pbc(random_cu, third_vector):
    # a slab, periodic along a and b only: the runner must check it with pbc (True, True, False), not pbc=True
    # (a zero third cell vector then stopped the run; a short one folded the slab onto itself, a false contact)
    slab = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 3))
    slab.cell[2] = [0.0, 0.0, third_vector]
    slab.pbc = (True, True, False)
    result = run_md(random_cu, slab, ensemble="nve", temperature="10 K", steps=2, report_every=1)
    assert result.stable, result.blow_up.message
    _, lengths = get_distances(result.positions[0], cell=slab.cell, pbc=slab.pbc)  # independent reference
    lengths[np.diag_indices(len(slab))] = np.inf
    assert result.min_distance <= lengths.min() + 1e-9


def test_one_record_reaches_the_result_the_log_and_the_trajectory(random_cu, tmp_path):
    """Each reported Frame is stored, logged and written once: the three copies hold the same numbers."""
    from physml_md.md.io.writing import read_energy_log, read_trajectory

    result = run_md(
        random_cu, rattled_cu(4), ensemble="nve", temperature="50 K", steps=20, report_every=5,
        trajectory=tmp_path / "run.traj", log=tmp_path / "run.csv",
    )  # fmt: skip
    assert result.stable
    log, trajectory = read_energy_log(tmp_path / "run.csv"), read_trajectory(tmp_path / "run.traj")
    assert list(log["step"]) == list(trajectory.steps) == [0, 5, 10, 15, 20]
    np.testing.assert_array_equal(trajectory.times_fs, result.times_fs)
    np.testing.assert_array_equal(log["time_ps"], np.asarray(result.times_fs) * FS_TO_PS)
    np.testing.assert_array_equal(trajectory.potential_energies, result.potential_energies)
    np.testing.assert_array_equal(log["potential_ev"], result.potential_energies)
    np.testing.assert_array_equal(log["kinetic_ev"], result.kinetic_energies)
    np.testing.assert_array_equal(log["total_ev"], result.total_energies)
    np.testing.assert_array_equal(log["temperature_k"], result.temperatures_k)
    np.testing.assert_array_equal(trajectory.positions, result.positions)
    # the thermostat's setting is not the temperature series
    assert result.target_temperature_k == result.summary()["temperature_k"] == 50.0
    assert len(result.temperatures_k) == 5 and result.temperatures_k[0] != 50.0


def test_settings_or_their_keys_give_the_same_run(random_cu):
    """run_md takes the MD settings (physml_md.config.md) or their keys; keys given beside settings win."""
    settings = md_settings(ensemble="nve", temperature="50 K", report_every=5, seed=2)
    by_settings = run_md(random_cu, rattled_cu(4), settings, steps=10)
    by_keys = run_md(random_cu, rattled_cu(4), ensemble="nve", temperature="50 K", report_every=5, seed=2, steps=10)
    other_seed = run_md(random_cu, rattled_cu(4), settings, steps=10, seed=3)
    assert by_settings.potential_energies == by_keys.potential_energies != other_seed.potential_energies
    assert by_settings.times_fs == [0.0, 2.5, 5.0]
