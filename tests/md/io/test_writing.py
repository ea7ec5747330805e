"""physml_md.md.io.writing: trajectory files and energy logs, written atomically; a blown-up frame is kept.

The round trip of each format is in test_formats.py, reading back in test_readers.py.
"""

import numpy as np
import pytest

from physml_md.md.io.formats import SUPPORTED_SUFFIXES, topology_path
from physml_md.md.io.reading import ENERGY_LOG_COLUMNS, read_energy_log, read_trajectory
from physml_md.md.io.writing import EnergyLog, TrajectoryWriter
from tests.md.helpers import (
    EXTXYZ_COLUMN,
    N_FRAMES,
    XTC_ANGSTROM,
    cu_frames,
    dir_listing,
    ethanol_frames,
    make_frame,
)

# ---------------------------------------------------------------------------------------------------------
# a blown-up frame


@pytest.mark.parametrize("suffix", [".traj", ".extxyz", ".dcd"])
def test_a_blown_up_frame_is_kept_with_its_labels(tmp_path, suffix):
    rng = np.random.default_rng(10)
    symbols, positions, _ = ethanol_frames(rng)
    bad = positions[1].copy()
    bad[3] = np.nan
    forces = rng.normal(size=(len(symbols), 3)) * 1e3
    path = tmp_path / f"run{suffix}"
    with TrajectoryWriter(path, symbols, pbc=False) as writer:
        writer.write(make_frame(positions[0], None, 0.0, 0, potential_energy=-1.0, forces=forces))
        writer.write(make_frame(bad, None, 1.0, 1, potential_energy=7.5, forces=forces))
    read = read_trajectory(path)
    assert np.isnan(read.positions[1, 3]).all() and np.isfinite(np.delete(read.positions[1], 3, axis=0)).all()
    if suffix != ".dcd":
        np.testing.assert_array_equal(read.potential_energies, [-1.0, 7.5])
        np.testing.assert_allclose(read.forces[1], forces, rtol=0, atol=EXTXYZ_COLUMN)


# ---------------------------------------------------------------------------------------------------------
# atomic writes


@pytest.mark.parametrize("suffix", SUPPORTED_SUFFIXES)
def test_failure_inside_the_block_leaves_nothing(tmp_path, suffix):
    rng = np.random.default_rng(6)
    symbols, positions, cells = cu_frames(rng)
    path = tmp_path / f"run{suffix}"
    with pytest.raises(RuntimeError, match="engine failed"), TrajectoryWriter(path, symbols, True) as writer:
        writer.write(make_frame(positions[0], cells[0], 0.0, 0))
        writer.write(make_frame(positions[1], cells[1], 1.0, 1))
        assert not path.exists()  # a reader never sees a file being written
        assert not topology_path(path).exists()
        raise RuntimeError("engine failed")
    assert dir_listing(tmp_path) == []  # no trajectory, no PDB, no temporary file


@pytest.mark.parametrize("suffix", SUPPORTED_SUFFIXES)
def test_failure_keeps_the_previous_file(tmp_path, suffix):
    rng = np.random.default_rng(7)
    symbols, positions, cells = cu_frames(rng)
    path = tmp_path / f"run{suffix}"
    with TrajectoryWriter(path, symbols, True) as writer:
        writer.write(make_frame(positions[0], cells[0], 0.0, 0))
    before = {name: (tmp_path / name).read_bytes() for name in dir_listing(tmp_path)}
    assert path.name in before and (topology_path(path).name in before) == (suffix in (".dcd", ".xtc"))

    with pytest.raises(RuntimeError, match="engine failed"), TrajectoryWriter(path, symbols, True) as writer:
        for i in range(N_FRAMES):
            writer.write(make_frame(positions[i] + 1.0, cells[i], float(i), i))
        assert {name: (tmp_path / name).read_bytes() for name in before} == before  # unchanged while writing
        raise RuntimeError("engine failed")
    assert {name: (tmp_path / name).read_bytes() for name in dir_listing(tmp_path)} == before
    assert read_trajectory(path).n_frames == 1


@pytest.mark.parametrize("suffix", [".dcd", ".traj"])
def test_closing_without_frames_raises_and_changes_nothing(tmp_path, suffix):
    path = tmp_path / f"run{suffix}"
    with pytest.raises(ValueError, match="no frame was written"), TrajectoryWriter(path, ["Cu"], False):
        pass
    assert dir_listing(tmp_path) == []


