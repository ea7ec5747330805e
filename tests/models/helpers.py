"""Helpers shared by the model tests."""

import numpy as np
from ase.build import bulk, molecule

from physml_md.data.collate import collate
from tests.helpers import inputs


def reference_structures():
    """A rattled ethanol and a rattled, strained (triclinic) Cu/Al cell: where a formulation meets its reference."""
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    rng = np.random.default_rng(7)
    alloy = bulk("Cu", "fcc", a=3.7).repeat((3, 2, 2))
    alloy.numbers[rng.choice(len(alloy), 4, replace=False)] = 13
    alloy.set_cell(alloy.cell.array @ (np.eye(3) + 0.1 * rng.normal(size=(3, 3))), scale_atoms=True)
    alloy.rattle(0.05, seed=3)
    return ethanol, alloy


ETHANOL, TRICLINIC = reference_structures()


def reference_system(name):
    """The model input of "molecule", "triclinic" or "batch" (both structures)."""
    if name == "molecule":
        return inputs(ETHANOL)
    if name == "triclinic":
        return inputs(TRICLINIC)
    return collate([inputs(ETHANOL), inputs(TRICLINIC)])


def reference_kernel(r, cutoff):
    """chi(r) written independently, with PhysNet's switch (smoothstep 0 -> 1 on [0, r_c/2]) complemented."""
    r = np.asarray(r, dtype=np.float64)
    x = r / (cutoff / 2)
    switch = np.where(x < 1, 6 * x**5 - 15 * x**4 + 10 * x**3, 1.0)
    phi = 1.0 - switch
    chi = phi / np.sqrt(r**2 + 1) + switch * (1 / r + r / cutoff**2 - 2 / cutoff)
    return np.where(r < cutoff, chi, 0.0)


def outputs(model, data):
    """Every output of ``model`` on ``data`` as numpy arrays."""
    return {key: value.detach().numpy() for key, value in model(data).items()}


def assert_state_dicts_interchange(model, reference):
    """The optimised energy model has the reference's state-dict keys and shapes, and loads its weights (so
    checkpoints written before an optimisation load after it)."""
    optimised = {key: tuple(value.shape) for key, value in model.energy_model.state_dict().items()}
    plain = {key: tuple(value.shape) for key, value in reference.energy_model.state_dict().items()}
    assert optimised == plain
    model.energy_model.load_state_dict(reference.energy_model.state_dict(), strict=True)
