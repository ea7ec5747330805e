"""PhysNet's damped, shifted Coulomb energy between predicted charges (Unke and Meuwly, JCTC 15, 3678, 2019).

Over the model's full neighbour list (both i->j and j->i, every pair with r_ij < r_c):

    E = k_e / 2 * sum_{i != j, r_ij < r_c} q_i q_j chi(r_ij)
    chi(r) = phi(r) / sqrt(r^2 + 1) + (1 - phi(r)) * (1/r + r/r_c^2 - 2/r_c)

phi is PhysNet's polynomial switch, 1 at r = 0 and 0 from r_c/2 on (value, first and second derivative
continuous): at short range the 1/r singularity is damped to 1/sqrt(r^2 + 1) (r in angstrom), beyond r_c/2
the shifted Coulomb term remains, whose value and first derivative vanish at r_c. So the energy and the
forces change continuously where an atom crosses the cutoff. Energies in eV, charges in e, lengths in
angstrom. For periodic structures this is a truncated real-space sum, not an Ewald sum.
"""

import torch
from torch import Tensor, nn

from physml_md.models.zbl import COULOMB_EV_ANGSTROM  # e^2 / (4 pi eps0) in eV*angstrom (CODATA 2018)


def coulomb_switch(lengths: Tensor, cutoff: float) -> Tensor:
    """phi(r) = 1 - (10 x^3 - 15 x^4 + 6 x^5) with x = r / (r_c / 2), and 0 for r >= r_c / 2."""
    x = torch.clamp(lengths / (0.5 * cutoff), max=1.0)
    x3 = x * x * x
    return 1.0 - x3 * (10.0 - 15.0 * x + 6.0 * x * x)


def damped_coulomb_kernel(lengths: Tensor, cutoff: float) -> Tensor:
    """chi(r) of the module docstring (1/angstrom) for lengths [E] > 0; 0 for r >= r_c."""
    phi = coulomb_switch(lengths, cutoff)
    shielded = 1.0 / torch.sqrt(lengths * lengths + 1.0)
    shifted = 1.0 / lengths + lengths / (cutoff * cutoff) - 2.0 / cutoff
    inside = (lengths < cutoff).to(lengths.dtype)
    return (phi * shielded + (1.0 - phi) * shifted) * inside


class DampedCoulomb(nn.Module):
    """Per-atom damped Coulomb energies: each directed edge i->j gives k_e/2 q_i q_j chi(r_ij) to atom i."""

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = float(cutoff)
        self.coulomb = COULOMB_EV_ANGSTROM

    def forward(self, charges: Tensor, edge_index: Tensor, lengths: Tensor) -> Tensor:
        """charges [N] (e), edge_index [2,E] (full list), lengths [E] (angstrom) -> energies [N] (eV)."""
        centre, neighbour = edge_index[0], edge_index[1]
        pair = charges.index_select(0, centre) * charges.index_select(0, neighbour)
        pair = pair * damped_coulomb_kernel(lengths, self.cutoff)
        return torch.zeros_like(charges).index_add(0, centre, (0.5 * self.coulomb) * pair)
