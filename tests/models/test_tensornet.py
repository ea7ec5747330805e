"""TensorNet's pieces: the I/A/S decomposition, edge tensors, matrix products, O(3) equivariance of every layer,
smoothness where a channel is zero, second derivatives. (The contract shared with every architecture, i.e.
symmetry of the potential, finite differences, cutoff, batching, export and engines, is tested over
MODEL_NAMES in tests/models/test_potential.py and the integration tests.)"""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from physml_md.models import TensorNet, build_model
from physml_md.models.tensornet import (
    component_basis,
    edge_components,
    matrix_product,
    neighbour_slots,
    pad,
    to_matrices,
    to_parts,
)
from tests.helpers import CUTOFF, SYMMETRY, assert_close, inputs, random_rotation


def _random_matrices(n=4, features=3, seed=0):
    return torch.tensor(np.random.default_rng(seed).normal(size=(n, 3, 3, features)))


def _part_matrices(matrices):
    """(I, A, S) of [N, 3, 3, F] matrices as matrices, each recomposed from its coordinates alone."""
    basis = component_basis()
    scalar, vector, tensor = to_parts(matrices, basis)
    return (
        to_matrices((scalar, torch.zeros_like(vector), torch.zeros_like(tensor)), basis),
        to_matrices((torch.zeros_like(scalar), vector, torch.zeros_like(tensor)), basis),
        to_matrices((torch.zeros_like(scalar), torch.zeros_like(vector), tensor), basis),
    )


def _as_numpy(matrices):
    """[N, 3, 3, F] torch -> [N, F, 3, 3] numpy (a stack of ordinary matrices)."""
    return matrices.detach().permute(0, 3, 1, 2).numpy()


def test_basis_is_orthonormal_and_spans_the_three_parts():
    basis = component_basis().numpy()
    gram = np.einsum("kab,lab->kl", basis, basis)
    assert_close(gram, np.eye(9), 1e-15, "Frobenius inner products of the basis")
    assert_close(basis[0], np.eye(3) / np.sqrt(3.0), 1e-15, "first element: the identity")
    for k in range(1, 4):
        assert_close(basis[k], -basis[k].T, 0.0, f"element {k} antisymmetric")
    for k in range(4, 9):
        assert_close(basis[k], basis[k].T, 0.0, f"element {k} symmetric")
        assert abs(np.trace(basis[k])) < 1e-15


def test_decomposition_is_the_textbook_one_and_recomposes_the_tensor():
    matrices = _random_matrices()
    i, a, s = (_as_numpy(part) for part in _part_matrices(matrices))
    x = _as_numpy(matrices)
    trace = np.trace(x, axis1=-2, axis2=-1)[..., None, None]
    transpose = np.swapaxes(x, -1, -2)
    assert_close(i, trace / 3.0 * np.eye(3), 1e-14, "I = tr(X)/3 Id")
    assert_close(a, (x - transpose) / 2.0, 1e-14, "A = (X - X^T)/2")
    assert_close(s, (x + transpose) / 2.0 - trace / 3.0 * np.eye(3), 1e-14, "S = (X + X^T)/2 - I")
    assert_close(i + a + s, x, 1e-14, "I + A + S = X")
    assert_close(a, -np.swapaxes(a, -1, -2), 1e-15, "A antisymmetric")
    assert_close(s, np.swapaxes(s, -1, -2), 1e-15, "S symmetric")
    assert_close(np.trace(s, axis1=-2, axis2=-1), 0.0, 1e-14, "S traceless")
    # the coordinates are orthonormal: squared Frobenius norms add up
    scalar, vector, tensor = to_parts(matrices, component_basis())
    norms = (scalar**2 + (vector**2).sum(1) + (tensor**2).sum(1)).numpy()
    assert_close(norms, (x**2).sum((-1, -2)), 1e-13, "sum of the parts' squared norms")


