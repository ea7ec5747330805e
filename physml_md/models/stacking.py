"""Several energy models of one architecture as one: each layer holds every member's weights, stacked.

M small models called one after the other cost M times the per-operation overhead that dominates them on
molecules; stacked, they run as one model on M copies of the structure, member after member (atoms 0..N-1 are
member 0's copy, N..2N-1 member 1's; edges likewise): every operation runs once, on M times the rows. This needs
energy models whose layers act on rows of atoms or edges (``stackable = True``; one with a ``members`` attribute is
told M). ``nn.Linear`` becomes ``StackedLinear`` (rows [M * K, ..., in] viewed as [M, K..., in], one batched
matmul), ``nn.LayerNorm`` ``StackedLayerNorm`` (normalised, then each block scaled by its member's weight and bias),
and ``nn.Embedding`` holds the members' tables one after the other ([M * S, F]; the caller offsets each copy's
species indices by member * S). Every other module must have no parameters, and the same buffers in every member.
"""

import copy
from typing import List

import torch
from torch import Tensor, nn

__all__ = ["StackedLinear", "StackedLayerNorm", "stack_energy_models"]


class StackedLinear(nn.Module):
    """M ``nn.Linear`` layers; input rows [M * K, ..., in], member m's rows the m-th block of K."""

    def __init__(self, layers: List[nn.Linear]):
        super().__init__()
        self.members = len(layers)
        self.in_features = layers[0].in_features
        self.out_features = layers[0].out_features
        self.weight = nn.Parameter(torch.stack([layer.weight.detach().t() for layer in layers]))  # [M, in, out]
        bias = None
        if layers[0].bias is not None:
            bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]).unsqueeze(1))  # [M, 1, out]
        self.register_parameter("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        shape = list(x.shape[:-1]) + [self.out_features]
        rows = x.reshape(self.members, -1, self.in_features)
        bias = self.bias
        if bias is not None:
            out = torch.baddbmm(bias, rows, self.weight)
        else:
            out = torch.bmm(rows, self.weight)
        return out.reshape(shape)


class StackedLayerNorm(nn.Module):
    """M ``nn.LayerNorm`` layers over the last axis; rows laid out as for ``StackedLinear``."""

    def __init__(self, layers: List[nn.LayerNorm]):
        super().__init__()
        self.members = len(layers)
        self.normalized_shape: List[int] = list(layers[0].normalized_shape)
        if len(self.normalized_shape) != 1:
            raise ValueError(f"only LayerNorm over the last axis can be stacked, got {self.normalized_shape}")
        self.eps = float(layers[0].eps)
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]).unsqueeze(1))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]).unsqueeze(1))

    def forward(self, x: Tensor) -> Tensor:
        normalised = nn.functional.layer_norm(x, self.normalized_shape, None, None, self.eps)
        rows = normalised.reshape(self.members, -1, self.normalized_shape[0])
        return (rows * self.weight + self.bias).reshape(x.shape)


def _stacked_module(modules: List[nn.Module], where: str) -> nn.Module | None:
    """The stacked form of one layer of every member, or None for a layer without parameters of its own."""
    first = modules[0]
    for index, module in enumerate(modules[1:], start=1):
        if type(module) is not type(first):
            kind = type(first).__name__
            raise ValueError(f"{where}: member {index} has a {type(module).__name__}, member 0 a {kind}")
        mine = {name: p.shape for name, p in module.named_parameters(recurse=False)}
        theirs = {name: p.shape for name, p in first.named_parameters(recurse=False)}
        if mine != theirs:
            raise ValueError(f"{where}: member {index}'s parameters {mine} differ from member 0's {theirs}")
        buffers = zip(module.named_buffers(recurse=False), first.named_buffers(recurse=False))
        for (name, buffer), (_, reference) in buffers:
            if buffer.shape != reference.shape or not torch.equal(buffer, reference):
                raise ValueError(f"{where}: buffer {name} of member {index} differs from member 0's")
    if isinstance(first, nn.Linear):
        return StackedLinear(modules)
    if isinstance(first, nn.LayerNorm):
        return StackedLayerNorm(modules)
    if isinstance(first, nn.Embedding):
        stacked = copy.deepcopy(first)
        stacked.weight = nn.Parameter(torch.cat([module.weight.detach() for module in modules]))
        stacked.num_embeddings = stacked.weight.shape[0]
        return stacked
    if any(True for _ in first.parameters(recurse=False)):
        raise ValueError(f"{where}: a {type(first).__name__} has parameters of its own and cannot be stacked")
    return None


def stack_energy_models(models: List[nn.Module]) -> nn.Module:
    """One energy model that evaluates every model of ``models`` (one architecture, same sizes) on its own copy
    of the structure (see the module). Raises ValueError when they cannot be stacked (an architecture whose
    ``stackable`` is not True, different sizes or buffers)."""
    first = models[0]
    if not getattr(first, "stackable", False):
        raise ValueError(f"{type(first).__name__} energy models cannot be stacked (its stackable is not True)")
    stacked = copy.deepcopy(first)
    members = [dict(model.named_modules()) for model in models]
    for name, _ in list(first.named_modules()):
        replacement = _stacked_module([modules[name] for modules in members], name or "energy model")
        if replacement is None:
            continue
        if not name:
            raise ValueError(f"a {type(first).__name__} has parameters of its own and cannot be stacked")
        parent_name, _, child = name.rpartition(".")
        setattr(stacked.get_submodule(parent_name), child, replacement)
    if hasattr(stacked, "members"):  # a model that needs to know M (PaiNN: its species count, its edge chunks)
        stacked.members = len(models)
    return stacked
