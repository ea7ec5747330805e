"""TensorNet's pieces: the I/A/S decomposition, edge tensors, matrix products, O(3) equivariance of every layer,
smoothness where a channel is zero, second derivatives; and the optimised model against the plain formulation
kept in tests/models/reference_tensornet.py (same state dict, float64: energy, forces, stress to 1e-12 relative,
the training path's second derivative to 1e-10; molecule, periodic triclinic cell, batch; edges in one chunk and
in many; one output and two; TorchScript; stacked members). (The contract shared with every architecture, i.e.
symmetry of the potential, finite differences, cutoff, batching, export and engines, is tested over
MODEL_NAMES in tests/models/test_potential.py and the integration tests.)"""

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from physml_md.models import TensorNet, build_model, tensornet
from physml_md.models.potential import edge_vectors
from physml_md.models.stacking import stack_energy_models
from physml_md.models.tensornet import (
    component_basis,
    edge_components,
    matrix_product,
    to_matrices,
    to_parts,
)
from tests.helpers import CUTOFF, EXACT, SPECIES, SYMMETRY, assert_close, inputs, random_rotation
from tests.models.helpers import ETHANOL, TRICLINIC, assert_state_dicts_interchange, outputs, reference_system
from tests.models.reference_tensornet import TensorNet as ReferenceTensorNet


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


def test_two_outputs_and_bad_noutputs():
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


# ---------------------------------------------------------------- against the plain formulation

FEATURES = 8
N_RBF = 5
SECOND_DERIVATIVE = 1e-10  # relative, float64: a longer chain of roundings than the forces
# chunk_elements and recompute_edges: the edges at once, in one chunk, or in chunks of 7 (several chunks in eval
# mode: recomputed in the backward pass by _RecomputedMessages unless recompute_edges is False)
CHUNKS = {
    "no chunks (as traced for torch.export)": (0, True),
    "one chunk": (1 << 20, True),
    "7-edge chunks": (7 * FEATURES, True),
    "7-edge chunks kept for the backward pass": (7 * FEATURES, False),
}


def _model_pair(chunks="one chunk", n_outputs=1, seed=3):
    """The optimised potential with random weights (every weight matters) and the same potential around the
    reference TensorNet with the same state dict."""
    model = build_model(
        "tensornet",
        species=SPECIES,
        cutoff=CUTOFF,
        dtype="float64",
        features=FEATURES,
        n_interactions=2,
        n_rbf=N_RBF,
        charges=n_outputs == 2,
        seed=seed,
    )
    generator = torch.Generator().manual_seed(5 + seed)
    with torch.no_grad():
        for parameter in model.energy_model.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    model.energy_model.chunk_elements, model.energy_model.recompute_edges = CHUNKS[chunks]
    reference = copy.deepcopy(model)
    reference.energy_model = ReferenceTensorNet(
        len(SPECIES), CUTOFF, features=FEATURES, n_interactions=2, n_rbf=N_RBF, n_outputs=n_outputs
    ).to(torch.float64)
    reference.energy_model.load_state_dict(model.energy_model.state_dict())
    return model, reference


def test_state_dict_is_that_of_the_reference():
    """Checkpoints written before the optimisation load into the optimised model, and back."""
    assert_state_dicts_interchange(*_model_pair())