def test_a_rejected_frame_leaves_the_writer_usable(tmp_path):
    rng = np.random.default_rng(8)
    symbols, positions, _ = ethanol_frames(rng)
    path = tmp_path / "run.xtc"
    with TrajectoryWriter(path, symbols, pbc=False) as writer:
        writer.write(make_frame(positions[0], None, 0.0, 0))
        with pytest.raises(ValueError, match=r"positions must have shape \[9, 3\]"):
            writer.write(make_frame(positions[1][:5], None, 1.0, 1))
        bad = positions[1].copy()
        bad[2, 0] = np.nan
        with pytest.raises(ValueError, match="not finite"):  # xdrfile would silently write -2147483.6 nm
            writer.write(make_frame(bad, None, 1.0, 1))
        writer.write(make_frame(positions[2], None, 2.0, 2))
    read = read_trajectory(path)
    np.testing.assert_array_equal(read.steps, [0, 2])
    np.testing.assert_allclose(read.positions, positions[[0, 2]], atol=XTC_ANGSTROM)


def test_periodic_writer_needs_a_cell(tmp_path):
    with pytest.raises(ValueError, match="cell is None"), TrajectoryWriter(tmp_path / "a.dcd", ["Cu"], True) as w:
        w.write(make_frame(np.zeros((1, 3)), None, 0.0, 0))
    assert dir_listing(tmp_path) == []


@pytest.mark.parametrize("name", ["run.pdb", "run.h5", "run"])
def test_bad_suffix(tmp_path, name):
    with pytest.raises(ValueError) as info:
        TrajectoryWriter(tmp_path / name, ["Cu"], False)
    message = str(info.value)
    assert ("'.pdb'" in message) if name == "run.pdb" else True
    assert ("no suffix" in message) if name == "run" else True
    for suffix in SUPPORTED_SUFFIXES:
        assert suffix in message
    assert dir_listing(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------
# energy log


def energies_frame(step, time_fs, potential, kinetic, temperature):
    return make_frame(np.zeros((1, 3)), None, time_fs, step, potential_energy=potential, kinetic_energy=kinetic,
                 temperature_k=temperature)  # fmt: skip


def test_energy_log_round_trip(tmp_path):
    rng = np.random.default_rng(9)
    path = tmp_path / "energy.csv"
    steps = np.arange(0, 50, 10)
    times_fs = steps * 0.5 + rng.uniform(0, 1e-3, len(steps))
    potential = rng.normal(-350.0, 1.0, len(steps))
    kinetic = rng.uniform(0.5, 2.0, len(steps))
    temperature = rng.uniform(250.0, 350.0, len(steps))
    with EnergyLog(path) as log:
        for row in zip(steps, times_fs, potential, kinetic, temperature):
            log.write(energies_frame(*row))
        assert not path.exists()
    assert path.read_text().splitlines()[0] == "step,time_ps,potential_ev,kinetic_ev,total_ev,temperature_k"
    columns = read_energy_log(path)
    assert tuple(columns) == ENERGY_LOG_COLUMNS
    assert columns["step"].dtype == np.int64
    np.testing.assert_array_equal(columns["step"], steps)
    np.testing.assert_array_equal(columns["time_ps"], times_fs * 0.001)
    np.testing.assert_array_equal(columns["potential_ev"], potential)  # shortest exact repr: no rounding
    np.testing.assert_array_equal(columns["kinetic_ev"], kinetic)
    np.testing.assert_array_equal(columns["total_ev"], potential + kinetic)
    np.testing.assert_array_equal(columns["temperature_k"], temperature)
    assert dir_listing(tmp_path) == ["energy.csv"]


def test_energy_log_needs_the_energies(tmp_path):
    path = tmp_path / "energy.csv"
    no_kinetic = make_frame(np.zeros((1, 3)), None, 1.5, 3, potential_energy=-1.0)
    with (
        pytest.raises(ValueError, match="needs the frame's kinetic_energy, temperature_k; step 3"),
        EnergyLog(path) as log,
    ):
        log.write(no_kinetic)
    assert dir_listing(tmp_path) == []


def test_energy_log_failure_keeps_the_previous_log(tmp_path):
    path = tmp_path / "energy.csv"
    with EnergyLog(path) as log:
        log.write(energies_frame(0, 0.0, -1.0, 0.5, 300.0))
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="blew up"), EnergyLog(path) as log:
        log.write(energies_frame(0, 0.0, -2.0, 0.5, 300.0))
        raise RuntimeError("blew up")
    assert path.read_bytes() == before
    assert dir_listing(tmp_path) == ["energy.csv"]
    with EnergyLog(tmp_path / "empty.csv"):
        pass
    assert {name: len(values) for name, values in read_energy_log(tmp_path / "empty.csv").items()} == dict.fromkeys(
        ENERGY_LOG_COLUMNS, 0
    )
