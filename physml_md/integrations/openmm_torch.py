"""``OpenMMModule``: the exported potential in OpenMM's units (nm, kJ/mol), run by every OpenMM backend.

Periodicity: ``periodic=True``: periodic in OpenMM's box; ``periodic=False``: isolated, no box; with
``unwrap=True``: an isolated cluster in a periodic MM system, made whole first (each particle's image nearest
the first particle; the cluster must span less than half the box along each box vector, else ValueError).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from physml_md.data import keys as K
from physml_md.units import EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM

__all__ = ["OpenMMModule"]


class OpenMMModule(torch.nn.Module):
    """forward(positions [nm], boxvectors [nm] or None) -> (energy [kJ/mol], forces [kJ/mol/nm]).

    module: the exported (scripted) potential. atomic_numbers: of the particles the model sees.
    particles: indices of those particles among all of OpenMM's (None: positions hold exactly them). With
    particles, the returned forces cover all ``n_particles`` (zero outside the ML region), as TorchForce wants.
    total_charge: the system's charge in e, given to models with a charge head.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        atomic_numbers: List[int],
        dtype: torch.dtype,
        periodic: bool,
        unwrap: bool = False,
        particles: List[int] | None = None,
        n_particles: int = 0,
        total_charge: float | None = None,
    ):
        super().__init__()
        if unwrap and periodic:
            raise ValueError("unwrap makes an isolated cluster whole; it cannot be combined with periodic=True")
        self.model = module
        self.dtype = dtype
        self.periodic = periodic
        self.unwrap = unwrap
        self.use_subset = particles is not None
        self.n_particles = n_particles if particles is not None else len(atomic_numbers)
        self.use_charge = total_charge is not None
        self.register_buffer("atomic_numbers", torch.tensor(atomic_numbers, dtype=torch.long))
        self.register_buffer("particles", torch.tensor(particles if particles is not None else [], dtype=torch.long))
        self.register_buffer("total_charge", torch.tensor([total_charge or 0.0], dtype=dtype))
        self.register_buffer("pbc", torch.tensor([[periodic, periodic, periodic]], dtype=torch.bool))
        self.length_factor = NM_TO_ANGSTROM
        self.energy_factor = EV_TO_KJ_PER_MOL
        self.force_factor = EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM

    def forward(self, positions: Tensor, boxvectors: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:  # noqa: UP045 (TorchScript)
        device = self.atomic_numbers.device
        positions = positions.to(device=device, dtype=self.dtype)
        if self.use_subset:
            positions = positions.index_select(0, self.particles)
        positions = positions * self.length_factor
        cell = torch.zeros(3, 3, dtype=self.dtype, device=device)
        if boxvectors is not None:
            box = boxvectors.to(device=device, dtype=self.dtype) * self.length_factor
            if self.periodic:
                cell = box
            elif self.unwrap:
                positions = self._make_whole(positions, box)
        data: Dict[str, Tensor] = {
            K.POSITIONS: positions,
            K.ATOMIC_NUMBERS: self.atomic_numbers,
            K.CELL: cell.unsqueeze(0),
            K.PBC: self.pbc,
        }
        if self.use_charge:
            data[K.TOTAL_CHARGE] = self.total_charge
        out = self.model(data)
        energy = out[K.ENERGY].sum() * self.energy_factor
        forces = out[K.FORCES].detach() * self.force_factor
        if self.use_subset:
            full = torch.zeros(self.n_particles, 3, dtype=forces.dtype, device=device)
            forces = full.index_copy(0, self.particles, forces)
        return energy.detach(), forces

    @staticmethod
    def _make_whole(positions: Tensor, box: Tensor) -> Tensor:
        """Each particle's periodic image nearest the first particle (OpenMM boxes are reduced triclinic);
        ValueError when the cluster spans half the box or more along a box vector (the image would be ambiguous)."""
        delta = positions - positions[0]
        fractional = torch.linalg.solve(box.transpose(0, 1), delta.transpose(0, 1)).transpose(0, 1)
        shifts = torch.round(fractional)
        inside = fractional - shifts
        extent = inside.max(dim=0).values - inside.min(dim=0).values
        if bool((extent >= 0.5).any()):
            axis = int(torch.argmax(extent))
            # two decimals by hand: TorchScript's str(0.52) is "0.52000000000000002" (and it has no format specs)
            hundredths = int(torch.round(extent[axis] * 100.0))
            last = hundredths % 10
            raise ValueError(
                "the ML region spans "
                + str(hundredths // 100)
                + "."
                + str(hundredths % 100 // 10)
                + ("" if last == 0 else str(last))
                + " of box vector "
                + str(axis)
                + ", more than half the periodic box: as an isolated cluster in a periodic system it is made whole "
                "from each particle's image nearest the first, which is ambiguous beyond half the box; enlarge the "
                "box to more than twice the region's size, or evaluate the region as periodic (periodic=True)"
            )
        return positions - shifts @ box
