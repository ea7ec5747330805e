"""The metatomic file: an exported potential for LAMMPS (``pair_style metatomic``), i-PI, torch-sim and ASE.

``export_potential(model, path, format="metatomic")`` writes a metatomic ``AtomisticModel`` around
``MetatomicPotential``: the engine's systems and full neighbour list in (r_ij, differentiable, angstrom), "energy"
(per atom or system, eV) out through ``Potential.atomic_energies``; forces and virial are the engine's, by
differentiation. A committee adds "energy_uncertainty" (eV): the members' standard deviation (LAMMPS and
metatomic-ase warn above their ``uncertainty_threshold``). Under LAMMPS domain decomposition a rank evaluates its
atoms plus the ghosts within ``interaction_range`` and sends ghost forces back: exact only if ``interaction_range``
is the true receptive field, so a global constraint (a Coulomb head's shared total charge) is refused.
The physml-md metadata is ``metadata().extra["physml_md"]`` (JSON). Needs ``pip install 'physml-md[metatomic]'``.
"""

import copy
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

try:
    from metatensor.torch import Labels, TensorBlock, TensorMap
    from metatomic.torch import (
        AtomisticModel,
        ModelCapabilities,
        ModelEvaluationOptions,
        ModelMetadata,
        ModelOutput,
        NeighborListOptions,
        System,
        load_atomistic_model,
        read_model_metadata,
    )
    from vesin.metatomic import NeighborList
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"metatomic files need metatomic-torch ({exc}): pip install 'physml-md[metatomic]'") from exc

from physml_md.atomic_write import PathLike, atomic_path
from physml_md.export.agreement import file_agreement
from physml_md.export.loading import load_potential
from physml_md.export.metadata import COMPUTED_KEYS, rewrite_zip
from physml_md.models import Potential, build_model
from physml_md.models.committee import Committee
from physml_md.models.potential import raise_on_overlap

ENERGY = "energy"
ENERGY_UNCERTAINTY = "energy_uncertainty"
METADATA_KEY = "physml_md"  # ModelMetadata.extra key of the physml-md metadata (JSON)
LENGTH_UNIT = "angstrom"
ENERGY_UNIT = "eV"


def message_hops(energy_model: nn.Module) -> int:
    """How many neighbour-list hops an atom's energy reaches (its int attribute ``message_hops``: PaiNN and
    TensorNet set theirs; an energy model of your own declares it): an atom's energy depends on the atoms within
    ``hops * cutoff`` of it."""
    hops = getattr(energy_model, "message_hops", None)
    if not isinstance(hops, int) or hops < 1:
        raise ValueError(
            f"cannot tell the receptive field of the energy model {type(energy_model).__name__}: give it an int "
            "attribute message_hops (an atom's energy depends on the atoms within message_hops x cutoff), so that "
            "LAMMPS' ghost shell covers it"
        )
    return hops


def interaction_range(model: Potential) -> float:
    """The receptive field of ``model`` (angstrom): ``message_hops(energy model) * cutoff`` (ZBL reaches one
    cutoff). What a metatomic file declares as ``interaction_range``; LAMMPS makes each rank's ghost shell that
    thick, so a rank's own energies and the forces it sends back are exact."""
    members = list(model.members) if isinstance(model, Committee) else [model]
    return max(message_hops(member.energy_model) for member in members) * float(model.cutoff)


def refuse_global_constraints(model: Potential) -> None:
    """ValueError for what cannot split over domains: a Coulomb energy between charges that share one total
    charge (each charge depends on every atom of the structure)."""
    if model.use_coulomb:
        raise ValueError(
            "this model's Coulomb energy acts between charges constrained to one total charge, which every atom "
            "of the structure shares: that global constraint cannot be split over LAMMPS' domains (MPI ranks), so "
            "the model cannot be exported to metatomic; export it as TorchScript (.pt) for ASE or OpenMM instead"
        )


