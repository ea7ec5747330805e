"""physml_md.validation.structure: g(r), bond and dihedral distributions, topology from geometry, and their comparison,
against independent references.

References: ase.geometry.get_distances (minimum image), ASE's neighbour list and Atoms.get_distance / get_dihedral,
histograms written here, and MD runs with ASE's EMT calculator.
"""

import itertools
import math

import numpy as np
import pytest
from ase import units
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.geometry import get_distances
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta
from ase.neighborlist import NeighborList, natural_cutoffs

from physml_md.validation import structure
from physml_md.validation.structure import (
    DEFAULT_THRESHOLDS,
    RDF,
    bond_length_distribution,
    bonds_from_positions,
    compare_distributions,
    dihedral_distribution,
    dihedrals_from_bonds,
    histogram_overlap,
    jensen_shannon,
    radial_distribution,
)
from tests.helpers import random_rotation
from tests.md.helpers import A_CU, json_round_trip

FLOAT32_ANGSTROM = 2e-5  # mdtraj computes in float32 nm


# ---- radial distribution


def numpy_rdf(frames, cells, r_max, n_bins):
    """g(r) of all pairs by a direct histogram of ASE minimum-image distances (mdtraj's normalisation)."""
    edges = np.linspace(0.0, r_max, n_bins + 1)
    counts = np.zeros(n_bins)
    n_atoms = frames.shape[1]
    upper = np.triu_indices(n_atoms, 1)
    for positions, cell in zip(frames, cells):
        _, lengths = get_distances(positions, cell=cell, pbc=True)
        counts += np.histogram(lengths[upper], bins=edges)[0]
    shells = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    inverse_volume = sum(1.0 / abs(np.linalg.det(c)) for c in cells)
    return counts, counts / (len(upper[0]) * inverse_volume * shells)


def test_rdf_matches_direct_histogram_in_rotated_triclinic_npt_cells(monkeypatch):
    rng = np.random.default_rng(8)
    base = np.array([[11.0, 0.0, 0.0], [2.5, 10.0, 0.0], [-1.5, 2.0, 10.5]])
    rotation = random_rotation(rng)  # not mdtraj's orientation (a along x, b in the xy plane)
    cells = np.array([base * s for s in (1.0, 1.02, 0.98)]) @ rotation
    frames = np.array([rng.uniform(0.0, 1.0, (120, 3)) @ c for c in cells])
    rdf = radial_distribution(frames, cells, ["Ar"] * 120, r_range=(0.0, 4.5), n_bins=45)
    counts, expected = numpy_rdf(frames, cells, 4.5, 45)
    np.testing.assert_allclose(rdf.r, np.arange(45) * 0.1 + 0.05, atol=1e-12)
    # mdtraj bins float32 distances: at most a pair or two may land in the neighbouring bin
    shells = 4.0 / 3.0 * np.pi * np.diff(np.linspace(0, 4.5, 46) ** 3)
    scale = rdf.n_pairs * sum(1.0 / abs(np.linalg.det(c)) for c in cells) * shells
    assert np.abs(np.rint(rdf.g * scale) - counts).sum() <= 2
    np.testing.assert_allclose(rdf.g, expected, rtol=0.1)
    # computing the frames in chunks (for memory) weights them as one pass would
    monkeypatch.setattr(structure, "_RDF_CHUNK", rdf.n_pairs)  # one frame per chunk
    np.testing.assert_allclose(
        radial_distribution(frames, cells, ["Ar"] * 120, r_range=(0.0, 4.5), n_bins=45).g, rdf.g, rtol=1e-6
    )


def test_ideal_gas_rdf_is_one():
    rng = np.random.default_rng(9)
    cell = np.array([[14.0, 0.0, 0.0], [3.0, 13.0, 0.0], [2.0, -2.0, 14.0]])
    frames = rng.uniform(0.0, 1.0, (12, 400, 3)) @ cell
    rdf = radial_distribution(frames, cell, ["Ne"] * 400, n_bins=60)
    plane_distances = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
    assert rdf.r_range[1] == pytest.approx(0.5 * plane_distances.min())
    expected_counts = rdf.n_pairs * rdf.n_frames * 4 / 3 * np.pi * np.diff(np.linspace(*rdf.r_range, 61) ** 3)
    expected_counts /= abs(np.linalg.det(cell))
    use = rdf.r > 1.5
    sigma = 1.0 / np.sqrt(expected_counts[use])  # Poisson, per bin
    assert np.all(np.abs(rdf.g[use] - 1.0) < 5 * sigma)
    assert abs(np.mean(rdf.g[use]) - 1.0) < 0.01


