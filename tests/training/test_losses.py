import numpy as np
import pytest
import torch

from physml_md.data import keys as K
from physml_md.training.losses import COMPONENTS, component_errors, masked_pair


def _batch():
    # two structures: 2 atoms (energy + forces labelled) and 3 atoms (energy missing, forces labelled)
    batch = {
        K.POSITIONS: torch.zeros(5, 3, dtype=torch.float64),
        K.BATCH: torch.tensor([0, 0, 1, 1, 1]),
        K.N_ATOMS: torch.tensor([2, 3]),
        K.ENERGY: torch.tensor([-4.0, 0.0], dtype=torch.float64),
        K.mask_key(K.ENERGY): torch.tensor([True, False]),
        K.FORCES: torch.arange(15, dtype=torch.float64).reshape(5, 3),
        K.mask_key(K.FORCES): torch.tensor([False, True]),
    }
    outputs = {
        K.ENERGY: torch.tensor([-3.0, 7.0], dtype=torch.float64, requires_grad=True),
        K.FORCES: torch.zeros(5, 3, dtype=torch.float64, requires_grad=True),
    }
    return batch, outputs


def test_masked_rows_are_dropped_and_energy_is_per_atom():
    batch, outputs = _batch()
    prediction, reference = masked_pair("per_system_energy", outputs, batch, per_atom_energy=True)
    assert prediction.tolist() == [-1.5] and reference.tolist() == [-2.0]
    prediction, reference = masked_pair("per_system_energy", outputs, batch, per_atom_energy=False)
    assert prediction.tolist() == [-3.0] and reference.tolist() == [-4.0]
    prediction, reference = masked_pair("per_atom_force", outputs, batch)
    np.testing.assert_array_equal(reference.numpy(), np.arange(6, 15, dtype=float))
    assert prediction.shape == (9,)


def test_losses_are_mean_squared_errors_of_labelled_rows():
    batch, outputs = _batch()
    errors = component_errors(["per_system_energy", "per_atom_force"], outputs, batch, per_atom_energy=True)
    assert errors["per_system_energy"][0].item() == pytest.approx(0.25)
    assert errors["per_atom_force"][0].item() == pytest.approx(np.mean(np.arange(6, 15) ** 2))
    total = errors["per_system_energy"][0] + errors["per_atom_force"][0]
    total.backward()
    # the unlabelled structure gets no gradient
    assert outputs[K.ENERGY].grad.tolist() == [pytest.approx(2 * 0.5 / 2), 0.0]
    assert torch.all(outputs[K.FORCES].grad[:2] == 0)


def test_absent_label_gives_zero_loss_that_keeps_the_graph():
    batch, outputs = _batch()
    errors = component_errors(["per_system_stress", "per_atom_charge"], outputs, batch)
    for loss, prediction, _ in errors.values():
        assert loss.item() == 0.0 and prediction.numel() == 0
        assert loss.requires_grad


def test_every_component_names_a_key():
    assert set(COMPONENTS) == {
        "per_system_energy",
        "per_atom_force",
        "per_system_stress",
        "per_system_dipole_moment",
        "per_system_total_charge",
        "per_atom_charge",
    }
    assert {c.key for c in COMPONENTS.values()} <= set(K.LABEL_KEYS)