class _MemberEnergies(Potential):
    """A potential whose forward is its energy path alone (``Potential.atomic_energies``): what the metatomic
    module scripts, without the neighbour list and autograd of ``Potential.forward`` (the engine does both)."""

    def forward(
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
        return self.atomic_energies(numbers, species, batch, n_atoms, edge_index, vectors, lengths, total_charge)


def _energy_path(potential: Potential) -> _MemberEnergies:
    """A copy of ``potential`` (weights, buffers, settings) as a ``_MemberEnergies``."""
    member = copy.deepcopy(potential)
    member.__class__ = _MemberEnergies  # same attributes, another forward
    return member.eval()


class MetatomicPotential(nn.Module):
    """metatomic's model interface around a ``Potential`` or a ``Committee`` (of copies: the model given is left
    as it is). See the module for its outputs."""

    def __init__(self, model: Potential):
        super().__init__()
        refuse_global_constraints(model)
        members = list(model.members) if isinstance(model, Committee) else [model]
        self.members = nn.ModuleList([_energy_path(member) for member in members])
        self.committee = isinstance(model, Committee)
        self.cutoff = float(model.cutoff)
        self.register_buffer("z_to_species", model.z_to_species.clone())
        self.neighbors = NeighborListOptions(cutoff=self.cutoff, full_list=True, strict=True, requestor="physml-md")

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.neighbors]

    def _per_atom_energies(self, system: System) -> Tensor:
        """[n_atoms, n_members] energies (eV) of every atom of ``system``."""
        numbers = system.types.to(torch.long)
        species = self.z_to_species[numbers]
        neighbors = system.get_neighbor_list(self.neighbors)
        vectors = neighbors.values.reshape(-1, 3)
        lengths = torch.linalg.vector_norm(vectors, dim=-1)
        inside = lengths < self.cutoff  # an engine may list pairs a little beyond (a Verlet skin)
        vectors = vectors[inside]
        lengths = lengths[inside]
        edge_index = neighbors.samples.values[inside][:, :2].to(torch.long).t().contiguous()
        raise_on_overlap(lengths, edge_index)  # two atoms at one position: an error, not NaN forces
        n = numbers.shape[0]
        batch = torch.zeros(n, dtype=torch.long, device=numbers.device)
        n_atoms = torch.full((1,), n, dtype=torch.long, device=numbers.device)
        total_charge = torch.zeros(1, dtype=vectors.dtype, device=vectors.device)
        energies: List[Tensor] = []
        for member in self.members:
            energies.append(member(numbers, species, batch, n_atoms, edge_index, vectors, lengths, total_charge)[0])
        return torch.stack(energies, dim=1)

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels],  # noqa: UP045 (metatomic checks this exact annotation)
    ) -> Dict[str, TensorMap]:
        results: Dict[str, TensorMap] = {}
        if len(outputs) == 0 or len(systems) == 0:
            return results
        device = systems[0].positions.device
        per_atom: List[Tensor] = []
        samples: List[Tensor] = []
        for index, system in enumerate(systems):
            per_atom.append(self._per_atom_energies(system))
            atoms = torch.arange(len(system), dtype=torch.int32, device=device)
            samples.append(torch.stack([torch.full_like(atoms, index), atoms], dim=1))
        energies = torch.cat(per_atom)  # [all atoms, members]
        atom_samples = torch.cat(samples)  # [all atoms, 2]: system, atom
        if selected_atoms is not None:
            offsets = torch.zeros(len(systems), dtype=torch.long, device=device)
            for index in range(1, len(systems)):
                offsets[index] = offsets[index - 1] + len(systems[index - 1])
            chosen = selected_atoms.values.to(torch.long)
            rows = offsets[chosen[:, 0]] + chosen[:, 1]
            energies = energies[rows]
            atom_samples = selected_atoms.values.to(torch.int32)
        system_index = atom_samples[:, 0].to(torch.long)
        totals = torch.zeros(len(systems), energies.shape[1], dtype=energies.dtype, device=device)
        totals = totals.index_add(0, system_index, energies)  # [systems, members]
        system_samples = torch.arange(len(systems), dtype=torch.int32, device=device).reshape(-1, 1)
        for name, output in outputs.items():
            if name == "energy":  # ENERGY (TorchScript reads no module-level str)
                mean_atoms = energies.mean(dim=1)
                mean_totals = totals.mean(dim=1)
            elif name == "energy_uncertainty" and self.committee:
                # standard deviation over members (ddof 0, as physml_md.models.committee)
                mean_atoms = (energies - energies.mean(dim=1, keepdim=True)).pow(2).mean(dim=1).sqrt()
                mean_totals = (totals - totals.mean(dim=1, keepdim=True)).pow(2).mean(dim=1).sqrt()
            else:
                raise ValueError("this physml-md model has no output '" + name + "'")
            if output.sample_kind == "atom":
                results[name] = _energy_map(mean_atoms, Labels(["system", "atom"], atom_samples))
            else:
                results[name] = _energy_map(mean_totals, Labels(["system"], system_samples))
        return results


