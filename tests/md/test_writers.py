"""physml_md.md.writers: trajectory files and energy logs, round trips and atomic writes.

References: the arrays written; ASE's minimum-image distances (get_all_distances(mic=True)) and cell
parameters; mdtraj's own loader (mdtraj.load with the PDB beside the file) and its periodic distances.
"""

import dataclasses
import math

import mdtraj
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.geometry import cell_to_cellpar, get_distances

from physml_md.md.writers import (
    ENERGY_LOG_COLUMNS,
    SUPPORTED_SUFFIXES,
    EnergyLog,
    Frame,
    TrajectoryWriter,
    read_energy_log,
    read_trajectory,
    topology_path,
)

# Tolerances (angstrom), from what each format stores:
# DCD keeps float32 angstrom: a relative 6e-8, below 1e-6 angstrom for these coordinates (< 15 angstrom).
DCD_ANGSTROM = 1e-5
# XTC keeps round(x * 1000 / nm): each coordinate within 0.0005 nm = 0.005 angstrom, and mdtraj gives no
# way to ask for a finer precision; the 1e-5 is float32 rounding on top.
XTC_ANGSTROM = 5e-3 + 1e-5
# A distance moves by at most the norm of the two position errors: 2 * sqrt(3) * per-coordinate error.
XTC_DISTANCE = 2 * math.sqrt(3) * XTC_ANGSTROM
DCD_DISTANCE = 1e-4  # float32 positions and a cell rebuilt from float32 lengths and angles
# extxyz prints per-atom columns (positions, momenta, forces) with 8 decimals; the comment line (cell,
# energy, time) is printed exactly.
EXTXYZ_COLUMN = 5e-9 + 1e-12
MDTRAJ_TOLERANCE = {".dcd": DCD_ANGSTROM, ".xtc": XTC_ANGSTROM}
ASE_SUFFIXES = (".traj", ".extxyz", ".xyz")
N_FRAMES = 3


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def cu_frames(rng, cell_kind="cubic"):
    """32 rattled fcc Cu atoms in N_FRAMES frames; the cell changes a little from frame to frame (as in NPT).

    cell_kind: "cubic" (orthorhombic, diagonal: already in mdtraj's orientation), "triclinic" (sheared and rotated, so
    not lower-triangular) or "left_handed" (the triclinic cell with two vectors swapped).
    """
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    positions, cells = [], []
    for _ in range(N_FRAMES):
        if cell_kind == "cubic":
            strain = np.diag(1.0 + 0.01 * rng.normal(size=3))  # orthorhombic
        else:
            strain = np.eye(3) + 0.12 * rng.normal(size=(3, 3))
        cell = atoms.cell.array @ strain
        if cell_kind != "cubic":
            cell = cell @ random_rotation(rng).T
        if cell_kind == "left_handed":
            cell = cell[[1, 0, 2]]
        fractional = atoms.get_scaled_positions() + rng.normal(scale=0.01, size=(len(atoms), 3))
        positions.append(fractional @ cell)
        cells.append(cell)
    if cell_kind != "cubic":
        assert not np.allclose(cells[0], np.tril(cells[0]))
    return atoms.get_chemical_symbols(), np.array(positions), np.array(cells)


def ethanol_frames(rng):
    atoms = molecule("CH3CH2OH")
    positions = atoms.positions + rng.normal(scale=0.05, size=(N_FRAMES, len(atoms), 3))
    return atoms.get_chemical_symbols(), positions, None


def labels(rng, n_atoms):
    """Per-frame times (fs), steps, energies (eV), forces (eV/A) and velocities (A/fs), awkward decimals."""
    return {
        "times": 0.5 * np.arange(N_FRAMES) * 10 + rng.uniform(0, 0.1, N_FRAMES),
        "steps": 10 * np.arange(N_FRAMES) + 3,
        "energies": rng.normal(-100.0, 1.0, N_FRAMES),
        "forces": rng.normal(size=(N_FRAMES, n_atoms, 3)),
        "velocities": rng.normal(scale=0.01, size=(N_FRAMES, n_atoms, 3)),
    }


def make_frame(positions, cell, time_fs, step, **quantities):
    return Frame(step=step, time_fs=time_fs, positions=positions, cell=cell, **quantities)


