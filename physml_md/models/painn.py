"""PaiNN: polarizable atom interaction neural network (Schütt, Unke, Gastegger, ICML 2021).

Each atom carries scalar features s [N, F] and vector features v [N, 3, F]. Interaction blocks pass
rotation-equivariant messages along the edges of the neighbour list; update blocks mix scalars and
vectors within an atom. A small MLP reads per-atom outputs out of the final scalars: an energy, and
optionally a second channel (a raw charge) from the same MLP. Every message is multiplied by a cosine cutoff,
so the energy is smooth where an atom crosses the cutoff sphere.

The message from neighbour j to atom i, with the filter W = (rbf W_f + b) fcut split into (W_s, W_vv, W_vs)
and the scalar MLP's output phi = (phi_s, phi_vv, phi_vs):

    ds_i = sum_j W_s(r_ij) phi_s[j]
    dv_i = sum_j W_vv(r_ij) (phi_vv v)[j] + (W_vs(r_ij) phi_vs[j]) unit_ij

On a large system the [E, F] and [E, 3, F] edge tensors set the memory and time of a forward + backward pass (on
CPU much of it the first touch of fresh pages), so few are kept, for autograd as well:
- phi_vv v is taken per atom before the gather (one gathered [E, 3, F] tensor, not v[j] and a product);
- the cutoff is folded into the filter's input, (rbf fcut, fcut) @ (W_f, b)^T, so no pre-cutoff filter is kept;
- messages are summed with ``scatter_add_`` on an expanded index (its backward keeps only the index; ``index_add``
  keeps its whole source);
- the vector features start at zero, so the first interaction has no W_vv term and its scalars depend on the
  species alone: W(r_ij) phi[z_j] = (basis(r_ij) one_hot(z_j)) @ (W_f phi[z]) needs no gathered features;
- on CPU the edges come in chunks of ``chunk_elements`` [edges, F] elements (8 MiB in float64): small temporaries,
  reused by the allocator and mostly in cache.

The parameters are those of the plain formulation, kept in tests/models/reference_painn.py, which gives the
same numbers up to rounding (tests/models/test_painn.py); benchmarks/bench_model.py compares the two.
"""

from typing import List, Tuple

import torch
from torch import Tensor, nn

from physml_md.models.radial import SineBasis, cosine_cutoff

_NORM_EPS = 1e-8  # keeps the gradient of |V v| finite at v = 0 (the initial vector features)
_CHUNK_ELEMENTS = 1 << 20  # [edges, F] elements per chunk of edges on CPU

# per chunk of edges: centre index expanded to [e, F], centre index expanded to [e, 3, F], neighbour index [e],
# basis [e, n_rbf + 1] = (rbf fcut, fcut), basis per neighbour species [e, n_species (n_rbf + 1)] (the basis
# itself for one species or when the first interaction is not folded), unit vectors [e, 3, 1]
EdgeChunk = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


class PaiNNInteraction(nn.Module):
    def __init__(self, features: int, n_rbf: int):
        super().__init__()
        self.features = features
        self.scalar_mlp = nn.Sequential(nn.Linear(features, features), nn.SiLU(), nn.Linear(features, 3 * features))
        self.filter = nn.Linear(n_rbf, 3 * features)

    def forward(
        self, s: Tensor, v: Tensor | None, chunks: List[EdgeChunk], species_features: Tensor | None
    ) -> Tuple[Tensor, Tensor]:
        """s [N, F], v [N, 3, F] (None: all zero), the edges in chunks (see ``EdgeChunk``) -> new s, v.

        ``species_features`` [n_species, F] (with v None): s is the embedding of each atom's species, given
        here per species, and each chunk carries the basis per neighbour species; the messages are then
        matrix products of that basis with the filter times phi of each species."""
        f = self.features
        weight = self._filter_weight()
        w_s, w_vv, w_vs = weight[..., :f], weight[..., f : 2 * f], weight[..., 2 * f :]
        ds_sum = torch.zeros_like(s)
        dv_sum = torch.zeros(s.shape[0], 3, f, dtype=s.dtype, device=s.device)
        if species_features is not None:
            phi_s, _, phi_vs = torch.split(self.scalar_mlp(species_features), f, dim=-1)  # v is zero: no phi_vv
            # per member [n_species (n_rbf + 1), F]
            shape = [w_s.shape[0], -1, 1, f]
            m_s = (w_s.unsqueeze(1) * phi_s.reshape(shape)).reshape(w_s.shape[0], -1, f)
            m_vs = (w_vs.unsqueeze(1) * phi_vs.reshape(shape)).reshape(w_s.shape[0], -1, f)
            for centre_s, centre_v, _, _, basis_species, unit in chunks:
                ds_sum.scatter_add_(0, centre_s, member_mm(basis_species, m_s))
                dv_sum.scatter_add_(0, centre_v, member_mm(basis_species, m_vs).unsqueeze(1) * unit)
            return s + ds_sum, dv_sum
        phi_s, phi_vv, phi_vs = torch.split(self.scalar_mlp(s), f, dim=-1)
        p = phi_vv.unsqueeze(1) * v if v is not None else None
        for centre_s, centre_v, neighbour, basis, _, unit in chunks:
            # index_select rather than [] indexing: its backward is an index_add, not an accumulating index_put
            ds = member_mm(basis, w_s) * phi_s.index_select(0, neighbour)
            dvs = (member_mm(basis, w_vs) * phi_vs.index_select(0, neighbour)).unsqueeze(1)
            if p is None:
                dv = dvs * unit
            else:
                dv = member_mm(basis, w_vv).unsqueeze(1) * p.index_select(0, neighbour)
                dv.addcmul_(dvs, unit)  # in place: autograd keeps the operands, not the sum
            ds_sum.scatter_add_(0, centre_s, ds)
            dv_sum.scatter_add_(0, centre_v, dv)
        return s + ds_sum, dv_sum if v is None else v + dv_sum

    def _filter_weight(self) -> Tensor:
        """[M, n_rbf + 1, 3F]: per member, the filter with its bias as one more input row, so that
        (rbf fcut, fcut) @ (W_f, b)^T = (rbf W_f + b) fcut; M = 1 but for stacked members (models.stacking)."""
        weight = self.filter.weight
        bias = self.filter.bias
        assert bias is not None
        if weight.dim() == 2:  # nn.Linear: [3F, n_rbf], bias [3F]
            return torch.cat([weight, bias.unsqueeze(-1)], dim=1).t().unsqueeze(0)
        return torch.cat([weight, bias], dim=1)  # StackedLinear: [M, n_rbf, 3F], bias [M, 1, 3F]


