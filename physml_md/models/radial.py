"""Radial pieces shared by the potentials: a smooth cutoff and a radial basis."""

import math

import torch
from torch import Tensor, nn


def cosine_cutoff(lengths: Tensor, cutoff: float) -> Tensor:
    """0.5 (cos(pi r / r_c) + 1) inside the cutoff, 0 outside.

    Value and first derivative vanish at r_c, so an atom crossing the cutoff sphere changes the energy
    and the forces continuously.
    """
    inside = (lengths < cutoff).to(lengths.dtype)
    return 0.5 * (torch.cos(lengths * (math.pi / cutoff)) + 1.0) * inside


class SineBasis(nn.Module):
    """PaiNN's radial basis sin(n pi r / r_c) / r for n = 1..n_basis (lengths in angstrom)."""

    def __init__(self, n_basis: int, cutoff: float):
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("frequencies", torch.arange(1, n_basis + 1, dtype=torch.float64) * math.pi / cutoff)

    def forward(self, lengths: Tensor) -> Tensor:
        """lengths [E] -> basis [E, n_basis]"""
        r = lengths.unsqueeze(-1)
        return torch.sin(r * self.frequencies) / r


class ExpNormalBasis(nn.Module):
    """Exponential-normal radial basis exp(-beta (exp(-alpha r) - mu_k)^2), k = 1..n_basis (lengths in angstrom).

    PhysNet's basis (Unke and Meuwly, JCTC 15, 3678, 2019), used by TensorNet: Gaussians in exp(-alpha r), so
    they are narrow at short range and wide at long range. alpha = 5 / r_c scales the distance to the cutoff;
    the centres mu_k are evenly spaced from exp(-alpha r_c) to 1 (function k peaks at r = -ln(mu_k) / alpha,
    from r_c down to 0) and beta = (2 (1 - exp(-alpha r_c)) / n)^-2, so each function is about exp(-1/4) at
    its neighbours' peaks. Fixed, not trained.
    """

    def __init__(self, n_basis: int, cutoff: float):
        super().__init__()
        self.alpha = 5.0 / cutoff
        start = math.exp(-self.alpha * cutoff)
        self.register_buffer("means", torch.linspace(start, 1.0, n_basis, dtype=torch.float64))
        self.beta = (2.0 * (1.0 - start) / n_basis) ** -2

    def forward(self, lengths: Tensor) -> Tensor:
        """lengths [E] -> basis [E, n_basis]"""
        x = torch.exp(-self.alpha * lengths).unsqueeze(-1) - self.means
        return torch.exp(-self.beta * x * x)