@pytest.mark.parametrize("cubic", [True, False], ids=["cubic", "primitive-triclinic"])
def test_fcc_copper_first_peak_and_coordination(cubic):
    atoms = bulk("Cu", "fcc", a=A_CU, cubic=cubic).repeat(3 if cubic else 4)
    if not cubic:
        atoms.set_cell(atoms.cell[[1, 0, 2]])  # a left-handed cell: the same lattice
        assert np.linalg.det(atoms.cell[:]) < 0
    rng = np.random.default_rng(10)
    frames = atoms.positions + rng.normal(scale=0.03, size=(4, len(atoms), 3))
    rdf = radial_distribution(frames, atoms.cell[:], atoms.get_chemical_symbols(), pairs=("Cu", "Cu"), n_bins=150)
    assert rdf.label == "Cu-Cu" and rdf.n_pairs == len(atoms) * (len(atoms) - 1) // 2
    width = rdf.r[1] - rdf.r[0]
    assert abs(rdf.r[np.argmax(rdf.g)] - A_CU / math.sqrt(2)) <= width
    # neighbours per atom up to 3.0 angstrom (between the 1st and 2nd shells): 12
    edges = np.linspace(*rdf.r_range, 151)
    shells = 4 / 3 * np.pi * np.diff(edges**3)
    inside = edges[1:] <= 3.0
    coordination = (len(atoms) - 1) / abs(atoms.get_volume()) * np.sum(rdf.g[inside] * shells[inside])
    assert coordination == pytest.approx(12.0, abs=1e-3)
    assert json_round_trip(rdf)["r_range"] == list(rdf.r_range)


def test_partial_rdf_pairs():
    rng = np.random.default_rng(11)
    cell = np.eye(3) * 10.0
    symbols = ["O", "H", "H"] * 20
    frames = rng.uniform(0, 10.0, (2, 60, 3))
    oh = radial_distribution(frames, cell, symbols, pairs=("O", "H"), n_bins=20)
    assert oh.n_pairs == 20 * 40 and oh.label == "O-H"
    explicit = np.array([(i, j) for i in range(0, 60, 3) for j in range(60) if j % 3])
    same = radial_distribution(frames, cell, symbols, pairs=explicit, n_bins=20)
    np.testing.assert_allclose(same.g, oh.g, rtol=1e-12)
    assert same.label == "custom"


# ---- bonds and dihedrals


def ethanol():
    return molecule("CH3CH2OH")


def ase_bonds(atoms, mult=1.2):
    nl = NeighborList(natural_cutoffs(atoms, mult=mult), self_interaction=False, bothways=False, skin=0.0)
    nl.update(atoms)
    return {tuple(sorted((i, int(j)))) for i in range(len(atoms)) for j in nl.get_neighbors(i)[0]}


def test_bonds_of_ethanol_against_ase_neighbour_list():
    atoms = ethanol()
    bonds = bonds_from_positions(atoms.get_chemical_symbols(), atoms.positions)
    assert {tuple(b) for b in bonds.tolist()} == ase_bonds(atoms)
    assert len(bonds) == 8  # C-C, C-O, O-H and five C-H
    assert np.all(bonds[:, 0] < bonds[:, 1]) and bonds.tolist() == sorted(bonds.tolist())
    kinds = sorted("".join(sorted(atoms.symbols[i] + atoms.symbols[j])) for i, j in bonds)
    assert kinds == sorted(["CC", "CO", "HO"] + ["CH"] * 5)