def test_edges_come_in_chunks_on_cpu():
    model, _ = _model_pair("7-edge chunks")
    species, edge_index, vectors = _graph(ETHANOL)
    chunks = model.energy_model._edge_chunks(species, edge_index, vectors, vectors.norm(dim=-1))
    assert len(chunks) == -(-edge_index.shape[1] // 7) and all(chunk[0].shape[0] <= 7 for chunk in chunks)
    model.energy_model.chunk_elements = 0
    assert len(model.energy_model._edge_chunks(species, edge_index, vectors, vectors.norm(dim=-1))) == 1


@pytest.mark.parametrize("n_outputs", [1, 2])
@pytest.mark.parametrize("chunks", list(CHUNKS))
@pytest.mark.parametrize("name", ["molecule", "triclinic", "batch"])
def test_energy_forces_stress_equal_the_reference(name, chunks, n_outputs):
    model, reference = _model_pair(chunks, n_outputs)
    data = reference_system(name)
    expected = outputs(reference.eval(), data)
    actual = outputs(model.eval(), data)
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert_close(actual[key], expected[key], EXACT[torch.float64], f"{key} ({name}, {chunks})")
    assert np.abs(expected["forces"]).max() > 0.01  # not a trivially small case
    if name != "molecule":
        assert np.abs(expected["stress"]).max() > 1e-3


def test_edges_are_recomputed_in_eval_mode_only(monkeypatch):
    """Several chunks in eval mode: each interaction's messages go through _RecomputedMessages (nothing per edge
    kept for the backward pass); in training mode, with recompute_edges False, or with one chunk they do not."""
    model, _ = _model_pair("7-edge chunks")
    calls = []
    recomputed = tensornet._RecomputedMessages

    class Counted:
        @staticmethod
        def apply(*args):
            calls.append(args[-1])  # the chunk size
            return recomputed.apply(*args)

    monkeypatch.setattr(tensornet, "_RecomputedMessages", Counted)
    data = reference_system("molecule")
    model.eval()(data)
    n_chunks = len(model.energy_model._edge_chunks(*_graph(ETHANOL), _graph(ETHANOL)[2].norm(dim=-1)))
    assert n_chunks > 1 and calls == [7, 7]  # 2 interactions, in chunks of 7 edges
    model.train()(data)
    model.eval().energy_model.recompute_edges = False
    model(data)
    model.energy_model.recompute_edges, model.energy_model.chunk_elements = True, 1 << 20
    model(data)
    assert calls == [7, 7]


def test_recomputed_edges_give_the_parameter_gradients():
    """_RecomputedMessages skips the filter weight's gradient when only forces are asked for; asked for (with the
    forces in the same pass), it equals the one through the edge tensors kept for the backward pass."""
    model, _ = _model_pair("7-edge chunks")
    species, edge_index, vectors = _graph(ETHANOL)
    gradients = []
    for recompute in (True, False):
        model.energy_model.recompute_edges = recompute
        v = vectors.clone().requires_grad_(True)
        energy = model.energy_model.eval()(species, edge_index, v, v.norm(dim=-1)).sum()
        gradients.append(torch.autograd.grad(energy, [v, *model.energy_model.parameters()], allow_unused=True))
    for recomputed, kept in zip(*gradients):
        assert (recomputed is None) == (kept is None)
        if kept is not None:
            assert_close(recomputed.numpy(), kept.numpy(), EXACT[torch.float64], "gradient")


def test_recomputed_edges_give_second_derivatives():
    """Checkpointed chunks (eval mode) still differentiate twice: d2E/dr2 by gradgradcheck."""
    torch.manual_seed(0)
    model = TensorNet(3, CUTOFF, features=6, n_interactions=2, n_rbf=5).double().eval()
    model.chunk_elements = 3 * 6
    atoms = Atoms("COHH", positions=[[0, 0, 0], [1.2, 0.1, 0], [-0.6, 0.9, 0.2], [-0.5, -0.8, -0.4]])
    species, edge_index, vectors = _graph(atoms)
    assert len(model._edge_chunks(species, edge_index, vectors, vectors.norm(dim=-1))) > 1

    def energy(v):
        return model(species, edge_index, v, v.norm(dim=-1)).sum()

    assert torch.autograd.gradgradcheck(energy, (vectors.requires_grad_(True),))


@pytest.mark.parametrize("n_outputs", [1, 2])
@pytest.mark.parametrize("name", ["molecule", "batch"])
def test_second_derivative_equals_the_reference(name, n_outputs):
    """The training path: d(force and stress loss)/d(parameters) through the autograd force computation."""
    gradients = []
    for model in _model_pair("7-edge chunks", n_outputs):
        model.train()
        out = model(reference_system(name))
        loss = out["forces"].pow(2).sum()
        if "stress" in out:
            loss = loss + out["stress"].pow(2).sum()
        if n_outputs == 2:
            loss = loss + out["dipole"].pow(2).sum()
        names, parameters = zip(*model.energy_model.named_parameters())
        grads = torch.autograd.grad(loss, parameters, allow_unused=True)
        gradients.append({n: torch.zeros_like(p) if g is None else g for n, p, g in zip(names, parameters, grads)})
    optimised, reference = gradients
    assert max(float(g.abs().max()) for g in reference.values()) > 1.0
    for key in reference:
        assert_close(optimised[key].numpy(), reference[key].numpy(), SECOND_DERIVATIVE, f"d loss / d {key}")


def test_scripted_model_equals_the_reference():
    model, reference = _model_pair("7-edge chunks", 2)
    data = reference_system("batch")
    expected = outputs(reference.eval(), data)
    actual = outputs(torch.jit.script(model.eval()), data)
    for key in expected:
        assert_close(actual[key], expected[key], EXACT[torch.float64], f"scripted {key}")


def test_stacked_members_equal_their_references():
    """Stacked (models.stacking: StackedLinear filters, one species table per member) and asked for small chunks:
    every member's per-atom outputs are those of its reference on its copy of the structure."""
    pairs = [_model_pair("7-edge chunks", seed=seed) for seed in range(3)]
    stacked = stack_energy_models([model.energy_model.eval() for model, _ in pairs])
    assert stacked.members == 3 and stacked.chunk_elements == CHUNKS["7-edge chunks"][0]
    positions, _, species, cell, _, batch, _, edge_index, shifts, _ = pairs[0][0].prepare(inputs(TRICLINIC))
    vectors = edge_vectors(positions, cell, batch, edge_index, shifts)  # periodic images included
    lengths = vectors.norm(dim=-1)
    m, n, e = len(pairs), positions.shape[0], lengths.shape[0]
    out = stacked(
        species.repeat(m) + torch.arange(m).repeat_interleave(n) * len(SPECIES),
        edge_index.repeat(1, m) + (torch.arange(m) * n).repeat_interleave(e),
        vectors.repeat(m, 1),
        lengths.repeat(m),
    ).detach()
    expected = torch.cat([reference.energy_model(species, edge_index, vectors, lengths) for _, reference in pairs])
    assert_close(out.numpy(), expected.detach().numpy(), EXACT[torch.float64], "stacked members")
    assert not torch.allclose(expected[:n], expected[n : 2 * n])  # the members differ