def member_mm(x: Tensor, weight: Tensor) -> Tensor:
    """x [M K, a] (member after member) times weight [M, a, b], block by block -> [M K, b] (M = 1: one mm)."""
    if weight.shape[0] == 1:
        return torch.mm(x, weight[0])
    return torch.bmm(x.reshape(weight.shape[0], -1, x.shape[1]), weight).reshape(-1, weight.shape[2])


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
    column 1 a raw charge, both read out of the same MLP). ``chunk_elements`` (an attribute, not a
    parameter) bounds the edges processed at once on CPU: chunk_elements / features edges; 0 processes them all
    at once (the torch.export file does: its graph may not depend on the number of edges).
    """

    stackable = True  # its layers act on rows of atoms or edges: a committee stacks its members (models.stacking)

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
        self.chunk_elements = _CHUNK_ELEMENTS
        self.members = 1  # M stacked members (models.stacking): atoms and edges come as M copies, member after member
        # fold the species into the first interaction's filter while the basis per neighbour species
        # [E, n_species (n_rbf + 1)] is no larger than two [E, F] tensors (it replaces four)
        self.fold_species = n_species * (n_rbf + 1) <= 2 * features
        self.embedding = nn.Embedding(n_species, features)
        self.rbf = SineBasis(n_rbf, cutoff)
        self.interactions = nn.ModuleList([PaiNNInteraction(features, n_rbf) for _ in range(n_interactions)])
        self.message_hops = n_interactions  # an atom's energy reaches message_hops x cutoff: one per interaction
        self.updates = nn.ModuleList([PaiNNUpdate(features) for _ in range(n_interactions)])
        self.readout = nn.Sequential(nn.Linear(features, features // 2), nn.SiLU(), nn.Linear(features // 2, n_outputs))

    def set_traceable(self) -> None:
        """All edges in one chunk (``Potential.for_export``): the number of chunks depends on the data."""
        self.chunk_elements = 0

    def forward(self, species: Tensor, edge_index: Tensor, vectors: Tensor, lengths: Tensor) -> Tensor:
        """species [N] (index into the model's species list), edge_index [2,E], vectors [E,3] (r_ij, angstrom),
        lengths [E] -> per-atom outputs [N] (n_outputs = 1) or [N, n_outputs]."""
        chunks = self._edge_chunks(species, edge_index, vectors, lengths)
        s = self.embedding(species)
        v: Tensor | None = None
        species_features: Tensor | None = self.embedding.weight if self.fold_species else None
        for interaction, update in zip(self.interactions, self.updates):
            s, v_new = interaction(s, v, chunks, species_features)
            s, v = update(s, v_new)
            species_features = None
        out = self.readout(s)
        if self.n_outputs == 1:
            return out.squeeze(-1)
        return out

    def _edge_chunks(self, species: Tensor, edge_index: Tensor, vectors: Tensor, lengths: Tensor) -> List[EdgeChunk]:
        """The edges in chunks (one chunk off CPU) with what the interactions need from them."""
        m = self.members
        n_species = self.embedding.num_embeddings // m  # stacked: species index = member * n_species + species
        pieces: List[Tuple[Tensor, Tensor, Tensor]] = [(edge_index, vectors, lengths)]
        # stacked members (m > 1) take every edge at once: a committee stacks only small structures
        if vectors.device.type == "cpu" and self.chunk_elements > 0 and m == 1:
            size = max(1, self.chunk_elements // self.features)
            # split, not slicing: its backward pass concatenates the chunks' gradients once
            pieces = []
            for index, vector, length in zip(edge_index.split(size, 1), vectors.split(size), lengths.split(size)):
                pieces.append((index, vector, length))
        chunks: List[EdgeChunk] = []
        for index, vector, length in pieces:
            e = length.shape[0]
            fcut = cosine_cutoff(length, self.cutoff).unsqueeze(-1)
            basis = torch.cat([self.rbf(length) * fcut, fcut], dim=-1)
            basis_species = basis
            if self.fold_species and n_species > 1:
                neighbour_species = species.index_select(0, index[1]) % n_species
                one_hot = nn.functional.one_hot(neighbour_species, n_species).to(basis.dtype)
                basis_species = (one_hot.unsqueeze(-1) * basis.unsqueeze(1)).reshape(e, n_species * basis.shape[1])
            unit = (vector / length.unsqueeze(-1)).unsqueeze(-1)
            centre = index[0]
            centre_s = centre.unsqueeze(-1).expand(e, self.features)
            centre_v = centre.view(-1, 1, 1).expand(e, 3, self.features)
            chunks.append((centre_s, centre_v, index[1], basis, basis_species, unit))
        return chunks
