"""ZBL universal screened nuclear repulsion (Ziegler, Biersack, Littmark 1985), as an optional prior.

It keeps atoms apart where training data never went: E_ij = k_e Z_i Z_j / r * phi(r / a_ij) with
a_ij = 0.8854 a_0 / (Z_i^0.23 + Z_j^0.23), multiplied by the model's cosine cutoff so that it
vanishes smoothly at the cutoff.
"""

import torch
from torch import Tensor, nn

from physml_md.models.radial import cosine_cutoff

COULOMB_EV_ANGSTROM = 14.399645478425668  # e^2 / (4 pi eps0) in eV*angstrom (CODATA 2018)
_ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
_ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
_ZBL_LENGTH = 0.8854 * 0.529177210903  # 0.8854 * Bohr radius (CODATA 2018), angstrom


class ZBLRepulsion(nn.Module):
    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = cutoff
        self.coulomb = COULOMB_EV_ANGSTROM
        self.length = _ZBL_LENGTH
        self.register_buffer("coefficients", torch.tensor(_ZBL_COEFFICIENTS, dtype=torch.float64))
        self.register_buffer("exponents", torch.tensor(_ZBL_EXPONENTS, dtype=torch.float64))

    def forward(self, atomic_numbers: Tensor, edge_index: Tensor, lengths: Tensor, n_atoms_total: int) -> Tensor:
        """Per-atom repulsion energies [N] in eV; each directed edge gives half of its pair energy to its centre."""
        z = atomic_numbers.to(lengths.dtype)
        zi = z[edge_index[0]]
        zj = z[edge_index[1]]
        screening_length = self.length / (zi.pow(0.23) + zj.pow(0.23))
        x = (lengths / screening_length).unsqueeze(-1)
        phi = (self.coefficients * torch.exp(-self.exponents * x)).sum(-1)
        pair = self.coulomb * zi * zj / lengths * phi * cosine_cutoff(lengths, self.cutoff)
        out = torch.zeros(n_atoms_total, dtype=lengths.dtype, device=lengths.device)
        return out.index_add(0, edge_index[0], 0.5 * pair)