def test_edge_components_are_identity_skew_and_traceless_outer_product():
    rng = np.random.default_rng(1)
    unit = rng.normal(size=(5, 3))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    coordinates = edge_components(torch.tensor(unit), component_basis())
    parts = (coordinates[:, 0].unsqueeze(-1), coordinates[:, 1:4].unsqueeze(-1), coordinates[:, 4:].unsqueeze(-1))
    basis = component_basis()
    zero = [torch.zeros_like(p) for p in parts]
    i = _as_numpy(to_matrices((parts[0], zero[1], zero[2]), basis))[:, 0]
    a = _as_numpy(to_matrices((zero[0], parts[1], zero[2]), basis))[:, 0]
    s = _as_numpy(to_matrices((zero[0], zero[1], parts[2]), basis))[:, 0]
    v = rng.normal(size=3)
    assert_close(i, np.broadcast_to(np.eye(3), (5, 3, 3)), 1e-15, "I part: the identity")
    assert_close(a @ v, np.cross(unit, v), 1e-15, "A part: skew(u), the matrix of u x .")
    assert_close(s, np.einsum("ea,eb->eab", unit, unit) - np.eye(3) / 3.0, 1e-15, "S part: u u^T - Id/3")


def test_matrix_product_is_the_matrix_product_of_each_channel():
    x, y = _random_matrices(seed=2), _random_matrices(seed=3)
    assert_close(_as_numpy(matrix_product(x, y)), _as_numpy(x) @ _as_numpy(y), 1e-14, "x y")


def _graph(atoms):
    """species indices, edge_index, vectors and lengths of ``atoms`` (all elements H, C, O; cutoff 4 A)."""
    centre, neighbour, vectors = neighbor_list("ijD", atoms, CUTOFF)
    species = torch.tensor([{1: 0, 6: 1, 8: 2}[z] for z in atoms.numbers])
    vectors = torch.tensor(vectors)
    return species, torch.tensor(np.stack([centre, neighbour])), vectors


def _energy_model(n_outputs=1):
    torch.manual_seed(0)
    return TensorNet(3, CUTOFF, features=6, n_interactions=2, n_rbf=5, n_outputs=n_outputs).double()


@pytest.mark.parametrize("proper", [True, False], ids=["rotation", "reflection"])
def test_every_layer_is_o3_equivariant(proper):
    """Under r -> R r every layer's output transforms as I -> I, A -> det(R) R A R^T, S -> R S R^T."""
    model = _energy_model()
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.1, seed=3)
    species, edge_index, vectors = _graph(atoms)
    rotation = random_rotation(np.random.default_rng(4))
    if not proper:
        rotation = rotation @ np.diag([1.0, 1.0, -1.0])
    sign = np.linalg.det(rotation)
    rotated_vectors = vectors @ torch.tensor(rotation).T
    states = model.representations(species, edge_index, vectors, vectors.norm(dim=-1))
    rotated = model.representations(species, edge_index, rotated_vectors, rotated_vectors.norm(dim=-1))
    assert len(states) == 3  # embedding + 2 interactions
    basis = component_basis()
    for layer, (state, moved) in enumerate(zip(states, rotated)):
        i, a, s = (_as_numpy(p) for p in _part_matrices(to_matrices(state, basis)))
        ri, ra, rs = (_as_numpy(p) for p in _part_matrices(to_matrices(moved, basis)))
        tol = SYMMETRY[torch.float64]
        assert np.abs(a).max() > 1e-3 and np.abs(s).max() > 1e-3, "the A and S parts are really there"
        assert_close(ri, i, tol, f"layer {layer}: I invariant")
        assert_close(ra, sign * rotation @ a @ rotation.T, tol, f"layer {layer}: A -> det(R) R A R^T")
        assert_close(rs, rotation @ s @ rotation.T, tol, f"layer {layer}: S -> R S R^T")


def test_potential_is_invariant_under_reflection():
    model = build_model("tensornet", species=["Cu", "Al"], cutoff=CUTOFF, features=8, n_interactions=2).eval()
    atoms = bulk("Cu", "fcc", a=3.7).repeat((2, 2, 2))
    atoms.numbers[[0, 3]] = 13
    atoms.rattle(0.1, seed=5)
    mirror = np.diag([1.0, -1.0, 1.0]) @ random_rotation(np.random.default_rng(6))
    reflected = atoms.copy()
    reflected.positions = atoms.positions @ mirror.T
    reflected.set_cell(atoms.cell.array @ mirror.T, scale_atoms=False)
    out, ref = model(inputs(reflected)), model(inputs(atoms))
    tol = SYMMETRY[torch.float64]
    assert_close(out["energy"].numpy(), ref["energy"].numpy(), tol, "energy under reflection")
    assert_close(out["forces"].numpy(), ref["forces"].numpy() @ mirror.T, tol, "forces under reflection")
    assert_close(out["stress"][0].numpy(), mirror @ ref["stress"][0].numpy() @ mirror.T, tol, "stress")


