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
