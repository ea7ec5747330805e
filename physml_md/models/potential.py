"""The top-level potential: neighbour list, geometry, per-element shift/scale and autograd forces/stress.

``Potential`` wraps an energy model (species indices and edge vectors -> one raw energy per atom) and is the module
that is exported. ``forward(data)`` (the data dict of ``physml_md.data.keys``) returns energy [B], energies [N],
forces [N,3] and, when any structure is periodic, stress [B,3,3] (ASE's sign and units: (1/V) dE/d(strain),
eV/angstrom^3; zero rows for structures without a volume: non-periodic ones, or a slab with a zero cell vector).

A charge head (``charges=True``: the energy model returns [N, 2], column 1 a raw charge) adds charges [N] (e),
corrected to sum to each structure's ``data["total_charge"]`` [B] (0 when absent): q_i = q~_i + (Q - sum q~) /
n_atoms; total_charge [B]; and dipole [B,3] (e*angstrom) = sum_i q_i r_i over the positions as given (output for a
periodic structure too, where it changes when an atom is replaced by a periodic image). ``coulomb=True`` adds
PhysNet's damped Coulomb energy (``physml_md.models.coulomb``) to the per-atom energies, hence forces and stress.

Conventions: angstrom, eV; ``cell`` rows are the lattice vectors; the strain derivative deforms positions and cell
together as x -> x (1 + eps).
"""

import copy
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from physml_md.data import keys as K
from physml_md.data.elements import CHEMICAL_SYMBOLS, MAX_ATOMIC_NUMBER
from physml_md.data.neighbors import batch_neighbor_list
from physml_md.models.coulomb import DampedCoulomb
from physml_md.models.zbl import ZBLRepulsion

# what Potential.prepare gives Potential.evaluate: positions, numbers, species, cell, pbc, batch, n_atoms,
# edge_index, cell_shifts, total_charge
Inputs = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