def labelled_frame(positions, cells, data, i):
    return make_frame(
        positions[i],
        None if cells is None else cells[i],
        data["times"][i],
        int(data["steps"][i]),
        potential_energy=data["energies"][i],
        forces=data["forces"][i],
        velocities=data["velocities"][i],
    )


def write_frames(path, symbols, positions, cells, pbc, data):
    with TrajectoryWriter(path, symbols, pbc) as writer:
        for i in range(len(positions)):
            writer.write(labelled_frame(positions, cells, data, i))
    return writer


def mic_distances(positions, cell):
    return Atoms(positions=positions, cell=cell, pbc=True).get_all_distances(mic=True)


def triple_product(positions, cell):
    """Signed volume of the minimum-image vectors from atom 0 to atoms 1, 2, 3 (nearest neighbours in fcc)."""
    vectors, _ = get_distances(positions[0], positions[1:4], cell=cell, pbc=True)
    return float(np.linalg.det(vectors[0]))


def dir_listing(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("suffix", ASE_SUFFIXES)
@pytest.mark.parametrize("system", ["cu", "ethanol"])
def test_ase_formats_round_trip(tmp_path, suffix, system):
    rng = np.random.default_rng(1)
    symbols, positions, cells = cu_frames(rng, "triclinic") if system == "cu" else ethanol_frames(rng)
    pbc = cells is not None
    data = labels(rng, len(symbols))
    path = tmp_path / f"run{suffix}"
    write_frames(path, symbols, positions, cells, pbc, data)

    read = read_trajectory(path)
    assert read.symbols == symbols
    assert read.pbc.tolist() == [pbc] * 3
    assert read.n_frames == N_FRAMES and read.n_atoms == len(symbols)
    # the ASE formats keep the cell as given (no rotation), the energy, time and step exactly
    if cells is None:
        assert read.cells is None
    else:
        np.testing.assert_array_equal(read.cells, cells)
    np.testing.assert_array_equal(read.times_fs, data["times"])
    np.testing.assert_array_equal(read.steps, data["steps"])
    np.testing.assert_array_equal(read.potential_energies, data["energies"])
    if suffix == ".traj":  # float64 throughout
        np.testing.assert_array_equal(read.positions, positions)
        np.testing.assert_array_equal(read.forces, data["forces"])
        # stored as momenta m v: back to v within rounding
        np.testing.assert_allclose(read.velocities, data["velocities"], rtol=1e-12, atol=0)
    else:
        np.testing.assert_allclose(read.positions, positions, rtol=0, atol=EXTXYZ_COLUMN)
        np.testing.assert_allclose(read.forces, data["forces"], rtol=0, atol=EXTXYZ_COLUMN)
        # momenta (amu A / ASE time) printed with 8 decimals, divided by masses >= 1 amu, times 0.098 fs
        np.testing.assert_allclose(read.velocities, data["velocities"], rtol=0, atol=1e-9)
        assert np.abs(read.positions - positions).max() > 0  # the tolerance is needed: 8 decimals
    assert read.positions.dtype == np.float64


@pytest.mark.parametrize("suffix", [".dcd", ".xtc"])
@pytest.mark.parametrize("system", ["cu", "ethanol"])
def test_mdtraj_formats_round_trip(tmp_path, suffix, system):
    rng = np.random.default_rng(2)
    symbols, positions, cells = cu_frames(rng, "cubic") if system == "cu" else ethanol_frames(rng)
    pbc = cells is not None
    data = labels(rng, len(symbols))
    path = tmp_path / f"run{suffix}"
    writer = write_frames(path, symbols, positions, cells, pbc, data)
    pdb = tmp_path / "run.pdb"
    assert writer.topology_path == pdb == topology_path(path)
    assert dir_listing(tmp_path) == sorted([path.name, pdb.name])
    tolerance = MDTRAJ_TOLERANCE[suffix]

    read = read_trajectory(path)
    assert read.symbols == symbols
    # an orthorhombic cell is already in mdtraj's orientation: positions are not rotated
    np.testing.assert_allclose(read.positions, positions, rtol=0, atol=tolerance)
    if pbc:
        assert read.pbc.all()
        np.testing.assert_allclose(read.cells, cells, rtol=0, atol=1e-5)
    else:
        assert read.cells is None and not read.pbc.any()
        assert "CRYST1" not in pdb.read_text()
    assert read.potential_energies is None and read.forces is None and read.velocities is None
    if suffix == ".xtc":  # time in float32 ps
        np.testing.assert_allclose(read.times_fs, data["times"], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(read.steps, data["steps"])
    else:
        assert read.times_fs is None and read.steps is None

    # plain mdtraj reads the pair: elements from the PDB, coordinates (nm) and cell from the trajectory
    traj = mdtraj.load(str(path), top=str(pdb))
    assert traj.n_frames == N_FRAMES
    assert [atom.element.symbol for atom in traj.topology.atoms] == symbols
    np.testing.assert_allclose(traj.xyz * 10.0, positions, rtol=0, atol=tolerance)
    if pbc:
        np.testing.assert_allclose(traj.unitcell_vectors * 10.0, cells, rtol=0, atol=1e-5)
    else:
        assert traj.unitcell_vectors is None


@pytest.mark.parametrize("suffix", [".dcd", ".xtc"])
@pytest.mark.parametrize("cell_kind", ["triclinic", "left_handed"])
def test_triclinic_cells_keep_interatomic_distances(tmp_path, suffix, cell_kind):
    rng = np.random.default_rng(3)
    symbols, positions, cells = cu_frames(rng, cell_kind)
    path = tmp_path / f"run{suffix}"
    write_frames(path, symbols, positions, cells, True, labels(rng, len(symbols)))
    read = read_trajectory(path)
    traj = mdtraj.load(str(path), top=str(topology_path(path)))
    pairs = np.array([(i, j) for i in range(len(symbols)) for j in range(i + 1, len(symbols))])
    limit = XTC_DISTANCE if suffix == ".xtc" else DCD_DISTANCE
    for frame in range(N_FRAMES):
        expected = mic_distances(positions[frame], cells[frame])
        # the cell read back is lower-triangular (mdtraj's orientation) and describes the same lattice
        assert np.allclose(np.triu(read.cells[frame], 1), 0.0, atol=1e-6)
        np.testing.assert_allclose(cell_to_cellpar(read.cells[frame])[:3], cell_to_cellpar(cells[frame])[:3], atol=1e-5)
        assert abs(np.linalg.det(read.cells[frame])) == pytest.approx(abs(np.linalg.det(cells[frame])), rel=1e-5)
        got = mic_distances(read.positions[frame], read.cells[frame])
        np.testing.assert_allclose(got, expected, rtol=0, atol=limit)
        # mdtraj's own periodic distances on the file agree with ASE's on the structure written
        md_distances = mdtraj.compute_distances(traj[frame], pairs, periodic=True)[0] * 10.0
        np.testing.assert_allclose(md_distances, expected[pairs[:, 0], pairs[:, 1]], rtol=0, atol=limit + 1e-4)
        # a rotation, not a reflection (which would keep distances too): handedness, so dihedral signs, kept
        assert triple_product(read.positions[frame], read.cells[frame]) == pytest.approx(
            triple_product(positions[frame], cells[frame]), rel=0.05
        )
    # the positions really were rotated (they are not the ones written): the distances test is not trivial
    assert np.abs(read.positions - positions).max() > 0.1


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


@pytest.mark.parametrize(
    "change, message",
    [
        ({"step": 1.5}, "step must be an integer, got 1.5"),
        ({"time_fs": float("nan")}, "time_fs must be finite"),
        ({"cell": np.eye(2)}, r"cell must be a finite \[3, 3\] matrix"),
        ({"forces": np.zeros((2, 3))}, r"forces must have shape \[9, 3\]"),
        ({"positions": None}, r"a frame needs positions"),
    ],
)
def test_a_bad_frame_is_named_and_rejected(tmp_path, change, message):
    rng = np.random.default_rng(12)
    symbols, positions, _ = ethanol_frames(rng)
    path = tmp_path / "run.extxyz"
    with TrajectoryWriter(path, symbols, pbc=False) as writer:
        good = make_frame(positions[0], None, 0.0, 0)
        with pytest.raises(ValueError, match=message):
            writer.write(dataclasses.replace(good, **change))
        writer.write(good)
    assert read_trajectory(path).n_frames == 1


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
