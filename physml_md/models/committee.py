"""A committee: N potentials of one architecture evaluated as one module, their mean and their disagreement.

Members differ in their initial weights (and optionally their bootstrap sample): where they disagree the model is
extrapolating. ``Committee`` is a ``Potential`` (exported, loaded and run like one); one call evaluates every member
with one neighbour list and one backward pass. On small structures (M times the edge count at most ``stack_edges``)
the members' layers are stacked (``physml_md.models.stacking``) and run as one model on M copies of the structure;
larger structures, torch.export files (one graph for every size) and members that cannot be stacked run the members
one after the other, with the same results.

Outputs: the members' mean of every output of a single potential, plus ``energy_std`` [B] (eV), the standard
deviation of the members' energies (ddof = 0), and ``forces_std`` [N] (eV/angstrom), sqrt(mean over members of
|F_member - F_mean|^2).
"""

from typing import Dict, List

import torch
from torch import Tensor, nn

from physml_md.data import keys as K
from physml_md.models.potential import Potential, PotentialInputs
from physml_md.models.stacking import stack_energy_models

__all__ = ["Committee", "committee_statistics"]

# Stacked members are faster while the per-operation overhead dominates, i.e. on small structures; on large ones the
# M-fold tensors cost more than M calls, and memory grows M-fold. Measured (4 members, 64 features, 2 interactions,
# float64, 1 thread, ms per call, stacked / loop): ethanol 0.47 (TensorNet) and 0.58 (PaiNN); periodic Cu, 4 atoms
# (312 edges): 0.82 / 0.86; 32 atoms (2 496 edges): 1.01 / 1.00; 108 atoms: 1.55 / 1.88. So the members are stacked
# while M times the edge count is at most this (``Committee.stack_edges``; 0: never).
STACK_EDGES = 8192


