"""physml_md.integrations.openmm_torch: OpenMMModule converts OpenMM's units, subsets and boxes exactly.

References: the wrapped potential called directly in ASE's units, with the conversion written here from the
SI definitions (1 eV = e * N_A J/mol, 1 nm = 10 angstrom). (OpenMM forces built on it are checked against
ASE in tests/integrations/test_openmm.py.)
"""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from physml_md.export.torchscript import script
from physml_md.integrations.openmm_torch import OpenMMModule
from tests.helpers import inputs, small_model

ELEMENTARY_CHARGE = 1.602176634e-19  # C (exact, SI 2019)
AVOGADRO = 6.02214076e23  # 1/mol (exact, SI 2019)
KJ_PER_MOL_PER_EV = ELEMENTARY_CHARGE * AVOGADRO / 1000.0
ANGSTROM_PER_NM = 10.0


@pytest.fixture(scope="module")
def model():
    return small_model(features=8, n_interactions=1, n_rbf=4, seed=3)


def reference(model, atoms):
    """(energy in kJ/mol, forces in kJ/mol/nm) of the potential itself, called in angstrom and eV."""
    out = model(inputs(atoms))
    return (
        float(out["energy"][0]) * KJ_PER_MOL_PER_EV,
        out["forces"].detach().numpy() * KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM,
    )


def nm(array):
    return torch.tensor(np.asarray(array) / ANGSTROM_PER_NM, dtype=torch.float64)


def test_isolated_molecule_in_openmm_units(model):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    wrapped = OpenMMModule(model, atoms.numbers.tolist(), torch.float64, periodic=False)
    energy, forces = wrapped(nm(atoms.positions))
    ref_energy, ref_forces = reference(model, atoms)
    assert float(energy) == pytest.approx(ref_energy, rel=1e-12)
    np.testing.assert_allclose(forces.numpy(), ref_forces, rtol=1e-12, atol=1e-12 * np.abs(ref_forces).max())
    assert not energy.requires_grad and not forces.requires_grad  # OpenMM gets plain numbers
    # the scripted module (what TorchForce runs) gives the same numbers
    scripted_energy, scripted_forces = script(wrapped)(nm(atoms.positions))
    assert float(scripted_energy) == float(energy)
    np.testing.assert_array_equal(scripted_forces.numpy(), forces.numpy())


def test_periodic_crystal_reads_the_box(model):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 1))
    atoms.numbers[[1, 5]] = 13
    atoms.rattle(0.05, seed=2)
    wrapped = OpenMMModule(model, atoms.numbers.tolist(), torch.float64, periodic=True)
    energy, forces = wrapped(nm(atoms.positions), nm(atoms.cell.array))
    ref_energy, ref_forces = reference(model, atoms)
    assert float(energy) == pytest.approx(ref_energy, rel=1e-12)
    np.testing.assert_allclose(forces.numpy(), ref_forces, rtol=0, atol=1e-12 * np.abs(ref_forces).max())


def test_subset_of_particles_gets_its_forces_and_zeros_elsewhere(model):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=4)
    rng = np.random.default_rng(5)
    n_particles = len(atoms) + 5
    particles = sorted(rng.choice(n_particles, len(atoms), replace=False).tolist())
    everything = rng.normal(scale=5.0, size=(n_particles, 3))  # the MM particles: anywhere
    everything[particles] = atoms.positions
    wrapped = OpenMMModule(
        model, atoms.numbers.tolist(), torch.float64, periodic=False, particles=particles, n_particles=n_particles
    )
    energy, forces = wrapped(nm(everything))
    ref_energy, ref_forces = reference(model, atoms)
    assert float(energy) == pytest.approx(ref_energy, rel=1e-12)
    assert forces.shape == (n_particles, 3)
    np.testing.assert_allclose(forces.numpy()[particles], ref_forces, rtol=0, atol=1e-12 * np.abs(ref_forces).max())
    others = np.setdiff1d(np.arange(n_particles), particles)
    assert np.all(forces.numpy()[others] == 0.0)


def test_unwrap_makes_a_wrapped_molecule_whole(model):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=6)
    box = np.array([[20.0, 0.0, 0.0], [3.0, 18.0, 0.0], [-4.0, 2.0, 19.0]])  # reduced triclinic, angstrom
    shifts = np.random.default_rng(7).integers(-2, 3, size=(len(atoms), 3))
    wrapped_positions = atoms.positions + shifts @ box  # what OpenMM may hand over
    wrapped = OpenMMModule(model, atoms.numbers.tolist(), torch.float64, periodic=False, unwrap=True)
    energy, forces = wrapped(nm(wrapped_positions), nm(box))
    ref_energy, ref_forces = reference(model, atoms)
    assert float(energy) == pytest.approx(ref_energy, rel=1e-12)
    np.testing.assert_allclose(forces.numpy(), ref_forces, rtol=0, atol=1e-10 * np.abs(ref_forces).max())
    # without unwrap the same positions are far apart: another energy
    plain = OpenMMModule(model, atoms.numbers.tolist(), torch.float64, periodic=False)
    assert abs(float(plain(nm(wrapped_positions), nm(box))[0]) - ref_energy) > 1e-3 * abs(ref_energy)


def test_unwrap_errors(model):
    with pytest.raises(ValueError, match="cannot be combined with periodic=True"):
        OpenMMModule(model, [6, 8], torch.float64, periodic=True, unwrap=True)
    wrapped = OpenMMModule(model, [6, 8, 1], torch.float64, periodic=False, unwrap=True)
    box = np.diag([4.0, 4.0, 4.0])
    # nearest images of the first particle: 0, 1.6 and -0.8 angstrom, 0.6 of the box apart
    with pytest.raises(ValueError, match="spans 0.6 of box vector 0, more than half the periodic box"):
        wrapped(nm([[0.0, 0.0, 0.0], [1.6, 0.0, 0.0], [3.2, 0.0, 0.0]]), nm(box))


@pytest.mark.parametrize("span", [0.52, 0.6, 0.83])
def test_the_region_too_large_for_the_box_message_prints_plain_numbers(span):
    """TorchScript's str(0.52) is "0.52000000000000002" (and str(0.99) "0.98999999999999999"): the scripted force
    (what TorchForce runs) wrote "spans 0.52000000000000002 of box vector 0"; both the module and its TorchScript
    form now write at most two decimals."""
    model = small_model(features=8, n_interactions=1, n_rbf=4, seed=3)
    wrapped = OpenMMModule(model, [6, 8, 1], torch.float64, periodic=False, unwrap=True)
    box = torch.eye(3, dtype=torch.float64)  # nm
    # nearest images of the first particle: 0, +0.4 and -(span - 0.4) of box vector 0 apart: the region spans span
    positions = torch.tensor([[0.0, 0.0, 0.0], [0.4, 0.0, 0.0], [1.4 - span, 0.0, 0.0]], dtype=torch.float64)
    for module in (wrapped, script(wrapped)):
        with pytest.raises(Exception, match="the ML region spans") as error:
            module(positions, box)
        message = str(error.value)
        assert f"spans {span:g} of box vector 0, more than half the periodic box" in message, message