class PotentialInputs(nn.Module):
    """What every form of the potential knows before its energy model runs: its species, cutoff and per-element
    shift/scale, and ``prepare``, which checks a data dict and completes it (species indices, batch layout,
    neighbour list). ``Potential`` is one; so is the wrapper around a torch.export program
    (``physml_md.export.program``), which runs ``prepare`` in Python and the traced ``evaluate`` after it."""

    def __init__(self, species: List[int], cutoff: float):
        super().__init__()
        if len(set(species)) != len(species) or not species:
            raise ValueError(f"species must be a non-empty list of distinct atomic numbers, got {species}")
        for z in species:
            if not 1 <= int(z) <= MAX_ATOMIC_NUMBER:
                raise ValueError(f"species: {z} is not an atomic number (1..{MAX_ATOMIC_NUMBER})")
        self.species: List[int] = [int(z) for z in species]
        self.symbols: List[str] = list(CHEMICAL_SYMBOLS)
        self.cutoff = float(cutoff)
        z_to_species = torch.full((MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.long)
        z_to_species[torch.tensor(self.species)] = torch.arange(len(self.species))
        self.register_buffer("z_to_species", z_to_species)
        # atomic energy = raw * scale[species] + shift[species]; shift holds the self-energies (eV); its dtype
        # is the potential's
        self.register_buffer("shift", torch.zeros(len(self.species), dtype=torch.float64))
        self.register_buffer("scale", torch.ones(len(self.species), dtype=torch.float64))

    def _species_index(self, numbers: Tensor) -> Tensor:
        if bool((numbers < 1).any()) or bool((numbers >= self.z_to_species.shape[0]).any()):
            found: List[int] = torch.unique(numbers).tolist()
            raise ValueError("atomic_numbers must lie in 1..118, got " + str(found))
        species = self.z_to_species[numbers]
        if bool((species < 0).any()):
            missing: List[int] = torch.unique(numbers[species < 0]).tolist()
            unknown = [self.symbols[z] for z in missing]
            known = [self.symbols[z] for z in self.species]
            raise ValueError(
                "element(s) "
                + ", ".join(unknown)
                + " not known to this model, which was trained on "
                + ", ".join(known)
                + ": remove them or use a model trained on them"
            )
        return species

    def _batch_layout(self, data: Dict[str, Tensor], n: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """cell [B,3,3], pbc [B,3], batch [N] and n_atoms [B] from the input, with defaults for one structure."""
        dtype = self.shift.dtype
        device = self.shift.device
        if K.CELL in data:
            cell = data[K.CELL].to(device=device, dtype=dtype)
        else:
            cell = torch.zeros(1, 3, 3, dtype=dtype, device=device)
        if cell.dim() == 2:
            cell = cell.unsqueeze(0)
        if K.PBC in data:
            pbc = data[K.PBC].to(device=device, dtype=torch.bool)
        else:
            pbc = torch.zeros(cell.shape[0], 3, dtype=torch.bool, device=device)
        if pbc.dim() == 1:
            pbc = pbc.unsqueeze(0)
        n_structures = cell.shape[0]
        if pbc.shape[0] != n_structures:
            raise ValueError("cell describes " + str(n_structures) + " structures but pbc " + str(pbc.shape[0]))
        if K.BATCH in data:
            batch = data[K.BATCH].to(device=device, dtype=torch.long)
            if n > 1 and bool((batch[1:] < batch[:-1]).any()):
                raise ValueError("batch must be sorted: the atoms of each structure must be contiguous")
            if bool((batch < 0).any()) or bool((batch >= n_structures).any()):
                raise ValueError("batch refers to structures that cell and pbc do not describe")
        else:
            if n_structures != 1:
                raise ValueError("several cells were given but no batch vector: give data['batch']")
            batch = torch.zeros(n, dtype=torch.long, device=device)
        return cell, pbc, batch, torch.bincount(batch, minlength=n_structures)

    def _total_charge(self, data: Dict[str, Tensor], n_structures: int) -> Tensor:
        """data["total_charge"] [B] (e), 0 when absent."""
        dtype = self.shift.dtype
        device = self.shift.device
        if K.TOTAL_CHARGE not in data:
            return torch.zeros(n_structures, dtype=dtype, device=device)
        total = data[K.TOTAL_CHARGE].to(device=device, dtype=dtype).reshape(-1)
        if total.shape[0] != n_structures:
            raise ValueError(
                "total_charge has "
                + str(total.shape[0])
                + " entries for "
                + str(n_structures)
                + " structures: give one total charge (e) per structure, shape [B]"
            )
        return total

    def prepare(self, data: Dict[str, Tensor]) -> Inputs:
        """Check the data dict and complete it: every tensor ``evaluate`` takes, the neighbour list included
        (computed here unless ``data`` carries edge_index and cell_shifts). Raises ValueError on bad input."""
        dtype = self.shift.dtype
        device = self.shift.device
        positions = data[K.POSITIONS]
        if positions.dim() != 2 or positions.shape[1] != 3:
            raise ValueError("positions must have shape [N, 3], got " + str(positions.shape))
        n = positions.shape[0]
        if n == 0:
            raise ValueError("empty structure (no atoms): give at least one atom")
        positions = positions.to(device=device, dtype=dtype).detach()
        if not bool(torch.isfinite(positions).all()):
            raise ValueError(
                "positions contain NaN or infinite values: check the structure (or the MD run that made it)"
            )
        numbers = data[K.ATOMIC_NUMBERS].to(device=device, dtype=torch.long)
        if numbers.shape[0] != n:
            raise ValueError("atomic_numbers has " + str(numbers.shape[0]) + " entries for " + str(n) + " atoms")
        species = self._species_index(numbers)
        cell, pbc, batch, n_atoms = self._batch_layout(data, n)
        if K.EDGE_INDEX in data and K.CELL_SHIFTS in data:
            edge_index = data[K.EDGE_INDEX].to(device=device, dtype=torch.long)
            cell_shifts = data[K.CELL_SHIFTS].to(device=device, dtype=dtype)
        else:
            edge_index, shifts = batch_neighbor_list(positions, cell, pbc, n_atoms, self.cutoff)
            cell_shifts = shifts.to(dtype)
        total_charge = self._total_charge(data, cell.shape[0])
        return positions, numbers, species, cell, pbc, batch, n_atoms, edge_index, cell_shifts, total_charge


class Potential(PotentialInputs):
    __jit_ignored_attributes__ = ["hyperparameters"]

    def __init__(
        self,
        energy_model: nn.Module,
        species: List[int],
        cutoff: float,
        dtype: torch.dtype = torch.float64,
        zbl: bool = False,
        hyperparameters: Dict | None = None,
        charges: bool = False,
        coulomb: bool = False,
    ):
        if coulomb and not charges:
            raise ValueError(
                "coulomb=True needs charges=True: the Coulomb energy acts between the charges the model "
                "predicts; pass charges=True as well, or coulomb=False"
            )
        n_outputs = 2 if charges else 1
        if getattr(energy_model, "n_outputs", 1) != n_outputs:
            raise ValueError(
                f"charges={bool(charges)} needs an energy model with n_outputs={n_outputs}, got "
                f"{getattr(energy_model, 'n_outputs', 1)}: build it with n_outputs={n_outputs} (or use build_model)"
            )
        super().__init__(species, cutoff)
        self.energy_model = energy_model
        self.use_zbl = bool(zbl)
        self.zbl = ZBLRepulsion(self.cutoff)
        self.use_charges = bool(charges)
        self.use_coulomb = bool(coulomb)
        self.coulomb = DampedCoulomb(self.cutoff)
        self.hyperparameters = dict(hyperparameters or {})
        self.to(dtype)

    @torch.jit.unused
    def set_shift_and_scale(self, shift: Dict[int, float], scale: Dict[int, float] | float = 1.0) -> None:
        """Set the per-element shift (self-energies, eV) and scale; elements not in ``shift`` keep 0."""
        for z, value in shift.items():
            self.shift[self.species.index(int(z))] = float(value)
        for index, z in enumerate(self.species):
            self.scale[index] = float(scale[z] if isinstance(scale, dict) else scale)

    @torch.jit.unused
    def cast(self, dtype: torch.dtype) -> "Potential":
        """A copy in ``dtype`` (parameters, buffers and every computation), e.g. to train in float32 and export
        or run MD in float64; this potential is left as it is, and the copy's hyperparameters name its dtype."""
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        result = copy.deepcopy(self).to(dtype)
        result.hyperparameters["dtype"] = str(dtype).removeprefix("torch.")
        return result

    @torch.jit.unused
    def for_export(self) -> "Potential":
        """A copy as torch.export traces it: eval mode, no parameter gradients, a graph independent of the data (each
        submodule with a data-dependent path has ``set_traceable()``: PaiNN, TensorNet, Committee; an energy model
        of your own may define one)."""
        exported = copy.deepcopy(self).eval().requires_grad_(False)
        for module in exported.modules():
            set_traceable = getattr(module, "set_traceable", None)
            if callable(set_traceable):
                set_traceable()
        return exported

    def forward(self, data: Dict[str, Tensor]) -> Dict[str, Tensor]:
        if not torch.is_grad_enabled():
            raise RuntimeError(
                "the potential computes forces by autograd: call it with gradients enabled, not inside "
                "torch.no_grad() or torch.inference_mode() (wrap the call in torch.enable_grad())"
            )
        inputs = self.prepare(data)
        return self.evaluate(*inputs, bool(inputs[4].any()), True)  # inputs[4]: pbc

    def evaluate(
        self,
        positions: Tensor,
        numbers: Tensor,
        species: Tensor,
        cell: Tensor,
        pbc: Tensor,
        batch: Tensor,
        n_atoms: Tensor,
        edge_index: Tensor,
        cell_shifts: Tensor,
        total_charge: Tensor,
        compute_stress: bool,
        check_overlap: bool,
    ) -> Dict[str, Tensor]:
        """Energies, forces (and stress, charges) from checked inputs (``prepare``): no control flow depends on
        the data unless ``check_overlap`` (two atoms at one position raise a ValueError), so that torch.export
        can trace it with ``compute_stress`` fixed."""
        dtype = self.shift.dtype
        device = self.shift.device
        positions = positions.detach().requires_grad_(True)
        n_structures = cell.shape[0]
        displacement = torch.zeros(n_structures, 3, 3, dtype=dtype, device=device)
        if compute_stress:
            displacement.requires_grad_(True)
            deformation = displacement + torch.eye(3, dtype=dtype, device=device)
            strained_positions = torch.bmm(positions.unsqueeze(1), deformation.index_select(0, batch)).squeeze(1)
            strained_cell = torch.bmm(cell, deformation)
        else:
            strained_positions = positions
            strained_cell = cell
        vectors = edge_vectors(strained_positions, strained_cell, batch, edge_index, cell_shifts)
        lengths = torch.linalg.vector_norm(vectors, dim=-1)
        if check_overlap:
            raise_on_overlap(lengths, edge_index)

        energies, charges = self.atomic_energies(
            numbers, species, batch, n_atoms, edge_index, vectors, lengths, total_charge
        )
        energy = torch.zeros(n_structures, dtype=dtype, device=device).index_add(0, batch, energies)

        inputs = [positions, displacement] if compute_stress else [positions]
        grads = torch.autograd.grad([energy.sum()], inputs, create_graph=self.training, allow_unused=True)
        gradient = grads[0]
        forces = -gradient if gradient is not None else torch.zeros_like(positions)
        results: Dict[str, Tensor] = {K.ENERGY: energy, K.ENERGIES: energies, K.FORCES: forces}
        if compute_stress:
            virial = grads[1]
            if virial is None:
                virial = torch.zeros_like(displacement)
            # |a . (b x c)|, not linalg.det: the same number, and an operation AOTInductor compiles
            volume = (cell[:, 0] * torch.linalg.cross(cell[:, 1], cell[:, 2])).sum(-1).abs()
            periodic = pbc.any(dim=1) & (volume > 0.0)
            safe_volume = torch.where(periodic, volume, torch.ones_like(volume))
            stress = virial / safe_volume.view(-1, 1, 1)
            results[K.STRESS] = torch.where(periodic.view(-1, 1, 1), stress, torch.zeros_like(stress))
        if self.use_charges:
            zeros = torch.zeros(n_structures, dtype=dtype, device=device)
            results[K.CHARGES] = charges
            results[K.TOTAL_CHARGE] = zeros.index_add(0, batch, charges)
            results[K.DIPOLE] = torch.zeros(n_structures, 3, dtype=dtype, device=device).index_add(
                0, batch, charges.unsqueeze(-1) * positions
            )
        if not self.training:
            for key in list(results.keys()):
                results[key] = results[key].detach()
        return results

    def atomic_energies(
        self,
        numbers: Tensor,
        species: Tensor,
        batch: Tensor,
        n_atoms: Tensor,
        edge_index: Tensor,
        vectors: Tensor,
        lengths: Tensor,
        total_charge: Tensor,
    ) -> Tuple[Tensor, Tensor]:
        """Per-atom energies [N] (eV) and charges [N] (e; empty without a charge head) from the edge vectors r_ij
        [E, 3] and their lengths [E]: the energy model's output times scale plus shift, with ZBL and Coulomb added.
        The energy path of every form of the potential (``evaluate``; the metatomic model of
        ``physml_md.export.metatomic``, which takes r_ij from the engine's neighbour list); differentiable in
        ``vectors`` and ``lengths``."""
        dtype = self.shift.dtype
        device = self.shift.device
        raw = self.energy_model(species, edge_index, vectors, lengths)
        charges = torch.zeros(0, dtype=dtype, device=device)
        if self.use_charges:
            raw_charges = raw[:, 1]
            raw_total = torch.zeros(n_atoms.shape[0], dtype=dtype, device=device).index_add(0, batch, raw_charges)
            correction = (total_charge - raw_total) / n_atoms.clamp(min=1).to(dtype)
            charges = raw_charges + correction.index_select(0, batch)
            raw = raw[:, 0]
        energies = raw * self.scale[species] + self.shift[species]
        if self.use_zbl:
            energies = energies + self.zbl(numbers, edge_index, lengths, numbers.shape[0])
        if self.use_coulomb:
            energies = energies + self.coulomb(charges, edge_index, lengths)
        return energies, charges


def edge_vectors(positions: Tensor, cell: Tensor, batch: Tensor, edge_index: Tensor, cell_shifts: Tensor) -> Tensor:
    """r_ij = x_j - x_i + cell_shifts @ cell of the edge's structure: [E, 3]."""
    centre, neighbour = edge_index[0], edge_index[1]
    offsets = torch.bmm(cell_shifts.unsqueeze(1), cell.index_select(0, batch.index_select(0, centre))).squeeze(1)
    return positions.index_select(0, neighbour) - positions.index_select(0, centre) + offsets


def raise_on_overlap(lengths: Tensor, edge_index: Tensor) -> None:
    """A ValueError naming two atoms at one position (an edge of length 0), if there are any."""
    if bool((lengths == 0.0).any()):
        overlap: List[int] = edge_index[:, lengths == 0.0][:, 0].tolist()
        raise ValueError(
            "atoms " + str(overlap[0]) + " and " + str(overlap[1]) + " (or a periodic image) sit at the same "
            "position: the structure is broken; remove the duplicate atom"
        )