def test_bonds_across_periodic_boundary():
    atoms = ethanol()
    cell = np.array([[7.0, 0.0, 0.0], [1.0, 7.0, 0.0], [0.5, 0.5, 7.0]])
    wrapped = atoms.positions - atoms.positions[1] + 0.1  # atom 1 near the corner, others across the boundary
    wrapped = wrapped - np.floor(wrapped @ np.linalg.inv(cell)) @ cell
    symbols = atoms.get_chemical_symbols()
    expected = bonds_from_positions(symbols, atoms.positions)
    np.testing.assert_array_equal(bonds_from_positions(symbols, wrapped, cell=cell), expected)
    assert len(bonds_from_positions(symbols, wrapped)) < len(expected)  # without the cell bonds are lost


def brute_force_dihedrals(n_atoms, bonds):
    bonded = {frozenset(b) for b in bonds}
    found = set()
    for quad in itertools.permutations(range(n_atoms), 4):
        if all(frozenset(quad[k : k + 2]) in bonded for k in range(3)):
            found.add(min(quad, quad[::-1]))
    return found


@pytest.mark.parametrize(
    "n_atoms, bonds",
    [
        (9, None),  # ethanol
        (3, [(0, 1), (1, 2), (0, 2)]),  # three-membered ring: no dihedral
        (5, [(0, 1), (1, 2), (2, 3), (3, 0), (3, 4)]),  # four-membered ring with a branch
    ],
)
def test_dihedrals_from_bonds_against_brute_force(n_atoms, bonds):
    if bonds is None:
        atoms = ethanol()
        bonds = bonds_from_positions(atoms.get_chemical_symbols(), atoms.positions).tolist()
    quadruples = dihedrals_from_bonds(n_atoms, bonds)
    found = [min(tuple(q), tuple(q)[::-1]) for q in quadruples.tolist()]
    assert len(found) == len(set(found))  # each once
    assert set(found) == brute_force_dihedrals(n_atoms, bonds)
    if n_atoms == 9:
        assert len(found) == 12  # 3 x 3 around C-C, 3 x 1 around C-O


def numpy_dihedral(p0, p1, p2, p3):
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1, axis=-1, keepdims=True) * b1
    w = b2 - np.sum(b2 * b1, axis=-1, keepdims=True) * b1
    x = np.sum(v * w, axis=-1)
    y = np.sum(np.cross(b1, v) * w, axis=-1)
    return np.degrees(np.arctan2(y, x))


