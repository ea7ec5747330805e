"""physml_md.models.coulomb: PhysNet's damped, shifted Coulomb kernel and module against an independent formula."""

import numpy as np
import pytest
import torch

from physml_md.models.coulomb import COULOMB_EV_ANGSTROM, DampedCoulomb, damped_coulomb_kernel
from tests.helpers import CUTOFF, assert_close
from tests.models.helpers import reference_kernel


def test_coulomb_constant_from_codata():
    elementary_charge = 1.602176634e-19  # C (exact, SI 2019)
    vacuum_permittivity = 8.8541878128e-12  # F/m (CODATA 2018)
    k_e = elementary_charge / (4 * np.pi * vacuum_permittivity) / 1e-10  # eV * angstrom
    assert COULOMB_EV_ANGSTROM == pytest.approx(k_e, rel=1e-12)
    assert COULOMB_EV_ANGSTROM == pytest.approx(14.399645, abs=1e-6)


def test_kernel_against_numpy():
    r = np.concatenate([np.linspace(0.05, 6.0, 200), [CUTOFF / 2, CUTOFF - 1e-9, CUTOFF]])
    chi = damped_coulomb_kernel(torch.tensor(r, dtype=torch.float64), CUTOFF).numpy()
    assert_close(chi, reference_kernel(r, CUTOFF), 1e-12, "chi(r)")
    # short range damped (about 1/sqrt(r^2 + 1), not 1/r = 20 at 0.05 angstrom), beyond rc/2 the shifted Coulomb
    assert chi[0] < 1.01
    far = (r > CUTOFF / 2) & (r < CUTOFF)
    assert_close(chi[far], 1 / r[far] + r[far] / CUTOFF**2 - 2 / CUTOFF, 1e-12, "chi beyond rc/2")


def test_kernel_and_its_derivative_vanish_at_the_cutoff():
    r = torch.tensor([CUTOFF - 1e-6, CUTOFF - 0.5], dtype=torch.float64, requires_grad=True)
    chi = damped_coulomb_kernel(r, CUTOFF)
    (slope,) = torch.autograd.grad(chi.sum(), r)
    chi = chi.detach()
    assert abs(float(chi[0])) < 1e-12 and abs(float(slope[0])) < 1e-6
    assert float(chi[1]) > 1e-3 and abs(float(slope[1])) > 1e-3  # and both are not zero everywhere


def test_damped_coulomb_module_on_two_point_charges():
    coulomb = DampedCoulomb(CUTOFF)
    charges = torch.tensor([0.7, -0.4], dtype=torch.float64)
    edge_index = torch.tensor([[0, 1], [1, 0]])
    for r in (0.8, 3.1):
        lengths = torch.tensor([r, r], dtype=torch.float64)
        energies = coulomb(charges, edge_index, lengths).numpy()
        expected = 14.399645478425668 * 0.7 * -0.4 * reference_kernel(r, CUTOFF)
        assert_close(energies.sum(), expected, 1e-12, f"pair energy at {r} angstrom")
        assert_close(energies[0], energies[1], 1e-15, "each atom gets half the pair energy")
