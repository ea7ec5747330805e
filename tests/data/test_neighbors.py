"""physml_md.data.neighbors against ase.neighborlist.neighbor_list, the independent reference.

Every system is compared in float64 after a random rotation (positions and cell) and translation: the same
set of (i, j, shift) triples, and distances |x_j - x_i + S @ cell| equal to ASE's to 1e-10.
"""

import io

import ase
import ase.build
import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list as ase_neighbor_list

from physml_md.data.neighbors import batch_neighbor_list, neighbor_list
from tests.helpers import random_rotation

scripted_neighbor_list = torch.jit.script(neighbor_list)
scripted_batch_neighbor_list = torch.jit.script(batch_neighbor_list)

# A message raised under TorchScript surfaces as torch.jit.Error (not a ValueError subclass).
ERRORS = (ValueError, torch.jit.Error)


# ---------------------------------------------------------------------------------------------- helpers
def sorted_triples(i, j, shifts) -> np.ndarray:
    """[E, 5] int array of (i, j, S) rows in lexicographic order (vesin's order is unspecified)."""
    rows = np.column_stack([np.asarray(i), np.asarray(j), np.asarray(shifts)]).astype(np.int64)
    return rows[np.lexsort(rows.T[::-1])]


def ours(positions, cell, pbc, cutoff, fn=neighbor_list):
    edge_index, cell_shifts = fn(
        torch.as_tensor(positions, dtype=torch.float64),
        torch.as_tensor(cell, dtype=torch.float64),
        torch.as_tensor(pbc, dtype=torch.bool),
        cutoff,
    )
    assert edge_index.dtype == torch.int64 and cell_shifts.dtype == torch.int64
    assert edge_index.shape[0] == 2 and cell_shifts.shape == (edge_index.shape[1], 3)
    return edge_index.numpy(), cell_shifts.numpy()


# ---------------------------------------------------------------------------------------------- systems
# Each builder returns (atoms, our_cell or None). our_cell, when given, replaces atoms.cell for our list
# only: a cell whose NON-periodic vectors are degenerate, which ASE refuses (LinAlgError) but we accept.


def molecule(name):
    return lambda rng: (ase.build.molecule(name), None)


def random_cluster(rng):
    return ase.Atoms("Ar20", positions=rng.uniform(0.0, 7.0, size=(20, 3))), None


def bulk(name, crystal, repeat=(1, 1, 1), **kwargs):
    return lambda rng: (ase.build.bulk(name, crystal, **kwargs).repeat(repeat), None)


def small_cell(n_atoms, tilt):
    """1 or 2 atoms in a cell of about 1.4 angstrom: many periodic images within the cutoff."""

    def build(rng):
        cell = np.diag(rng.uniform(1.2, 1.6, size=3)) + np.triu(rng.uniform(-tilt, tilt, size=(3, 3)), 1)
        return ase.Atoms(f"H{n_atoms}", scaled_positions=rng.uniform(size=(n_atoms, 3)), cell=cell, pbc=True), None

    return build


def triclinic(n_atoms, pbc=(True, True, True)):
    """Random well-conditioned cell with a strong tilt (off-diagonal up to 0.9 of the diagonal)."""

    def build(rng):
        diag = rng.uniform(4.0, 7.0, size=3)
        cell = np.diag(diag)
        for row, col in ((1, 0), (2, 0), (2, 1)):
            cell[row, col] = rng.uniform(-0.9, 0.9) * diag[col]
        assert np.linalg.cond(cell) < 10
        positions = rng.uniform(size=(n_atoms, 3)) @ cell
        return ase.Atoms(f"C{n_atoms}", positions=positions, cell=cell, pbc=pbc), None

    return build


def mirrored(rng):
    """Left-handed cell (negative determinant)."""
    atoms, _ = triclinic(8)(rng)
    atoms.set_cell(atoms.cell.array * np.array([1.0, 1.0, -1.0]), scale_atoms=True)
    return atoms, None


def unwrapped(rng):
    """Positions far outside the cell (shifted by random lattice vectors and more)."""
    atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True)
    jumps = rng.integers(-5, 6, size=(len(atoms), 3)) + rng.uniform(-0.5, 0.5, size=(len(atoms), 3))
    atoms.positions += jumps @ atoms.cell.array
    return atoms, None