def angle_difference(a, b):
    return (np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0


@pytest.fixture(scope="module")
def ethanol_frames():
    atoms = ethanol()
    rng = np.random.default_rng(12)
    frames = atoms.positions + rng.normal(scale=0.08, size=(6, len(atoms), 3))
    bonds = bonds_from_positions(atoms.get_chemical_symbols(), atoms.positions)
    return atoms, frames, bonds, dihedrals_from_bonds(len(atoms), bonds)


def test_bond_length_distribution_against_numpy_and_ase(ethanol_frames):
    atoms, frames, bonds, _ = ethanol_frames
    edges = np.linspace(0.6, 2.0, 41)
    result = bond_length_distribution(frames, bonds, edges)
    expected = np.linalg.norm(frames[:, bonds[:, 1]] - frames[:, bonds[:, 0]], axis=-1)
    np.testing.assert_allclose(result.values, expected, rtol=0, atol=FLOAT32_ANGSTROM)
    copy = atoms.copy()
    copy.positions = frames[2]
    np.testing.assert_allclose(result.values[2], [copy.get_distance(i, j) for i, j in bonds], atol=FLOAT32_ANGSTROM)
    np.testing.assert_array_equal(result.counts, np.histogram(expected, bins=edges)[0])
    assert result.n_outside == 0 and result.probabilities.sum() == pytest.approx(1.0)
    assert json_round_trip(result)["n_terms"] == 8
    spanning = bond_length_distribution(frames, bonds, bins=10)  # a count spans the values found
    assert spanning.edges[0] == pytest.approx(expected.min(), abs=FLOAT32_ANGSTROM) and spanning.counts.sum() == 48


def test_dihedral_distribution_against_numpy_and_ase(ethanol_frames):
    atoms, frames, _, quadruples = ethanol_frames
    result = dihedral_distribution(frames, quadruples)
    q = quadruples.T
    expected = numpy_dihedral(frames[:, q[0]], frames[:, q[1]], frames[:, q[2]], frames[:, q[3]])
    assert np.abs(angle_difference(result.values, expected)).max() < 1e-3
    copy = atoms.copy()
    copy.positions = frames[4]
    from_ase = [copy.get_dihedral(*quad) for quad in quadruples.tolist()]  # degrees in [0, 360)
    assert np.abs(angle_difference(result.values[4], from_ase)).max() < 1e-3
    assert result.values.min() >= -180.0 and result.values.max() <= 180.0
    np.testing.assert_allclose(result.edges, np.linspace(-180.0, 180.0, 73))
    assert result.counts.sum() == expected.size and result.unit == "degree"


def test_bonds_and_dihedrals_in_a_left_handed_cell_across_the_boundary(ethanol_frames):
    _, frames, bonds, quadruples = ethanol_frames
    cell = np.array([[0.0, 7.5, 0.0], [7.0, 0.0, 0.0], [0.5, 1.0, 7.2]])  # det < 0
    assert np.linalg.det(cell) < 0
    shifted = frames - frames[:, :1] + 0.2  # atom 0 near the origin: the molecule crosses the faces
    wrapped = shifted - np.floor(shifted @ np.linalg.inv(cell)) @ cell
    free = bond_length_distribution(frames, bonds, np.linspace(0.6, 2.0, 41))
    periodic = bond_length_distribution(wrapped, bonds, np.linspace(0.6, 2.0, 41), cell=cell)
    np.testing.assert_allclose(periodic.values, free.values, atol=FLOAT32_ANGSTROM)
    free_dihedrals = dihedral_distribution(frames, quadruples).values
    periodic_dihedrals = dihedral_distribution(wrapped, quadruples, cell=cell).values
    assert np.abs(angle_difference(periodic_dihedrals, free_dihedrals)).max() < 1e-2  # same sign: no mirror image


# ---- comparing distributions computed here (the distances themselves: tests/validation/test_distributions.py)


def test_compare_distributions_helper(ethanol_frames):
    _, frames, bonds, quadruples = ethanol_frames
    edges = np.linspace(0.8, 1.8, 21)
    reference = bond_length_distribution(frames[:3], bonds, edges)
    identical = compare_distributions(reference, reference)
    assert (identical.metric, identical.value, identical.threshold, identical.passed) == (
        "jensen_shannon",
        0.0,
        DEFAULT_THRESHOLDS["jensen_shannon"],
        True,
    )
    stretched = compare_distributions(reference, reference.values * 1.3, metric="overlap")
    wide = np.concatenate([[-1e9], edges, [1e9]])  # values outside the edges count in an extra bin each side
    expected = histogram_overlap(np.histogram(reference.values, wide)[0], np.histogram(reference.values * 1.3, wide)[0])
    assert stretched.value == pytest.approx(expected, rel=1e-12)
    assert np.sum(reference.values * 1.3 > edges[-1]) > 0  # the extra bin matters here
    outside = compare_distributions(reference, reference.values + 10.0)  # entirely beyond the reference's range
    assert outside.value == pytest.approx(1.0) and not outside.passed
    assert not stretched.passed and stretched.name == "bond length"
    assert "FAILED" in stretched.message and ">= 0.9" in stretched.message
    loose = compare_distributions(reference, reference.values * 1.3, threshold=1.0)
    assert loose.passed and loose.threshold == 1.0
    dihedrals = dihedral_distribution(frames, quadruples)
    assert np.any(dihedrals.values + 1.0 > 180.0)  # some shifted angles wrap around to -179
    by_count = compare_distributions(dihedrals, dihedrals.values + 1.0, bins=36)
    assert by_count.value == pytest.approx(
        jensen_shannon(
            np.histogram(dihedrals.values, np.linspace(-180, 180, 37))[0],
            np.histogram((dihedrals.values + 181.0) % 360.0 - 180.0, np.linspace(-180, 180, 37))[0],
        )
    )
    assert json_round_trip(by_count) == by_count.to_dict()


# ---- two MD runs of the same potential, and one at another temperature (the default thresholds)


def langevin_frames(temperature, seed):
    atoms = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(3)
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=2 * temperature, rng=rng)
    dynamics = Langevin(atoms, 5 * units.fs, temperature_K=temperature, friction=0.02 / units.fs, fixcm=False, rng=rng)
    dynamics.run(40)
    frames = []
    for _ in range(15):
        dynamics.run(8)
        frames.append(atoms.get_positions())
    return np.array(frames), atoms.cell[:], atoms.get_chemical_symbols()


