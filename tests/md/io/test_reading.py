"""physml_md.md.io.reading: trajectories read back with an explicit topology and masked labels; the energy log."""

import mdtraj
import numpy as np
import pytest

from physml_md.md.frame import Frame
from physml_md.md.io.formats import topology_path
from physml_md.md.io.reading import ENERGY_LOG_COLUMNS, read_energy_log, read_trajectory
from physml_md.md.io.writing import TrajectoryWriter
from tests.md.helpers import (
    DCD_ANGSTROM,
    N_FRAMES,
    cu_frames,
    ethanol_frames,
    labelled_frame,
    labels,
    make_frame,
    write_frames,
)


def test_read_with_explicit_topology(tmp_path):
    rng = np.random.default_rng(4)
    symbols, positions, cells = ethanol_frames(rng)
    path = tmp_path / "run.dcd"
    write_frames(path, symbols, positions, cells, False, labels(rng, len(symbols)))
    moved = tmp_path / "ethanol_topology.pdb"
    topology_path(path).rename(moved)
    with pytest.raises(FileNotFoundError, match=r"run\.pdb.*top="):
        read_trajectory(path)
    assert read_trajectory(path, top=moved).symbols == symbols
    topology = mdtraj.load_topology(str(moved))
    np.testing.assert_allclose(read_trajectory(path, top=topology).positions, positions, atol=DCD_ANGSTROM)


def test_missing_labels_are_masked(tmp_path):
    rng = np.random.default_rng(5)
    symbols, positions, cells = cu_frames(rng)
    path = tmp_path / "run.extxyz"
    with TrajectoryWriter(path, symbols, pbc=True) as writer:
        writer.write(make_frame(positions[0], cells[0], 0.0, 0, potential_energy=-3.0))
        writer.write(make_frame(positions[1], cells[1], 1.0, 1))
    read = read_trajectory(path)
    assert read.potential_energies[0] == -3.0 and np.isnan(read.potential_energies[1])
    assert read.forces is None and read.velocities is None


def test_a_frame_read_back_is_the_frame_written(tmp_path):
    """The one per-step record goes in and comes out: TrajectoryData.frame(i) is the Frame written (.traj)."""
    rng = np.random.default_rng(11)
    symbols, positions, cells = cu_frames(rng, "triclinic")
    data = labels(rng, len(symbols))
    path = tmp_path / "run.traj"
    write_frames(path, symbols, positions, cells, True, data)
    read = read_trajectory(path)
    for i in range(N_FRAMES):
        written, got = labelled_frame(positions, cells, data, i), read.frame(i)
        assert isinstance(got, Frame)
        assert (got.step, got.time_fs, got.potential_energy) == (
            written.step,
            written.time_fs,
            written.potential_energy,
        )
        for name in ("positions", "cell", "forces"):
            np.testing.assert_array_equal(getattr(got, name), getattr(written, name))
        np.testing.assert_allclose(got.velocities, written.velocities, rtol=1e-12, atol=0)  # stored as momenta
        assert got.kinetic_energy is None and got.temperature_k is None  # a trajectory file keeps neither


def test_read_energy_log_rejects_other_csv(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("step,time_fs,energy\n0,0.0,1.0\n")
    with pytest.raises(ValueError, match="expected the header step,time_ps,potential_ev"):
        read_energy_log(path)


def test_read_energy_log_names_a_short_line(tmp_path):
    path = tmp_path / "cut.csv"
    path.write_text(",".join(ENERGY_LOG_COLUMNS) + "\n0,0.0,-1.0,0.5,-0.5,300.0\n10,0.005\n")
    with pytest.raises(ValueError, match="line 3 of .* has 2 fields, expected 6"):
        read_energy_log(path)