def _energy_map(values: Tensor, samples: Labels) -> TensorMap:
    """One block of energies [samples, 1] with metatomic's "energy" metadata."""
    device = values.device
    block = TensorBlock(
        values=values.reshape(-1, 1),
        samples=samples,
        components=torch.jit.annotate(List[Labels], []),
        properties=Labels(["energy"], torch.zeros(1, 1, dtype=torch.int32, device=device)),
    )
    return TensorMap(Labels(["_"], torch.zeros(1, 1, dtype=torch.int32, device=device)), [block])


def _outputs(committee: bool) -> Dict[str, ModelOutput]:
    outputs = {ENERGY: ModelOutput(unit=ENERGY_UNIT, sample_kind="atom", description="potential energy")}
    if committee:
        outputs[ENERGY_UNCERTAINTY] = ModelOutput(
            unit=ENERGY_UNIT, sample_kind="atom", description="standard deviation of the committee members' energies"
        )
    return outputs


def metatomic_model(model: Potential, document: Dict[str, Any] | None = None) -> AtomisticModel:
    """``model`` as a metatomic ``AtomisticModel`` (not yet scripted), with ``document`` (the physml-md
    metadata) in its ``ModelMetadata.extra``."""
    if not isinstance(model, Potential):
        raise TypeError(f"a metatomic model needs a physml_md.models.Potential, got {type(model).__name__}")
    module = MetatomicPotential(model).eval()
    dtype = str(model.shift.dtype).removeprefix("torch.")
    capabilities = ModelCapabilities(
        outputs=_outputs(module.committee),
        atomic_types=list(model.species),
        interaction_range=interaction_range(model),
        length_unit=LENGTH_UNIT,
        supported_devices=["cuda", "cpu"],  # in order of preference: engines take the first one they have
        dtype=dtype,
    )
    name = model.hyperparameters.get("name") or type(model.members[0] if module.committee else model).__name__
    members = f"a committee of {len(module.members)} " if module.committee else ""
    metadata = ModelMetadata(
        name=f"physml-md {name}",
        description=(
            f"{members}{name} potential trained with physml-md: species {list(model.species)}, cutoff "
            f"{model.cutoff:g} angstrom, {dtype}; energies in eV, lengths in angstrom"
        ),
        references={"implementation": ["https://github.com/physml-md/physml-md"]},
        extra={METADATA_KEY: json.dumps(document or {}, sort_keys=True)},
    )
    return AtomisticModel(module, metadata, capabilities)


class MetatomicEvaluator:
    """A metatomic model as physml-md's engines call a potential: a data dict (positions, atomic_numbers, cell,
    pbc; one structure) in, energy [1], energies [N], forces [N, 3] and (periodic) stress [1, 3, 3] out, forces
    and stress by autograd through the model's own neighbour-list request, as an engine computes them.

    ``selected`` (atom indices) asks for the energies of those atoms only, as a LAMMPS rank does for the atoms it
    owns: ``energy`` is then their sum, ``energies`` theirs alone, and ``forces`` the gradient of that sum for
    every atom given."""

    format = "metatomic"

    def __init__(self, model: Union[AtomisticModel, PathLike]):
        if isinstance(model, (str, Path)):
            model = load_atomistic_model(str(model))
        self.model = model
        self.capabilities = model.capabilities()
        self.dtype = getattr(torch, self.capabilities.dtype)

    def __call__(self, data: Dict[str, Tensor], selected: Sequence[int] | None = None) -> Dict[str, Tensor]:
        positions = data["positions"].detach().to(self.dtype).clone().requires_grad_(True)
        cell = data.get("cell", torch.zeros(3, 3)).detach().to(self.dtype).reshape(3, 3)
        pbc = data.get("pbc", torch.zeros(3, dtype=torch.bool)).reshape(3).to(torch.bool)
        periodic = bool(pbc.any()) and abs(float(torch.linalg.det(cell.to(torch.float64)))) > 0.0
        strain = torch.eye(3, dtype=self.dtype, requires_grad=True)
        system = System(
            types=data["atomic_numbers"].to(torch.int32), positions=positions @ strain, cell=cell @ strain, pbc=pbc
        )
        for options in self.model.requested_neighbor_lists():
            NeighborList(options, LENGTH_UNIT).add_neighbor_list(system)
        atoms = torch.arange(len(system)) if selected is None else torch.as_tensor(selected, dtype=torch.long)
        options = ModelEvaluationOptions(
            length_unit=LENGTH_UNIT,
            outputs={ENERGY: ModelOutput(unit=ENERGY_UNIT, sample_kind="atom")},
            selected_atoms=None
            if selected is None
            else Labels(["system", "atom"], torch.stack([torch.zeros_like(atoms), atoms], dim=1).to(torch.int32)),
        )
        with torch.enable_grad():
            output = self.model([system], options, check_consistency=True)[ENERGY].block()
            energies = output.values.reshape(-1)
            energy = energies.sum()
            gradients = torch.autograd.grad(energy, [positions, strain])
        results = {"energy": energy.detach().reshape(1), "energies": energies.detach(), "forces": -gradients[0]}
        if periodic:
            volume = abs(float(torch.linalg.det(cell.to(torch.float64))))
            results["stress"] = (gradients[1] / volume).reshape(1, 3, 3)
        return results


