"""physml_md.data.collate: batches of structures of different sizes, periodic and not, with partial labels."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list

from physml_md.data import keys as K
from physml_md.data.collate import collate
from physml_md.data.structures import atoms_to_dict

CUTOFF = 3.0


def with_edges(atoms, data):
    """Add ASE's neighbour list (an independent reference) to a structure dict."""
    i, j, shifts = neighbor_list("ijS", atoms, CUTOFF)
    data[K.EDGE_INDEX] = torch.tensor(np.stack([i, j]), dtype=torch.int64)
    data[K.CELL_SHIFTS] = torch.tensor(shifts, dtype=torch.float64)
    return data


def three_structures(edges=True):
    """Cu fcc 8 atoms (periodic), H2O (not periodic), Al slab (periodic in x, y only): 8, 3, 6 atoms."""
    cu = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1, 1, 2))
    cu.rattle(0.05, seed=3)
    water = molecule("H2O")
    slab = bulk("Al", "fcc", a=4.05).repeat((1, 2, 3))
    slab.pbc = [True, True, False]
    slab.rattle(0.02, seed=4)
    images = [cu, water, slab]
    out = []
    for atoms in images:
        atoms.calc = EMT()
        atoms.get_potential_energy()
        if atoms.pbc.all():
            atoms.get_stress()
        data = atoms_to_dict(atoms)
        out.append(with_edges(atoms, data) if edges else data)
    return images, out


def test_shapes_batch_and_masks():
    images, structures = three_structures()
    batch = collate(structures)
    sizes = [len(a) for a in images]
    n, b = sum(sizes), len(images)
    assert batch[K.POSITIONS].shape == (n, 3)
    assert batch[K.ATOMIC_NUMBERS].shape == (n,) and batch[K.ATOMIC_NUMBERS].dtype == torch.int64
    assert batch[K.FORCES].shape == (n, 3) and batch[K.CHARGES].shape == (n,)
    assert batch[K.CELL].shape == (b, 3, 3) and batch[K.PBC].shape == (b, 3)
    assert batch[K.ENERGY].shape == (b,) and batch[K.STRESS].shape == (b, 3, 3)
    assert batch[K.TOTAL_CHARGE].shape == (b,) and batch[K.DIPOLE].shape == (b, 3)
    assert torch.equal(batch[K.N_ATOMS], torch.tensor(sizes))
    assert torch.equal(batch[K.BATCH], torch.tensor([0] * 8 + [1] * 3 + [2] * 6))
    assert batch[K.PBC].tolist() == [[True] * 3, [False] * 3, [True, True, False]]
    assert batch["stress_mask"].tolist() == [True, False, True]  # EMT also gives the slab (with a cell) a stress
    assert batch["energy_mask"].tolist() == [True, True, True]
    assert batch["charges_mask"].tolist() == [False, False, False]
    for key in K.LABEL_KEYS:
        assert batch[K.mask_key(key)].dtype == torch.bool
    for i, atoms in enumerate(images):
        in_i = batch[K.BATCH] == i
        np.testing.assert_array_equal(batch[K.POSITIONS][in_i].numpy(), atoms.positions)
        np.testing.assert_array_equal(batch[K.FORCES][in_i].numpy(), atoms.get_forces())
        np.testing.assert_array_equal(batch[K.CELL][i].numpy(), atoms.cell.array)
        assert float(batch[K.ENERGY][i]) == atoms.get_potential_energy()
    np.testing.assert_array_equal(batch[K.STRESS][0].numpy(), images[0].get_stress(voigt=False))


def test_edge_index_offsets_and_distances():
    images, structures = three_structures()
    batch = collate(structures)
    edges = [s[K.EDGE_INDEX].shape[1] for s in structures]
    assert batch[K.EDGE_INDEX].shape == (2, sum(edges))
    assert batch[K.CELL_SHIFTS].shape == (sum(edges), 3)
    offsets = [0, 8, 11]
    start = 0
    for s, offset, n_edges in zip(structures, offsets, edges, strict=True):
        part = batch[K.EDGE_INDEX][:, start : start + n_edges]
        assert torch.equal(part, s[K.EDGE_INDEX] + offset)
        start += n_edges
    i, j = batch[K.EDGE_INDEX]
    assert torch.equal(batch[K.BATCH][i], batch[K.BATCH][j])  # no edge crosses structures
    # r_ij = x_j - x_i + shifts @ cell, with each edge's own cell, gives ASE's distances
    cell = batch[K.CELL][batch[K.BATCH][i]]
    vectors = batch[K.POSITIONS][j] - batch[K.POSITIONS][i] + torch.einsum("ek,ekl->el", batch[K.CELL_SHIFTS], cell)
    reference = np.concatenate([neighbor_list("d", atoms, CUTOFF) for atoms in images])
    np.testing.assert_allclose(vectors.norm(dim=1).numpy(), reference, rtol=0, atol=1e-12)


def test_edges_dropped_unless_every_structure_has_them():
    _, structures = three_structures()
    del structures[1][K.EDGE_INDEX], structures[1][K.CELL_SHIFTS]
    batch = collate(structures)
    assert K.EDGE_INDEX not in batch and K.CELL_SHIFTS not in batch


def test_mixed_presence_of_labels_is_absent_not_an_error():
    _, structures = three_structures(edges=False)
    del structures[0][K.CHARGES], structures[0]["charges_mask"]
    structures[1][K.CHARGES] = torch.tensor([-0.8, 0.4, 0.4], dtype=torch.float64)
    structures[1]["charges_mask"] = torch.tensor([True])
    del structures[2][K.CHARGES], structures[2]["charges_mask"]
    del structures[2][K.ENERGY]  # a label without its mask is absent there too
    del structures[2]["energy_mask"]
    batch = collate(structures)
    assert batch[K.CHARGES].shape == (17,)
    assert batch[K.CHARGES].tolist() == [0.0] * 8 + [-0.8, 0.4, 0.4] + [0.0] * 6
    assert batch["charges_mask"].tolist() == [False, True, False]
    assert batch["energy_mask"].tolist() == [True, True, False]
    assert batch[K.ENERGY][2] == 0.0


def test_label_without_mask_counts_as_present():
    _, structures = three_structures(edges=False)
    for s in structures:
        del s["energy_mask"]
    assert collate(structures)["energy_mask"].tolist() == [True, True, True]


def test_collating_batches_equals_collating_structures():
    _, structures = three_structures()
    once = collate(structures)
    twice = collate([collate(structures[:2]), structures[2]])
    assert set(once) == set(twice)
    for key in once:
        assert torch.equal(once[key], twice[key]), key


def test_float32_and_single_structure():
    _, structures = three_structures(edges=False)
    s = {k: (v.float() if v.is_floating_point() else v) for k, v in structures[1].items()}
    batch = collate([s])
    assert batch[K.POSITIONS].dtype == torch.float32
    for key in s:
        assert torch.equal(batch[key], s[key]), key


def test_errors():
    _, structures = three_structures(edges=False)
    with pytest.raises(ValueError, match="at least one structure"):
        collate([])
    structures[0]["weights"] = torch.ones(1)
    with pytest.raises(ValueError, match=r"'weights'.*extra_per_atom or extra_per_structure"):
        collate(structures)
    for s in structures:
        s["weights"] = torch.ones(1)
    assert collate(structures, extra_per_structure=("weights",))["weights"].shape == (3,)
    del structures[1]["weights"]
    with pytest.raises(ValueError, match="input 1 has no 'weights'"):
        collate(structures, extra_per_structure=("weights",))
