"""physml_md.md.io.formats: each trajectory format written and read back, cells and distances kept.

References: the arrays written; ASE's minimum-image distances (get_all_distances(mic=True)) and cell
parameters; mdtraj's own loader (mdtraj.load with the PDB beside the file) and its periodic distances.
"""

import mdtraj
import numpy as np
import pytest
from ase.geometry import cell_to_cellpar

from physml_md.md.io.formats import topology_path
from physml_md.md.io.reading import read_trajectory
from tests.md.helpers import (
    ASE_SUFFIXES,
    DCD_DISTANCE,
    EXTXYZ_COLUMN,
    MDTRAJ_TOLERANCE,
    N_FRAMES,
    XTC_DISTANCE,
    cu_frames,
    dir_listing,
    ethanol_frames,
    labels,
    mic_distances,
    triple_product,
    write_frames,
)


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


def test_the_pdb_beside_a_dcd_has_unique_atom_names_that_openmm_reads_without_warnings(tmp_path):
    """OpenMM's PDBFile warned about every duplicate atom name (all carbons were "C"); 230 atoms here: 120 Cu need
    two residues (Cu1 .. Cu99, then Cu1 .. Cu21 and the hydrogens H1 .. H101)."""
    app = pytest.importorskip("openmm.app")
    import warnings

    rng = np.random.default_rng(4)
    ethanol_symbols, ethanol_positions, _ = ethanol_frames(rng)
    symbols = ethanol_symbols + ["Cu"] * 120 + ["H"] * 101
    positions = np.concatenate([ethanol_positions, rng.uniform(10.0, 40.0, (N_FRAMES, 221, 3))], axis=1)
    path = tmp_path / "run.dcd"
    write_frames(path, symbols, positions, None, False, labels(rng, len(symbols)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdb = app.PDBFile(str(topology_path(path)))
    atoms = list(pdb.topology.atoms())
    assert [atom.element.symbol for atom in atoms] == symbols
    names = [(atom.residue.index, atom.name) for atom in atoms]
    assert len(set(names)) == len(symbols) and max(len(name) for _, name in names) <= 4
    assert [name for _, name in names[:9]] == ["C1", "C2", "O1", "H1", "H2", "H3", "H4", "H5", "H6"]
    assert names[9 + 98 : 9 + 100] == [(0, "Cu99"), (1, "Cu1")] and names[-1] == (1, "H101")
    np.testing.assert_allclose(pdb.getPositions(asNumpy=True)._value * 10.0, positions[0], atol=1e-3)
    assert read_trajectory(path).symbols == symbols
