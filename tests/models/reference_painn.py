"""Reference PaiNN, kept for equality tests: physml_md/models/painn.py as it was before it was optimised.

tests/models/test_painn.py checks that the optimised model gives the same energy, forces, stress and second
derivatives as this straightforward version for the same state dict; benchmarks/bench_model.py times both
side by side. Do not optimise this file: its value is that it is the plain, obviously correct formulation.

PaiNN: polarizable atom interaction neural network (Schütt, Unke, Gastegger, ICML 2021).

Each atom carries scalar features s [N, F] and vector features v [N, 3, F]. Interaction blocks pass
rotation-equivariant messages along the edges of the neighbour list; update blocks mix scalars and
vectors within an atom. A small MLP reads per-atom outputs out of the final scalars: an energy, and
optionally a second channel (a raw charge) from the same MLP. Every message
is multiplied by a cosine cutoff, so the energy is smooth where an atom crosses the cutoff sphere.
"""

import torch
from torch import Tensor, nn

from physml_md.models.radial import SineBasis, cosine_cutoff

_NORM_EPS = 1e-8  # keeps the gradient of |V v| finite at v = 0 (the initial vector features)


class PaiNNInteraction(nn.Module):
    def __init__(self, features: int, n_rbf: int):
        super().__init__()
        self.features = features
        self.scalar_mlp = nn.Sequential(nn.Linear(features, features), nn.SiLU(), nn.Linear(features, 3 * features))
        self.filter = nn.Linear(n_rbf, 3 * features)

    def forward(self, s: Tensor, v: Tensor, edge_index: Tensor, rbf: Tensor, fcut: Tensor, unit: Tensor):
        centre, neighbour = edge_index[0], edge_index[1]
        # index_select rather than [] indexing: its backward is a fast index_add, not an accumulating index_put
        x = self.scalar_mlp(s).index_select(0, neighbour) * (self.filter(rbf) * fcut.unsqueeze(-1))
        ds, dvv, dvs = torch.split(x, self.features, dim=-1)
        dv = dvv.unsqueeze(1) * v.index_select(0, neighbour) + dvs.unsqueeze(1) * unit.unsqueeze(-1)
        s = s + torch.zeros_like(s).index_add(0, centre, ds)
        v = v + torch.zeros_like(v).index_add(0, centre, dv)
        return s, v


class PaiNNUpdate(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.features = features
        self.norm_eps = _NORM_EPS
        self.u = nn.Linear(features, features, bias=False)
        self.v = nn.Linear(features, features, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * features, features), nn.SiLU(), nn.Linear(features, 3 * features))

    def forward(self, s: Tensor, v: Tensor):
        uv = self.u(v)
        vv = self.v(v)
        vv_norm = torch.sqrt((vv * vv).sum(dim=1) + self.norm_eps)
        a_vv, a_sv, a_ss = torch.split(self.mlp(torch.cat([s, vv_norm], dim=-1)), self.features, dim=-1)
        s = s + a_sv * (uv * vv).sum(dim=1) + a_ss
        v = v + a_vv.unsqueeze(1) * uv
        return s, v


class PaiNN(nn.Module):
    """Energy model: species indices and edge vectors in, raw per-atom outputs out (before shift/scale).

    ``n_outputs`` = 1 gives one raw energy per atom [N]; 2 gives [N, 2] (column 0 the raw energy,
    column 1 a raw charge, both read out of the same MLP).
    """

    def __init__(
        self,
        n_species: int,
        cutoff: float,
        features: int = 64,
        n_interactions: int = 3,
        n_rbf: int = 20,
        n_outputs: int = 1,
    ):
        super().__init__()
        if n_outputs not in (1, 2):
            raise ValueError(f"n_outputs must be 1 (energy) or 2 (energy and charge), got {n_outputs}")
        self.cutoff = cutoff
        self.features = features
        self.n_outputs = n_outputs
        self.embedding = nn.Embedding(n_species, features)
        self.rbf = SineBasis(n_rbf, cutoff)
        self.interactions = nn.ModuleList([PaiNNInteraction(features, n_rbf) for _ in range(n_interactions)])
        self.updates = nn.ModuleList([PaiNNUpdate(features) for _ in range(n_interactions)])
        self.readout = nn.Sequential(nn.Linear(features, features // 2), nn.SiLU(), nn.Linear(features // 2, n_outputs))

    def forward(self, species: Tensor, edge_index: Tensor, vectors: Tensor, lengths: Tensor) -> Tensor:
        """species [N] (index into the model's species list), edge_index [2,E], vectors [E,3] (r_ij, angstrom),
        lengths [E] -> per-atom outputs [N] (n_outputs = 1) or [N, n_outputs]."""
        s = self.embedding(species)
        v = torch.zeros(s.shape[0], 3, self.features, dtype=s.dtype, device=s.device)
        rbf = self.rbf(lengths)
        fcut = cosine_cutoff(lengths, self.cutoff)
        unit = vectors / lengths.unsqueeze(-1)
        for interaction, update in zip(self.interactions, self.updates):
            s, v = interaction(s, v, edge_index, rbf, fcut, unit)
            s, v = update(s, v)
        out = self.readout(s)
        if self.n_outputs == 1:
            return out.squeeze(-1)
        return out