def read_metatomic_metadata(path: PathLike) -> Dict[str, Any]:
    """The physml-md metadata of a metatomic file (without loading its module)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no metatomic model at {path}")
    extra = read_model_metadata(str(path)).extra
    if METADATA_KEY not in extra:
        raise ValueError(f"{path} is a metatomic model, but not one physml-md exported (no '{METADATA_KEY}' metadata)")
    return json.loads(extra[METADATA_KEY])


def _load_weights(model: nn.Module, state: Dict[str, Tensor]) -> None:
    """``model.load_state_dict(state)`` (strict), leaving out the entries that are non-persistent buffers of
    ``model`` (a scripted module's state dict keeps them: constants the model rebuilds itself)."""
    expected = model.state_dict().keys()
    buffers = {name for name, _ in model.named_buffers()}
    model.load_state_dict({k: v for k, v in state.items() if k in expected or k not in buffers})


def potential_from_export(path: PathLike) -> Tuple[Potential, Dict[str, Any]]:
    """(potential, metadata to carry over) of a physml-md TorchScript export: the model rebuilt from its
    metadata's hyperparameters (``build_model``; a committee member by member) with the weights of its module,
    and the metadata keys that ``build_metadata`` does not compute (training data hash, checkpoints, ...)."""

    exported = load_potential(path)
    if exported.format != "torchscript":
        raise ValueError(
            f"{path} is {exported.format} file; give the TorchScript (.pt) export or the training checkpoint (.ckpt)"
        )
    hyperparameters = dict(exported.metadata.get("hyperparameters") or {})
    state = exported.module.state_dict()
    try:
        if "members" in hyperparameters:
            members = []
            for index, member_hyperparameters in enumerate(hyperparameters["members"]):
                member = build_model(**member_hyperparameters)
                prefix = f"members.{index}."
                _load_weights(member, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
                members.append(member)
            model = Committee(members)
        else:
            model = build_model(**hyperparameters)
        _load_weights(model, state)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"{path}: the model cannot be rebuilt from its metadata ({str(exc).splitlines()[0]}); export the "
            "training checkpoint (.ckpt) instead"
        ) from None
    carried = {k: v for k, v in exported.metadata.items() if k not in COMPUTED_KEYS}
    carried["exported_from"] = str(path)
    return model.eval(), carried


def export_metatomic(
    model: Potential,
    path: PathLike,
    document: Dict[str, Any],
    structures: Sequence[Dict[str, Tensor]] | None = None,
) -> Path:
    """Write ``model`` as a metatomic file at ``path`` (temporary name, then rename), ``document`` (from
    ``physml_md.export.build_metadata``) in its metadata with ``interaction_range`` and the agreement report
    added: the written file, loaded again and run as an engine runs it, against ``model`` (eager) on the
    agreement structures (``physml_md.export.agreement``); over the tolerance nothing is written."""

    path = Path(path)
    document = dict(document)
    document["interaction_range"] = interaction_range(model)
    document["outputs"] = list(_outputs(isinstance(model, Committee)))
    with atomic_path(path) as tmp:
        save(metatomic_model(model, document), tmp)
        document["agreement"] = file_agreement(model, MetatomicEvaluator(tmp), structures, path)
        save(metatomic_model(model, document), tmp)
    return path


def save(model: AtomisticModel, path: Path) -> None:
    """``model.save(path)``, recording that the file needs no TorchScript extension.

    metatomic's ``save`` lists every extension loaded in the process as one the model needs (here vesin-torch's,
    for physml-md's own neighbour list), and an engine then tries to load it (LAMMPS warns when it cannot);
    this module uses none: the engine gives it the neighbour list."""
    model.save(str(path))
    rewrite_zip(path, lambda name: "[]" if name.endswith(("/extra/extensions", "/extra/extensions-deps")) else None)