def committee_statistics(outputs: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Every member's outputs, each with a leading member axis [M, ...] -> the members' mean of every output, plus
    ``energy_std`` [B] and ``forces_std`` [N] (see the module)."""
    results = {key: value.mean(0) for key, value in outputs.items()}
    results[K.ENERGY_STD] = (outputs[K.ENERGY] - results[K.ENERGY]).pow(2).mean(0).sqrt()
    results[K.FORCES_STD] = (outputs[K.FORCES] - results[K.FORCES]).pow(2).sum(-1).mean(0).sqrt()
    return results


def _refuse_identical(members: List[Potential]) -> None:
    """ValueError naming two members with the same weights and buffers (shift, scale, ...): their outputs never
    differ, so they add nothing to the mean and pull the spread (the uncertainty) towards 0."""
    states = [member.state_dict() for member in members]
    for j in range(1, len(members)):
        for i in range(j):
            if states[i].keys() == states[j].keys() and all(torch.equal(states[i][k], states[j][k]) for k in states[i]):
                raise ValueError(
                    f"committee members {i} and {j} are identical (the same weights): identical members always "
                    "agree, so the committee's uncertainty could never show; build it from members trained "
                    "with different seeds (physml-md train --committee N), not from one member twice"
                )


class Committee(Potential):
    """N ``Potential`` members with one species list, cutoff, dtype and output set, as one potential.

    ``Committee(members)``: trained potentials (e.g. ``physml_md.export.checkpoint.potential_from_checkpoint`` of
    each member's checkpoint; ``physml-md train`` with ``committee = N`` trains them one by one). For evaluation,
    export and MD. It copies the members' weights when built (into ``stacked``): after changing a member, build it
    again.
    """

    def __init__(self, members: List[Potential]):
        members = list(members)
        if len(members) < 2:
            raise ValueError(
                f"a committee needs at least 2 members, got {len(members)}: train with committee = 2 or more"
            )
        for index, member in enumerate(members):
            if not isinstance(member, Potential) or isinstance(member, Committee):
                raise TypeError(f"committee member {index} must be a physml_md.models.Potential, got {type(member)}")
        first = members[0]
        for index, member in enumerate(members[1:], start=1):
            for what, mine, theirs in (
                ("species", member.species, first.species),
                ("cutoff", member.cutoff, first.cutoff),
                ("dtype", member.shift.dtype, first.shift.dtype),
                ("device", member.shift.device, first.shift.device),
                ("charges", member.use_charges, first.use_charges),
                ("zbl", member.use_zbl, first.use_zbl),
                ("coulomb", member.use_coulomb, first.use_coulomb),
                ("architecture", member.hyperparameters.get("name"), first.hyperparameters.get("name")),
            ):
                if mine != theirs:
                    raise ValueError(
                        f"committee member {index} has {what} {mine}, member 0 has {theirs}: the members of a "
                        f"committee must share species, cutoff, dtype, device, charge head and architecture"
                    )
        _refuse_identical(members)
        PotentialInputs.__init__(self, first.species, first.cutoff)
        self.members = nn.ModuleList(members)
        self.use_zbl = first.use_zbl
        self.use_charges = first.use_charges
        self.use_coulomb = first.use_coulomb
        self.hyperparameters = dict(first.hyperparameters)
        self.hyperparameters["committee"] = len(members)
        self.hyperparameters["members"] = [dict(m.hyperparameters) for m in members]
        self.n_members = len(members)
        self.stack_edges = STACK_EDGES
        # the members as one potential (one entry) when their energy models stack, else empty (a loop over members)
        self.stacked = nn.ModuleList()
        try:
            energy_model = stack_energy_models([member.energy_model for member in members])
        except ValueError:
            energy_model = None
        if energy_model is not None:
            settings = dict(zbl=first.use_zbl, charges=first.use_charges, coulomb=first.use_coulomb)
            stacked = Potential(energy_model, first.species, first.cutoff, first.shift.dtype, **settings)
            stacked.shift = torch.cat([member.shift for member in members])  # [M * S]: species + member * S
            stacked.scale = torch.cat([member.scale for member in members])
            self.stacked.append(stacked)
        self.to(device=first.shift.device, dtype=first.shift.dtype)
        with torch.no_grad():  # the mean shift/scale: what the metadata reports; each member applies its own
            self.shift.copy_(torch.stack([m.shift for m in members]).mean(0))
            self.scale.copy_(torch.stack([m.scale for m in members]).mean(0))

    @torch.jit.unused
    def set_shift_and_scale(self, shift, scale=1.0) -> None:
        raise ValueError(
            "a committee's shift and scale are its members': set them on each member, then build the committee "
            "(Committee(members)) from them"
        )

    @torch.jit.unused
    def cast(self, dtype: torch.dtype) -> "Committee":
        """A copy in ``dtype``, members included (see ``Potential.cast``)."""
        result = super().cast(dtype)
        name = str(dtype).removeprefix("torch.")
        for member, hyperparameters in zip(result.members, result.hyperparameters["members"]):
            member.hyperparameters["dtype"] = name
            hyperparameters["dtype"] = name
        return result

    def set_traceable(self) -> None:
        """The members one after the other at every size (``Potential.for_export``): stacking depends on the size."""
        self.stack_edges = 0

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
        """Every member on the same checked inputs (one neighbour list), then ``committee_statistics``."""
        m = self.n_members
        if self.stack_edges > 0 and m * edge_index.shape[1] <= self.stack_edges:
            for stacked in self.stacked:  # M copies of the structure, member after member (models.stacking)
                n = positions.shape[0]
                member = torch.arange(m, device=positions.device).unsqueeze(1)
                member_of_atom = member.expand(m, n).reshape(-1)
                outputs = stacked.evaluate(
                    positions.repeat(m, 1),
                    numbers.repeat(m),
                    species.repeat(m) + member_of_atom * len(self.species),
                    cell.repeat(m, 1, 1),
                    pbc.repeat(m, 1),
                    batch.repeat(m) + member_of_atom * cell.shape[0],
                    n_atoms.repeat(m),
                    edge_index.repeat(1, m) + (member * n).expand(m, edge_index.shape[1]).reshape(1, -1),
                    cell_shifts.repeat(m, 1),
                    total_charge.repeat(m),
                    compute_stress,
                    check_overlap,
                )
                return committee_statistics({key: value.unflatten(0, [m, -1]) for key, value in outputs.items()})
        inputs = (positions, numbers, species, cell, pbc, batch, n_atoms, edge_index, cell_shifts, total_charge)
        outputs_of: List[Dict[str, Tensor]] = []
        for member in self.members:
            outputs_of.append(member.evaluate(*inputs, compute_stress, check_overlap and len(outputs_of) == 0))
        return committee_statistics({k: torch.stack([out[k] for out in outputs_of]) for k in outputs_of[0].keys()})
