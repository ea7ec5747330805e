"""physml_md.models.radial: the radial basis functions."""

import numpy as np
import pytest
import torch

from physml_md.models.radial import ExpNormalBasis, SineBasis, cosine_cutoff
from tests.helpers import assert_close


def test_exponential_normal_basis_peaks_cover_the_cutoff():
    n, cutoff = 8, 5.0
    basis = ExpNormalBasis(n, cutoff)
    alpha = 5.0 / cutoff
    centres = np.linspace(np.exp(-alpha * cutoff), 1.0, n)
    peaks = -np.log(centres) / alpha  # where exp(-alpha r) = mu_k
    assert peaks[0] == pytest.approx(cutoff) and peaks[-1] == pytest.approx(0.0, abs=1e-15)
    values = basis(torch.tensor(peaks)).numpy()
    assert_close(np.diag(values), np.ones(n), 1e-14, "each function is 1 at its peak")
    width = 2.0 * (1.0 - np.exp(-alpha * cutoff)) / n
    expected = np.exp(-(((np.exp(-alpha * peaks)[:, None] - centres[None, :]) / width) ** 2))
    assert_close(values, expected, 1e-14, "exp(-beta (exp(-alpha r) - mu_k)^2)")
    assert 0.7 < values[3, 4] < 0.85  # neighbours overlap: about exp(-1/4) at each other's peaks


def test_cosine_cutoff_and_its_slope_vanish_at_the_cutoff():
    cutoff = 4.0
    r = torch.tensor([0.0, 1.0, 2.0, cutoff - 1e-7, cutoff, cutoff + 0.5], dtype=torch.float64, requires_grad=True)
    values = cosine_cutoff(r, cutoff)
    (slope,) = torch.autograd.grad(values.sum(), r)
    r, values, slope = r.detach().numpy(), values.detach().numpy(), slope.numpy()
    expected = np.where(r < cutoff, 0.5 * (np.cos(np.pi * r / cutoff) + 1.0), 0.0)
    assert_close(values, expected, 1e-15, "0.5 (cos(pi r / r_c) + 1)")
    assert values[0] == 1.0 and values[2] == pytest.approx(0.5, abs=1e-15)
    assert abs(values[3]) < 1e-12 and abs(slope[3]) < 1e-6  # continuous value and force at r_c
    assert values[4] == values[5] == slope[5] == 0.0


def test_sine_basis_against_numpy():
    n, cutoff = 6, 5.0
    r = np.linspace(0.1, cutoff, 37)
    values = SineBasis(n, cutoff)(torch.tensor(r)).numpy()
    expected = np.sin(np.outer(r, np.arange(1, n + 1)) * np.pi / cutoff) / r[:, None]
    assert values.shape == (len(r), n)
    assert_close(values, expected, 1e-14, "sin(n pi r / r_c) / r")
    assert np.abs(values[-1]).max() < 1e-14  # every function is zero at the cutoff