def slab(builder, zero_z=False, degenerate_z=False, **kwargs):
    """ASE slab, pbc (T, T, F); optionally our cell's third (non-periodic) vector zero or in-plane."""

    def build(rng):
        atoms = builder("Cu", vacuum=6.0, **kwargs)
        assert tuple(atoms.pbc) == (True, True, False)
        if zero_z:
            atoms.cell[2] = 0.0  # what many ASE users have; ASE itself accepts it
        our_cell = None
        if degenerate_z:
            our_cell = atoms.cell.array.copy()
            our_cell[2] = our_cell[0] + our_cell[1]  # in the periodic plane: ASE refuses such a cell
        return atoms, our_cell

    return build


def wire(axis, zero_others=False):
    """Cu wire periodic along one axis only, vacuum around it."""

    def build(rng):
        repeat = [1, 1, 1]
        repeat[axis] = 3
        atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
        others = tuple(k for k in range(3) if k != axis)
        atoms.center(vacuum=5.0, axis=others)
        atoms.pbc = [k == axis for k in range(3)]
        if zero_others:
            for k in others:
                atoms.cell[k] = 0.0
        return atoms, None

    return build


def molecule_in_singular_cell(rng):
    """pbc all False: the cell is never used, even a singular one (ours only; ASE gets a zero cell)."""
    return ase.build.molecule("CH3CH2OH"), np.array([[3.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


CASES = [
    # molecules: pbc False, zero cell
    pytest.param(molecule("H2O"), 2.0, id="molecule-H2O-rc2"),
    pytest.param(molecule("CH4"), 5.0, id="molecule-CH4-rc5"),
    pytest.param(molecule("CH3CH2OH"), 1.6, id="molecule-ethanol-rc1.6"),
    pytest.param(molecule("CH3CH2OH"), 4.0, id="molecule-ethanol-rc4"),
    pytest.param(molecule("C6H6"), 3.0, id="molecule-benzene-rc3"),
    pytest.param(random_cluster, 3.5, id="cluster-Ar20-rc3.5"),
    pytest.param(molecule_in_singular_cell, 3.0, id="molecule-ethanol-singular-cell"),
    # bulk crystals
    pytest.param(bulk("Cu", "fcc", a=3.61), 5.0, id="bulk-fcc-Cu-primitive-rc5"),
    pytest.param(bulk("Cu", "fcc", (2, 2, 2), a=3.61, cubic=True), 5.0, id="bulk-fcc-Cu-cubic-222-rc5"),
    pytest.param(bulk("Cu", "fcc", (3, 1, 2), a=3.61, orthorhombic=True), 4.0, id="bulk-fcc-Cu-ortho-312-rc4"),
    pytest.param(bulk("Fe", "bcc", a=2.87), 4.5, id="bulk-bcc-Fe-primitive-rc4.5"),
    pytest.param(bulk("Fe", "bcc", (2, 1, 3), a=2.87, cubic=True), 5.0, id="bulk-bcc-Fe-cubic-213-rc5"),
    pytest.param(bulk("Mg", "hcp", a=3.21, c=5.21), 5.0, id="bulk-hcp-Mg-rc5"),
    pytest.param(bulk("Mg", "hcp", (2, 2, 1), a=3.21, c=5.21), 6.0, id="bulk-hcp-Mg-221-rc6"),
    pytest.param(unwrapped, 4.0, id="bulk-fcc-Cu-unwrapped-positions"),
    # cells much smaller than the cutoff
    pytest.param(small_cell(1, 0.0), 5.0, id="small-1atom-orthogonal-rc5"),
    pytest.param(small_cell(1, 0.8), 4.0, id="small-1atom-tilted-rc4"),
    pytest.param(small_cell(2, 0.0), 4.0, id="small-2atoms-orthogonal-rc4"),
    pytest.param(small_cell(2, 0.8), 5.0, id="small-2atoms-tilted-rc5"),
    # skewed triclinic cells
    pytest.param(triclinic(6), 5.0, id="triclinic-6atoms-rc5"),
    pytest.param(triclinic(12), 4.0, id="triclinic-12atoms-rc4"),
    pytest.param(triclinic(20), 6.0, id="triclinic-20atoms-rc6"),
    pytest.param(triclinic(3), 8.0, id="triclinic-3atoms-rc8"),
    pytest.param(mirrored, 5.0, id="triclinic-left-handed-rc5"),
    # slabs, pbc (T, T, F)
    pytest.param(slab(ase.build.fcc111, size=(2, 2, 3)), 5.0, id="slab-fcc111-223-rc5"),
    pytest.param(slab(ase.build.fcc111, size=(1, 1, 4)), 6.0, id="slab-fcc111-114-rc6"),
    pytest.param(slab(ase.build.fcc100, size=(2, 2, 2)), 4.0, id="slab-fcc100-222-rc4"),
    pytest.param(slab(ase.build.fcc111, zero_z=True, size=(2, 2, 3)), 5.0, id="slab-fcc111-zero-z-vector"),
    pytest.param(slab(ase.build.fcc111, degenerate_z=True, size=(2, 2, 2)), 5.0, id="slab-fcc111-in-plane-z"),
    # wires, one periodic direction
    pytest.param(wire(0), 5.0, id="wire-TFF-rc5"),
    pytest.param(wire(0, zero_others=True), 5.0, id="wire-TFF-zero-y-z-vectors"),
    pytest.param(wire(1), 4.0, id="wire-FTF-rc4"),
    pytest.param(wire(2, zero_others=True), 4.0, id="wire-FFT-zero-x-y-vectors"),
    # mixed periodicity in triclinic cells
    pytest.param(triclinic(10, pbc=(True, False, True)), 5.0, id="triclinic-TFT-rc5"),
    pytest.param(triclinic(10, pbc=(False, True, True)), 5.0, id="triclinic-FTT-rc5"),
    pytest.param(triclinic(8, pbc=(False, False, True)), 6.0, id="triclinic-FFT-rc6"),
    pytest.param(triclinic(8, pbc=(False, False, False)), 5.0, id="triclinic-FFF-rc5"),
]


@pytest.mark.parametrize("seed", [0, 1], ids=["seed0", "seed1"])
@pytest.mark.parametrize(("build", "cutoff"), CASES)
def test_against_ase(build, cutoff, seed):
    rng = np.random.default_rng(seed)
    atoms, our_cell = build(rng)
    rotation = random_rotation(rng)
    translation = rng.uniform(-10.0, 10.0, size=3)
    atoms.positions = atoms.positions @ rotation.T + translation
    atoms.cell = atoms.cell.array @ rotation.T
    our_cell = atoms.cell.array if our_cell is None else our_cell @ rotation.T

    i, j, d, shifts = ase_neighbor_list("ijdS", atoms, cutoff, self_interaction=False)
    edge_index, cell_shifts = ours(atoms.positions, our_cell, atoms.pbc, cutoff)

    expected = sorted_triples(i, j, shifts)
    got = sorted_triples(edge_index[0], edge_index[1], cell_shifts)
    assert len(expected) > 0
    np.testing.assert_array_equal(got, expected)

    # distances, matched triple by triple through the same sort
    ase_order = np.lexsort(np.column_stack([i, j, shifts]).T[::-1])
    our_order = np.lexsort(np.column_stack([edge_index.T, cell_shifts]).T[::-1])
    x = atoms.positions
    vectors = x[edge_index[1]] - x[edge_index[0]] + cell_shifts @ our_cell
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1)[our_order], d[ase_order], rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------- TorchScript
def test_scripted_equals_eager():
    rng = np.random.default_rng(7)
    for build, cutoff in [(slab(ase.build.fcc111, size=(2, 2, 3)), 5.0), (triclinic(10), 5.0), (molecule("C6H6"), 3.0)]:
        atoms, _ = build(rng)
        eager = ours(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
        scripted = ours(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, fn=scripted_neighbor_list)
        np.testing.assert_array_equal(sorted_triples(*eager[0], eager[1]), sorted_triples(*scripted[0], scripted[1]))


class _Wrapper(torch.nn.Module):
    def forward(self, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor):
        return neighbor_list(positions, cell, pbc, 4.0)


def test_scripted_module_survives_save_and_load():
    """The exported-file path: a scripted module calling neighbor_list, saved and loaded again."""
    atoms = ase.build.fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    inputs = (torch.tensor(atoms.positions), torch.tensor(atoms.cell.array), torch.tensor(atoms.pbc))
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(_Wrapper()), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    expected, got = _Wrapper()(*inputs), loaded(*inputs)
    np.testing.assert_array_equal(
        sorted_triples(*got[0].numpy(), got[1].numpy()), sorted_triples(*expected[0].numpy(), expected[1].numpy())
    )


def batch_of_three():
    rng = np.random.default_rng(3)
    systems = [
        ase.build.molecule("CH3CH2OH"),
        ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1)),
        ase.build.fcc111("Cu", size=(2, 2, 2), vacuum=5.0),
    ]
    systems[1].rattle(0.05, seed=int(rng.integers(1000)))
    return systems


def as_batch(systems):
    return (
        torch.tensor(np.concatenate([a.positions for a in systems]), dtype=torch.float64),
        torch.tensor(np.stack([a.cell.array for a in systems]), dtype=torch.float64),
        torch.tensor(np.stack([a.pbc for a in systems])),
        torch.tensor([len(a) for a in systems], dtype=torch.long),
    )


@pytest.mark.parametrize("fn", [batch_neighbor_list, scripted_batch_neighbor_list], ids=["eager", "scripted"])
def test_batch_equals_per_structure_lists_with_offsets(fn):
    systems = batch_of_three()
    cutoff = 4.5
    edge_index, cell_shifts = fn(*as_batch(systems), cutoff)
    assert edge_index.dtype == torch.int64 and cell_shifts.dtype == torch.int64

    expected = []
    offset = 0
    for atoms in systems:
        (i, j), shifts = ours(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
        expected.append(sorted_triples(i + offset, j + offset, shifts))
        offset += len(atoms)
    expected = np.concatenate(expected)
    got = sorted_triples(edge_index[0].numpy(), edge_index[1].numpy(), cell_shifts.numpy())
    np.testing.assert_array_equal(got, expected)
    # edges of one structure never reach another one
    structure = np.repeat(np.arange(len(systems)), [len(a) for a in systems])
    assert np.array_equal(structure[edge_index[0].numpy()], structure[edge_index[1].numpy()])


def test_batch_with_an_empty_structure():
    systems = batch_of_three()
    positions, cell, pbc, n_atoms = as_batch(systems)
    empty = torch.zeros((1, 3, 3), dtype=torch.float64)
    cell = torch.cat([cell[:1], empty, cell[1:]])
    pbc = torch.cat([pbc[:1], torch.zeros((1, 3), dtype=torch.bool), pbc[1:]])
    n_atoms = torch.cat([n_atoms[:1], torch.zeros(1, dtype=torch.long), n_atoms[1:]])
    with_empty = batch_neighbor_list(positions, cell, pbc, n_atoms, 4.0)
    without = batch_neighbor_list(*as_batch(systems), 4.0)
    np.testing.assert_array_equal(
        sorted_triples(*with_empty[0].numpy(), with_empty[1].numpy()),
        sorted_triples(*without[0].numpy(), without[1].numpy()),
    )


def test_batch_rejects_inconsistent_n_atoms():
    positions, cell, pbc, n_atoms = as_batch(batch_of_three())
    with pytest.raises(ERRORS, match="does not split positions"):
        batch_neighbor_list(positions, cell, pbc, n_atoms + 1, 4.0)


# ---------------------------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("fn", [neighbor_list, scripted_neighbor_list], ids=["eager", "scripted"])
def test_pair_exactly_at_or_beyond_cutoff_is_excluded(fn):
    cutoff = 2.5  # exact in binary
    for distance, listed in [(2.5, False), (2.5 + 1e-12, False), (2.5 - 1e-9, True)]:
        (i, _), _ = ours([[0.0, 0.0, 0.0], [distance, 0.0, 0.0]], np.zeros((3, 3)), [False] * 3, cutoff, fn=fn)
        assert (len(i) == 2) is listed, distance
    # periodic image of the atom itself at exactly the cutoff
    (i, _), _ = ours([[0.3, 0.2, 0.1]], 2.5 * np.eye(3), [True] * 3, cutoff, fn=fn)
    assert len(i) == 0
    (i, _), shifts = ours([[0.3, 0.2, 0.1]], 2.5 * np.eye(3), [True] * 3, cutoff + 1e-9, fn=fn)
    assert len(i) == 6
    assert sorted(map(tuple, shifts)) == sorted({tuple(s * row) for row in np.eye(3, dtype=int) for s in (1, -1)})


@pytest.mark.parametrize("fn", [neighbor_list, scripted_neighbor_list], ids=["eager", "scripted"])
@pytest.mark.parametrize("n_atoms", [0, 1, 3])
def test_empty_result_has_the_right_shapes(fn, n_atoms):
    positions = torch.arange(3 * n_atoms, dtype=torch.float64).reshape(n_atoms, 3) * 10.0  # far apart
    no_cell, no_pbc = torch.zeros((3, 3), dtype=torch.float64), torch.zeros(3, dtype=torch.bool)
    edge_index, cell_shifts = fn(positions, no_cell, no_pbc, 3.0)
    assert edge_index.shape == (2, 0) and edge_index.dtype == torch.int64
    assert cell_shifts.shape == (0, 3) and cell_shifts.dtype == torch.int64


def test_float32_input_and_no_gradient():
    atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    positions = torch.tensor(atoms.positions, dtype=torch.float32, requires_grad=True)
    cell = torch.tensor(atoms.cell.array, dtype=torch.float32, requires_grad=True)
    pbc = torch.ones(3, dtype=torch.bool)
    edge_index, cell_shifts = neighbor_list(positions, cell, pbc, 3.0)  # between the 2nd (3.61) and 1st shell
    assert not edge_index.requires_grad and not cell_shifts.requires_grad
    assert edge_index.shape[1] == 12 * len(atoms)
    reference = ours(atoms.positions, atoms.cell.array, atoms.pbc, 3.0)
    np.testing.assert_array_equal(
        sorted_triples(*edge_index.numpy(), cell_shifts.numpy()), sorted_triples(*reference[0], reference[1])
    )


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("fn", [neighbor_list, scripted_neighbor_list], ids=["eager", "scripted"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_positions_raise(fn, bad):
    positions = torch.zeros((4, 3), dtype=torch.float64)
    positions[:, 0] = torch.arange(4)
    positions[2, 1] = bad
    with pytest.raises(ERRORS, match=r"positions contain NaN or inf \(1 atoms, the first \[2\]\): give finite"):
        fn(positions, torch.eye(3, dtype=torch.float64) * 5.0, torch.ones(3, dtype=torch.bool), 3.0)


SINGULAR_CELLS = [
    pytest.param(np.zeros((3, 3)), [True, True, True], id="zero-cell-TTT"),
    pytest.param(np.diag([3.0, 3.0, 0.0]), [True, True, True], id="zero-z-vector-TTT"),
    pytest.param(np.diag([0.0, 3.0, 3.0]), [True, False, False], id="zero-x-vector-TFF"),
    pytest.param(np.array([[3.0, 0, 0], [6.0, 0, 0], [0, 0, 9.0]]), [True, True, False], id="parallel-a-b-TTF"),
    pytest.param(np.array([[3.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 0]]), [True, True, True], id="coplanar-TTT"),
    pytest.param(np.array([[3.0, 0, 0], [3.0, 1e-9, 0], [0, 0, 3.0]]), [True, True, True], id="nearly-parallel-TTT"),
    pytest.param(np.diag([3.0, float("nan"), 3.0]), [True, True, False], id="nan-vector-TTF"),
]


@pytest.mark.parametrize("fn", [neighbor_list, scripted_neighbor_list], ids=["eager", "scripted"])
@pytest.mark.parametrize(("cell", "pbc"), SINGULAR_CELLS)
def test_singular_periodic_cell_raises_instead_of_crashing(fn, cell, pbc):
    # vesin alone kills the process with SIGFPE on parallel-a-b-TTF: reaching the assertion proves we check first
    positions = torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.0, 1.0]], dtype=torch.float64)
    with pytest.raises(ERRORS, match=r"cell is singular in its periodic directions \(pbc=.*set pbc False"):
        fn(positions, torch.tensor(cell), torch.tensor(pbc), 3.0)


@pytest.mark.parametrize("fn", [neighbor_list, scripted_neighbor_list], ids=["eager", "scripted"])
@pytest.mark.parametrize("cutoff", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_cutoff_raises(fn, cutoff):
    positions = torch.zeros((2, 3), dtype=torch.float64)
    with pytest.raises(ERRORS, match="cutoff must be a positive finite number"):
        fn(positions, torch.eye(3, dtype=torch.float64), torch.ones(3, dtype=torch.bool), cutoff)


def test_non_periodic_vectors_are_ignored():
    """A zero or in-plane vector for the non-periodic direction gives the same list as a proper one."""
    atoms = ase.build.fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    reference = ours(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
    for third in (np.zeros(3), atoms.cell.array[0], atoms.cell.array[0] - 2.0 * atoms.cell.array[1]):
        cell = atoms.cell.array.copy()
        cell[2] = third
        got = ours(atoms.positions, cell, atoms.pbc, 5.0)
        np.testing.assert_array_equal(sorted_triples(*got[0], got[1]), sorted_triples(*reference[0], reference[1]))


# ---------------------------------------------------------------------------------------------- memory bound
ESTIMATE_CASES = [  # (build, cutoff, bulk): bulk estimates are close, the others err on the large side
    pytest.param(bulk("Cu", "fcc", (2, 2, 2), a=3.61, cubic=True), 5.0, True, id="bulk-Cu32-rc5"),
    pytest.param(bulk("Cu", "fcc", (2, 2, 2), a=3.61, cubic=True), 12.0, True, id="bulk-Cu32-rc12"),
    pytest.param(bulk("Cu", "fcc", a=3.61), 5.0, True, id="bulk-Cu-primitive-rc5"),
    pytest.param(triclinic(20), 6.0, True, id="triclinic-20atoms-rc6"),
    pytest.param(slab(ase.build.fcc111, size=(2, 2, 3)), 5.0, False, id="slab-rc5"),
    pytest.param(slab(ase.build.fcc111, size=(2, 2, 3)), 20.0, False, id="slab-rc20"),
    pytest.param(wire(0), 5.0, False, id="wire-rc5"),
    pytest.param(molecule("CH3CH2OH"), 4.0, False, id="ethanol-rc4"),
    pytest.param(random_cluster, 3.5, False, id="cluster-Ar20-rc3.5"),
]


@pytest.mark.parametrize(("build", "cutoff", "is_bulk"), ESTIMATE_CASES)
def test_estimated_pairs_against_the_real_count(build, cutoff, is_bulk):
    from physml_md.data.neighbors import estimated_pairs

    atoms, our_cell = build(np.random.default_rng(0))
    cell = atoms.cell.array if our_cell is None else our_cell
    real = len(ase_neighbor_list("i", atoms, cutoff, self_interaction=False))
    estimate = estimated_pairs(torch.tensor(atoms.positions), torch.tensor(cell), torch.tensor(atoms.pbc), cutoff)
    low, high = (0.9, 1.1) if is_bulk else (1.0, 5.0)
    assert low * real <= estimate <= high * real, (estimate, real)


@pytest.mark.parametrize("fn", [batch_neighbor_list, scripted_batch_neighbor_list], ids=["eager", "scripted"])
def test_a_list_over_max_pairs_is_refused_and_one_under_is_built(fn):
    atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)  # 32 atoms: 1344 pairs at 5 angstrom
    args = (
        torch.tensor(atoms.positions),
        torch.tensor(atoms.cell.array).unsqueeze(0),
        torch.tensor(atoms.pbc).unsqueeze(0),
        torch.tensor([len(atoms)]),
        5.0,
    )
    edge_index, _ = fn(*args, 2000)
    assert edge_index.shape[1] == 1344
    with pytest.raises(ERRORS, match=r"would hold about 1\.4e\+3 pairs .* more than the bound of 1\.0e\+3"):
        fn(*args, 1000)


# ------------------------------------------------------------------------------ huge or stretched coordinates
# vesin-torch alone, in a child process: (positions, cell, pbc) at a 4 angstrom cutoff
_VESIN_ALONE = """
import sys, torch
from vesin_torch import NeighborList
positions, cell, pbc = eval(sys.argv[1])
NeighborList(cutoff=4.0, full_list=True).compute(
    points=torch.tensor(positions, dtype=torch.float64), box=torch.tensor(cell, dtype=torch.float64),
    periodic=torch.tensor(pbc), quantities="PS", copy=True,
)
print("survived")
"""
NO_CELL = [[0.0] * 3] * 3
STRETCHED = {  # finite positions on which vesin-torch 0.6.2 divides an integer by zero (SIGFPE)
    "one atom 1e300 away": ([[0.0, 0, 0], [1.0, 0, 0], [1e300, 0, 0]], NO_CELL, [False] * 3),
    "one atom 4.1e5 away": ([[0.0, 0, 0], [1.0, 0, 0], [4.1e5, 0, 0]], NO_CELL, [False] * 3),
    "planar, 1300 angstrom": ([[0.0, 0, 0], [1.0, 0, 0], [1300.0, 1300.0, 0]], NO_CELL, [False] * 3),
    "thin periodic cell": ([[0.0, 0, 0], [1.0, 1, 1]], [[1300.0, 0, 0], [0, 1300.0, 0], [0, 0, 4.5]], [True] * 3),
}


def _run_vesin_alone(case):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _VESIN_ALONE, repr(case)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", list(STRETCHED))
def test_vesin_alone_kills_the_process_on_a_stretched_structure(name):
    """The bug the check below guards against: if vesin ever stops crashing here, the check may be relaxed."""
    import signal

    result = _run_vesin_alone(STRETCHED[name])
    assert result.returncode == -signal.SIGFPE and "survived" not in result.stdout, (result.returncode, result.stderr)


@pytest.mark.parametrize("fn", [neighbor_list, scripted_neighbor_list], ids=["eager", "scripted"])
@pytest.mark.parametrize("name", list(STRETCHED))
def test_a_stretched_structure_is_refused_before_vesin_runs(fn, name):
    positions, cell, pbc = STRETCHED[name]
    positions, cell, pbc = (
        torch.tensor(positions, dtype=torch.float64),
        torch.tensor(cell, dtype=torch.float64),
        torch.tensor(pbc),
    )
    expected = r"(the structure spans .* \(largest coordinate .* atom \d\): too stretched|positions reach .*"
    expected += r" angstrom \(atom 2\), beyond the 1\.0e\+6 angstrom).* the MD run that made it .*"
    with pytest.raises(ERRORS, match=expected):
        fn(positions, cell, pbc, 4.0)


@pytest.mark.parametrize("fn", [neighbor_list, scripted_neighbor_list], ids=["eager", "scripted"])
def test_the_stretch_bound_is_vesins_own(fn):
    """Just under the bound vesin survives and the list is built (and equals ASE's); just over it is refused."""
    from physml_md.data.neighbors import vesin_cell_grid

    for side, survives in ((1240.0, True), (1265.0, False)):  # 313^2 < 1e5 cells < 319^2 at 4 angstrom
        case = ([[0.0, 0, 0], [1.0, 0, 0], [side, side, 0]], NO_CELL, [False] * 3)
        positions, cell, pbc = (torch.tensor(x) for x in case)
        _, counts = vesin_cell_grid(positions.to(torch.float64), cell.to(torch.float64), pbc, 4.0)
        assert (min(counts) >= 1) == survives, counts
        assert (_run_vesin_alone(case).returncode == 0) == survives, side
        if survives:
            edge_index, cell_shifts = ours(*case, 4.0, fn=fn)
            np.testing.assert_array_equal(sorted_triples(*edge_index, cell_shifts), [[0, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
        else:
            with pytest.raises(ERRORS, match="too stretched for the neighbour list"):
                fn(positions.to(torch.float64), cell.to(torch.float64), pbc, 4.0)


@pytest.mark.parametrize("fn", [neighbor_list, scripted_neighbor_list], ids=["eager", "scripted"])
def test_a_periodic_position_beyond_the_bound_is_refused_not_listed_wrong(fn):
    """Far outside a periodic cell vesin's integer cell index overflows: 1e12 angstrom gave 2 pairs instead of 6."""
    cell = torch.eye(3, dtype=torch.float64) * 10.0
    positions = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]], dtype=torch.float64)
    reference = fn(positions, cell, torch.ones(3, dtype=torch.bool), 4.0)[0].shape[1]
    assert reference == 6
    moved = positions.clone()
    moved[2, 0] += 1e5  # 10^4 cells away: same list (shifted)
    assert fn(moved, cell, torch.ones(3, dtype=torch.bool), 4.0)[0].shape[1] == 6
    moved[2, 0] = 3.0 + 1e12
    with pytest.raises(ERRORS, match=r"positions reach 1\.0e\+12 angstrom \(atom 2\), beyond the 1\.0e\+6 angstrom"):
        fn(moved, cell, torch.ones(3, dtype=torch.bool), 4.0)