def test_second_derivatives_for_force_training():
    """Force losses differentiate the forces once more (create_graph): check d2E/dr2 by gradgradcheck."""
    model = _energy_model()
    atoms = Atoms("COHH", positions=[[0, 0, 0], [1.2, 0.1, 0], [-0.6, 0.9, 0.2], [-0.5, -0.8, -0.4]])
    species, edge_index, vectors = _graph(atoms)

    def energy(v):
        return model(species, edge_index, v, v.norm(dim=-1)).sum()

    vectors.requires_grad_(True)
    assert torch.autograd.gradgradcheck(energy, (vectors,))


def test_atom_without_neighbours_gives_finite_gradients_in_training():
    """Its tensors are exactly zero: the normalisation must be smooth there (|X| + 1 would give NaN gradients)."""
    model = build_model("tensornet", species=["H", "O"], cutoff=CUTOFF, features=8, n_interactions=2).train()
    atoms = Atoms("OHHO", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [20.0, 0, 0]])
    out = model(inputs(atoms))
    loss = out["energy"].sum() + (out["forces"] ** 2).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert np.all(out["forces"][3].detach().numpy() == 0.0)


def test_two_outputs_and_bad_n_outputs():
    model = _energy_model(n_outputs=2)
    species, edge_index, vectors = _graph(molecule("H2O"))
    out = model(species, edge_index, vectors, vectors.norm(dim=-1)).detach()
    assert out.shape == (3, 2) and float(out[:, 1].abs().max()) > 0
    with pytest.raises(ValueError, match="n_outputs must be 1 \\(energy\\) or 2 \\(energy and charge\\), got 3"):
        TensorNet(3, CUTOFF, n_outputs=3)


def test_build_model_records_the_architecture():
    model = build_model("tensornet", species=["Cu"], cutoff=CUTOFF, features=8, n_interactions=1, n_rbf=6)
    assert isinstance(model.energy_model, TensorNet) and len(model.energy_model.interactions) == 1
    assert model.hyperparameters["name"] == "tensornet"
    assert model.energy_model.rbf.means.shape == (6,)


def test_padded_edges_sum_like_a_scatter():
    """neighbour_slots/pad: summing each atom's padded rows equals index_add over the unsorted edge list."""
    rng = np.random.default_rng(8)
    n = 7
    centre = torch.tensor(rng.choice([0, 1, 2, 4, 5], size=40))  # atoms 3 and 6 have no edges
    values = torch.tensor(rng.normal(size=(40, 4)))
    rows, width = neighbour_slots(centre, n)
    assert width == int(torch.bincount(centre).max()) and len(set(rows.tolist())) == 40
    padded = pad(values, rows, n, width)
    assert padded.shape == (n, width, 4)
    reference = torch.zeros(n, 4, dtype=torch.float64).index_add(0, centre, values)
    assert_close(padded.sum(1).numpy(), reference.numpy(), 1e-14, "sum over padded rows")
    assert np.all(padded[3].numpy() == 0.0) and np.all(padded[6].numpy() == 0.0)


def test_scatter_embedding_equals_the_padded_one():
    """padded = False (what the torch.export file traces: no size that depends on the data) gives the padded
    embedding's energies and forces, float64."""
    torch.manual_seed(4)
    model = build_model("tensornet", species=["H", "C", "O", "Cu"], cutoff=4.0, features=8, n_interactions=2).eval()
    cu = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    cu.rattle(0.05, seed=3)
    for atoms in (molecule("CH3CH2OH"), cu, Atoms("O", positions=[[0.0, 0.0, 0.0]])):
        padded = model(inputs(atoms))
        model.energy_model.embedding.padded = False
        scattered = model(inputs(atoms))
        model.energy_model.embedding.padded = True
        for key in padded:
            assert_close(scattered[key].numpy(), padded[key].numpy(), 1e-12, f"{atoms.get_chemical_formula()} {key}")