@pytest.fixture(scope="module")
def emt_runs():
    return {"a": langevin_frames(300.0, 0), "b": langevin_frames(300.0, 1), "hot": langevin_frames(600.0, 2)}


def test_two_runs_rdf(emt_runs):
    rdfs = {key: radial_distribution(*run) for key, run in emt_runs.items()}
    assert rdfs["a"].r_range[1] == pytest.approx(1.5 * A_CU)
    same = compare_distributions(rdfs["a"], rdfs["b"])
    different = compare_distributions(rdfs["a"], rdfs["hot"])
    assert same.metric == "rdf_difference" and same.passed, same.message
    assert not different.passed, different.message
    assert different.value > 3 * same.value


def test_two_runs_bond_lengths(emt_runs):
    lattice = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(3)
    neighbours = bonds_from_positions(["Cu"] * 108, lattice.positions, scale=1.0, radii={"Cu": 1.5}, cell=lattice.cell)
    assert len(neighbours) == 108 * 12 // 2
    edges = np.linspace(2.0, 3.4, 51)
    lengths = {
        k: bond_length_distribution(frames, neighbours, edges, cell=cell) for k, (frames, cell, _) in emt_runs.items()
    }
    assert all(d.n_outside == 0 for d in lengths.values())
    for metric in ("jensen_shannon", "overlap"):
        same = compare_distributions(lengths["a"], lengths["b"], metric=metric)
        different = compare_distributions(lengths["a"], lengths["hot"], metric=metric)
        assert same.passed, same.message
        assert not different.passed, different.message


# ---- bad inputs: one clear error each


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: bonds_from_positions(["C", "Og"], np.eye(3)[:2]), r"no covalent radius for \['Og'\] .*; pass radii="),
        (lambda: bonds_from_positions(["C"], np.eye(3)[:2]), "symbols has 1 entries but positions has 2"),
        (lambda: dihedrals_from_bonds(3, [(0, 3)]), r"bonds\[0\] = \[0, 3\] refers to atoms outside 0..2"),
        (lambda: dihedrals_from_bonds(3, [(1, 1)]), "repeats an atom"),
        (lambda: radial_distribution(np.zeros((1, 2, 3)), None, ["Cu", "Cu"]), "needs the periodic cell"),
        (lambda: radial_distribution(np.eye(3)[None], np.eye(3) * 4, ["Cu"] * 3, r_range=(0, 3)), "up to 2 Å"),
        (lambda: radial_distribution(np.eye(3)[None], np.eye(3) * 4, ["Cu"] * 3, pairs=("Cu", "O")), "no atom is 'O'"),
        (lambda: radial_distribution(np.eye(3)[None], np.eye(3) * 4, ["Cu"] * 2), "symbols has 2 entries"),
        (lambda: radial_distribution(np.eye(3)[None], np.eye(3) * 4, ["Qq"] * 3), "does not know the element"),
        (lambda: bond_length_distribution(np.full((2, 3, 3), np.nan), [(0, 1)]), r"not finite .* frames \[0, 1\]"),
        (lambda: bond_length_distribution(np.eye(3)[None], [(0, 1)], bins=[1.0, 0.5]), "strictly increasing"),
        (lambda: dihedral_distribution(np.eye(3)[None], np.zeros((0, 4), int)), "quadruples is empty"),
        (lambda: compare_distributions(RDF(np.ones(2), np.ones(2), "all", 1, 1, (0, 1)), [1.0]), "RDF can only"),
    ],
)
def test_bad_inputs_raise_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
