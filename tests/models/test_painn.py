"""The optimised PaiNN gives the numbers of the plain formulation (tests/models/reference_painn.py).

Same state dict in both, float64: energy, forces, stress (and charges) to 1e-12 relative, and the second
derivative that training takes (gradient of a force/stress loss with respect to the parameters, through
create_graph=True) to 1e-10, on a molecule, a periodic triclinic cell and a batch of both; with the first
interaction folded over species and not, with the edges in one chunk and in many, with one output and two.
"""

import copy

import numpy as np
import pytest
import torch

from physml_md.models import build_model
from tests.helpers import CUTOFF, EXACT, SPECIES, assert_close, requires_cuda
from tests.models.helpers import assert_state_dicts_interchange, outputs, reference_system
from tests.models.reference_painn import PaiNN as ReferencePaiNN

FEATURES = 16
SECOND_DERIVATIVE = 1e-10  # relative, float64: a longer chain of roundings than the forces
# n_rbf 4: 5 species x 5 basis functions <= 2 x 16 features, so the first interaction is folded over species;
# n_rbf 20 is not (the gather path)
N_RBF = {"folded": 4, "gathered": 20}
CHUNKS = {"no chunks (as traced for torch.export)": 0, "one chunk": 1 << 20, "7-edge chunks": 7 * FEATURES}


def model_pair(basis="folded", chunks="one chunk", n_outputs=1):
    """The optimised potential with random weights (every weight matters) and the same potential around the
    reference PaiNN with the same state dict."""
    model = build_model(
        species=SPECIES,
        cutoff=CUTOFF,
        dtype="float64",
        features=FEATURES,
        n_interactions=3,
        n_rbf=N_RBF[basis],
        charges=n_outputs == 2,
        seed=3,
    )
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in model.energy_model.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    model.energy_model.chunk_elements = CHUNKS[chunks]
    assert model.energy_model.fold_species == (basis == "folded")
    reference = copy.deepcopy(model)
    reference.energy_model = ReferencePaiNN(
        len(SPECIES), CUTOFF, features=FEATURES, n_interactions=3, n_rbf=N_RBF[basis], n_outputs=n_outputs
    ).to(torch.float64)
    reference.energy_model.load_state_dict(model.energy_model.state_dict())
    return model, reference


def test_state_dict_is_that_of_the_reference():
    """Checkpoints written before the optimisation load into the optimised model, and back."""
    assert_state_dicts_interchange(*model_pair())


@pytest.mark.parametrize("n_outputs", [1, 2])
@pytest.mark.parametrize("chunks", list(CHUNKS))
@pytest.mark.parametrize("basis", list(N_RBF))
@pytest.mark.parametrize("name", ["molecule", "triclinic", "batch"])
def test_energy_forces_stress_equal_the_reference(name, basis, chunks, n_outputs):
    model, reference = model_pair(basis, chunks, n_outputs)
    data = reference_system(name)
    expected = outputs(reference.eval(), data)
    actual = outputs(model.eval(), data)
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert_close(actual[key], expected[key], EXACT[torch.float64], f"{key} ({name}, {basis}, {chunks})")
    assert np.abs(expected["forces"]).max() > 0.1  # not a trivially small case
    if name != "molecule":
        assert np.abs(expected["stress"]).max() > 1e-3


@pytest.mark.parametrize("n_outputs", [1, 2])
@pytest.mark.parametrize("basis", list(N_RBF))
@pytest.mark.parametrize("name", ["molecule", "batch"])
def test_second_derivative_equals_the_reference(name, basis, n_outputs):
    """The training path: d(force and stress loss)/d(parameters) through the autograd force computation."""
    gradients = []
    for model in model_pair(basis, "7-edge chunks", n_outputs):
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


@pytest.mark.parametrize("basis", list(N_RBF))
def test_scripted_model_equals_the_reference(basis):
    model, reference = model_pair(basis, "7-edge chunks", 2)
    data = reference_system("batch")
    expected = outputs(reference.eval(), data)
    actual = outputs(torch.jit.script(model.eval()), data)
    for key in expected:
        assert_close(actual[key], expected[key], EXACT[torch.float64], f"scripted {key}")


@requires_cuda
def test_on_cuda_equals_the_reference_on_cpu():
    model, reference = model_pair("folded", "7-edge chunks", 1)
    data = reference_system("batch")
    expected = outputs(reference.eval(), data)
    on_gpu = model.to("cuda").eval()(data)
    for key, value in on_gpu.items():
        assert_close(value.detach().cpu().numpy(), expected[key], EXACT[torch.float64], f"{key} on cuda")
