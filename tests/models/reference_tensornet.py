"""Reference TensorNet, kept for equality tests: physml_md/models/tensornet.py as it was before it was optimised
for memory.

tests/models/test_tensornet.py checks that the optimised model gives the same energy, forces, stress and second
derivatives as this version for the same state dict; benchmarks/bench_model.py times both side by side
(``--reference``). Do not optimise this file: its value is that it is the plain formulation.

TensorNet: Cartesian rank-2 tensor message passing (Simeon and De Fabritiis, NeurIPS 2023).

Each atom carries, per feature channel, a 3x3 matrix X = I + A + S: I = tr(X)/3 Id (scalar), A = (X - X^T)/2
(antisymmetric: a vector) and S = (X + X^T)/2 - I (symmetric traceless). Rotations act as X -> R X R^T and keep
the three parts apart, so linear channel mixing applied to each part separately, scaling by invariant
functions and matrix products are equivariant operations.

Representation: a matrix is stored by its 9 coordinates in an orthonormal basis of 3x3 matrices (Frobenius
inner product) whose first element spans I, the next 3 span A and the last 5 span S (``component_basis``).
Node features are kept as the three parts' coordinates, I [N, F], A [N, 3, F] and S [N, 5, F]: the
decomposition is free, squared Frobenius norms are sums of squares, channel mixing is a Linear on the last axis,
and matrices ([N, 3, 3, F]) are formed only per atom, for the matrix products. Edge tensors ([E, k, F]) are
never sliced (the backward of a slice allocates zeros the size of the whole): per part, one gather, one scaling
by the filter, one scatter. The embedding's sum of per-edge outer products is a batched matmul over each atom's
edges, padded to the largest neighbour count (``neighbour_slots``).

Layers (r_ij = r_j - r_i, u = r_ij / |r_ij|, phi the cosine cutoff, e(r) the exponential-normal basis):
  embedding    Z_ij = W [z_i, z_j] (pair of species embeddings);
               X_i = sum_j phi(r_ij) Z_ij (f_I(r_ij) Id + f_A(r_ij) skew(u) + f_S(r_ij) (u u^T - Id/3)),
               f linear in e(r); then X_i <- g_I W_I I_i + g_A W_A A_i + g_S W_S S_i with per-channel factors g
               from an MLP of the LayerNorm of |I_i|^2, |A_i|^2, |S_i|^2.
  interaction  X <- X / sqrt(1 + |X|^2) (per channel); Y = W_I I + W_A A + W_S S;
               M_i = sum_j phi(r_ij) (f_I(r_ij) I(Y_j) + f_A(r_ij) A(Y_j) + f_S(r_ij) S(Y_j));
               P = Y_i M_i + M_i Y_i, P <- P / sqrt(1 + |P|^2); dX = W'_I I(P) + W'_A A(P) + W'_S S(P);
               X <- X + dX + dX dX.
  readout      per channel |I|^2, |A|^2, |S|^2 -> LayerNorm -> MLP -> one energy per atom (and a raw charge).

O(3): skew(u) changes sign under a reflection while I and S do not, so A has the other parity. The
anticommutator Y M + M Y and the square dX dX combine parts so that every antisymmetric output comes from one
odd and one even factor and every symmetric output from two of the same parity: parities are kept, the
energy is invariant under rotations and reflections.

Choices of ours, where the paper leaves freedom or would not be smooth: the paper normalises by |X| + 1, whose
gradient is undefined at X = 0 (a channel of an atom without neighbours); sqrt(1 + |X|^2) has the same limits
and is smooth everywhere, so forces and their parameter gradients (force training) stay finite. The radial
filters are one bias-free linear map of e(r) phi(r), in the interactions too, where the paper uses an MLP of
e(r): per edge and layer that MLP cost more than the rest of the layer (one interaction, forward + backward, 500
Cu atoms at 5 angstrom, float64, one thread: 161 ms linear, 304 ms with the MLP n_rbf -> F -> 2F -> 3F), and
without a bias every filter is a multiple of phi, whose value and slope vanish at the cutoff (smooth energy and
forces). The pair embedding W [z_i, z_j] is computed per atom (W_c z_i + W_n z_j) and gathered per edge.
"""

import math
from typing import List, Tuple

import torch
from torch import Tensor, nn

from physml_md.models.radial import ExpNormalBasis, cosine_cutoff


def component_basis() -> Tensor:
    """[9, 3, 3] float64: an orthonormal basis of 3x3 matrices: Id/sqrt(3); 3 antisymmetric; 5 symmetric traceless.

    The antisymmetric ones are ordered so that the coordinates of skew(v) (the matrix of v x .) are sqrt(2) v.
    """
    basis = torch.zeros(9, 3, 3, dtype=torch.float64)
    basis[0] = torch.eye(3, dtype=torch.float64) / math.sqrt(3.0)
    h = 1.0 / math.sqrt(2.0)
    for k, (a, b) in enumerate(((2, 1), (0, 2), (1, 0))):  # skew(e_x), skew(e_y), skew(e_z), normalised
        basis[1 + k, a, b], basis[1 + k, b, a] = h, -h
    for k, (a, b) in enumerate(((0, 1), (0, 2), (1, 2))):
        basis[4 + k, a, b], basis[4 + k, b, a] = h, h
    basis[7, 0, 0], basis[7, 1, 1] = h, -h
    basis[8] = torch.diag(torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64)) / math.sqrt(6.0)
    return basis


Parts = Tuple[Tensor, Tensor, Tensor]  # coordinates of I [N, F], A [N, 3, F] and S [N, 5, F]


def to_matrices(parts: Parts, basis: Tensor) -> Tensor:
    """(I [N, F], A [N, 3, F], S [N, 5, F]) coordinates -> matrices [N, 3, 3, F]."""
    scalar, vector, tensor = parts
    components = torch.cat([scalar.unsqueeze(1), vector, tensor], dim=1)
    return torch.matmul(basis.reshape(9, 9).t(), components).reshape(scalar.shape[0], 3, 3, -1)


def to_parts(matrices: Tensor, basis: Tensor) -> Parts:
    """matrices [N, 3, 3, F] -> coordinates of I, A and S (orthogonal projection onto the basis)."""
    components = torch.matmul(basis.reshape(9, 9), matrices.reshape(matrices.shape[0], 9, -1))
    return components[:, 0], components[:, 1:4], components[:, 4:]


def matrix_product(x: Tensor, y: Tensor) -> Tensor:
    """Channel-wise matrix product of [N, 3, 3, F] matrices: (x y)_ab = sum_c x_ac y_cb."""
    return (x.unsqueeze(3) * y.unsqueeze(1)).sum(2)


def squared_norms(parts: Parts) -> Tensor:
    """Squared Frobenius norms of I, A and S per channel, [N, 3, F] (invariants)."""
    scalar, vector, tensor = parts
    return torch.stack([scalar * scalar, (vector * vector).sum(1), (tensor * tensor).sum(1)], dim=1)


def normalise(parts: Parts) -> Parts:
    """X / sqrt(1 + |X|^2) per channel: bounded by 1, smooth at X = 0."""
    scale = torch.rsqrt(1.0 + squared_norms(parts).sum(1))
    return parts[0] * scale, parts[1] * scale.unsqueeze(1), parts[2] * scale.unsqueeze(1)


def edge_components(unit: Tensor, basis: Tensor) -> Tensor:
    """unit vectors [E, 3] -> [E, 9]: the coordinates of Id + skew(u) + (u u^T - Id/3), i.e. of the three parts."""
    x, y, z = unit[:, 0], unit[:, 1], unit[:, 2]
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1)
    outer = (unit.unsqueeze(-1) * unit.unsqueeze(-2)).reshape(-1, 9)
    identity = torch.eye(3, dtype=unit.dtype, device=unit.device).reshape(1, 9)
    matrices = identity + skew + outer - identity / 3.0
    return torch.matmul(matrices, basis.reshape(9, 9).t())


class PartLinear(nn.Module):
    """Channel mixing applied to I, A and S separately (three weight matrices, no bias): equivariant."""

    def __init__(self, features: int):
        super().__init__()
        self.scalar = nn.Linear(features, features, bias=False)
        self.vector = nn.Linear(features, features, bias=False)
        self.tensor = nn.Linear(features, features, bias=False)

    def forward(self, parts: Parts) -> Parts:
        return self.scalar(parts[0]), self.vector(parts[1]), self.tensor(parts[2])


def scatter_parts(parts: Parts, weights: Tensor, index: Tensor, n: int) -> Parts:
    """Per-edge parts (I [E, F], A [E, 3, F], S [E, 5, F]) scaled by weights [E, 3, F] (one factor per part and
    channel) and summed into n atoms by index [E]."""
    scalar_weight, vector_weight, tensor_weight = torch.unbind(weights, dim=1)
    features = weights.shape[-1]
    zeros = torch.zeros(n, 9, features, dtype=weights.dtype, device=weights.device)
    return (
        zeros[:, 0].index_add(0, index, parts[0] * scalar_weight),
        zeros[:, 1:4].index_add(0, index, parts[1] * vector_weight.unsqueeze(1)),
        zeros[:, 4:].index_add(0, index, parts[2] * tensor_weight.unsqueeze(1)),
    )


def neighbour_slots(centre: Tensor, n: int) -> Tuple[Tensor, int]:
    """Row of every edge in a padded [n, width] layout (atom, rank among the atom's edges) and width, the most
    edges of one atom: ``pad`` puts per-edge rows there, so a sum over each atom's edges becomes a batched matmul."""
    sorted_centre, order = torch.sort(centre, stable=True)
    counts = torch.bincount(centre, minlength=n)
    width = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    rank_sorted = torch.arange(centre.shape[0], device=centre.device) - starts.index_select(0, sorted_centre)
    rank = torch.zeros_like(order).index_copy(0, order, rank_sorted)
    return centre * width + rank, width


def pad(values: Tensor, rows: Tensor, n: int, width: int) -> Tensor:
    """[E, C] per-edge values -> [n, width, C], zero where an atom has fewer than width edges."""
    padded = torch.zeros(n * width, values.shape[1], dtype=values.dtype, device=values.device)
    return padded.index_copy(0, rows, values).reshape(n, width, values.shape[1])


class TensorEmbedding(nn.Module):
    """Initial per-atom tensors from the species of each pair and the edge directions and lengths."""

    def __init__(self, n_species: int, features: int, n_rbf: int):
        super().__init__()
        self.features = features
        self.species = nn.Embedding(n_species, features)
        self.pair_centre = nn.Linear(features, features)  # W [z_i, z_j] = W_c z_i + W_n z_j (+ bias)
        self.pair_neighbour = nn.Linear(features, features, bias=False)
        self.radial = nn.Linear(n_rbf, 3 * features, bias=False)  # of the basis times the cutoff: 0 at r_c
        self.norm = nn.LayerNorm(3 * features)
        self.factors = nn.Sequential(
            nn.Linear(3 * features, 2 * features), nn.SiLU(), nn.Linear(2 * features, 3 * features), nn.SiLU()
        )
        self.mix = PartLinear(features)
        self.padded = True  # False: scatter instead (no shape that depends on the data; set for torch.export)

    def forward(self, species: Tensor, edge_index: Tensor, radial_basis: Tensor, geometry: Tensor) -> Parts:
        """radial_basis [E, n_rbf]: the basis times the cutoff; geometry [E, 9]: ``edge_components``."""
        centre, neighbour = edge_index[0], edge_index[1]
        z = self.species(species)
        pair = self.pair_centre(z).index_select(0, centre) + self.pair_neighbour(z).index_select(0, neighbour)
        weights = self.radial(radial_basis).reshape(-1, 3, self.features) * pair.unsqueeze(1)
        # X_i = sum_j geometry_j (outer) weights_j per part, as a batched matmul over each atom's (padded) edges
        # rather than [E, k, F] outer products and a scatter: forward + backward of a model without interactions
        # on 500 Cu atoms at 5 angstrom (float64, one thread) went from 323 to 113 ms
        n = z.shape[0]
        if self.padded:
            rows, width = neighbour_slots(centre, n)
            geometry = pad(geometry, rows, n, width).transpose(1, 2)  # [N, 9, width]
            scalar_weight, vector_weight, tensor_weight = torch.unbind(weights, dim=1)
            parts = (
                torch.bmm(geometry[:, :1], pad(scalar_weight, rows, n, width)).squeeze(1),
                torch.bmm(geometry[:, 1:4], pad(vector_weight, rows, n, width)),
                torch.bmm(geometry[:, 4:], pad(tensor_weight, rows, n, width)),
            )
        else:  # the same sums, per edge and scattered (the padded width depends on the data: torch.export)
            per_edge = (geometry[:, :1], geometry[:, 1:4].unsqueeze(-1), geometry[:, 4:].unsqueeze(-1))
            parts = scatter_parts(per_edge, weights, centre, n)
        norms = squared_norms(parts)
        factors = self.factors(self.norm(norms.reshape(norms.shape[0], -1))).reshape(-1, 3, self.features)
        scalar, vector, tensor = self.mix(parts)
        return scalar * factors[:, 0], vector * factors[:, 1:2], tensor * factors[:, 2:]


class TensorInteraction(nn.Module):
    """One message-passing layer: neighbour tensors scaled by radial filters, Y M + M Y, residual update."""

    def __init__(self, features: int, n_rbf: int):
        super().__init__()
        self.features = features
        self.radial = nn.Linear(n_rbf, 3 * features, bias=False)  # of the basis times the cutoff: 0 at r_c
        self.mix_in = PartLinear(features)
        self.mix_out = PartLinear(features)
        self.register_buffer("basis", component_basis(), persistent=False)

    def forward(self, parts: Parts, edge_index: Tensor, radial_basis: Tensor) -> Parts:
        """radial_basis [E, n_rbf]: the basis times the cutoff."""
        centre, neighbour = edge_index[0], edge_index[1]
        x = normalise(parts)
        y = self.mix_in(x)
        filters = self.radial(radial_basis).reshape(-1, 3, self.features)
        # index_select rather than [] indexing: its backward is a fast index_add, not an accumulating index_put
        neighbours = (y[0].index_select(0, neighbour), y[1].index_select(0, neighbour), y[2].index_select(0, neighbour))
        messages = to_matrices(scatter_parts(neighbours, filters, centre, y[0].shape[0]), self.basis)
        y_matrices = to_matrices(y, self.basis)
        product = matrix_product(y_matrices, messages) + matrix_product(messages, y_matrices)
        dx = self.mix_out(normalise(to_parts(product, self.basis)))
        dx_matrices = to_matrices(dx, self.basis)
        square = to_parts(matrix_product(dx_matrices, dx_matrices), self.basis)
        return x[0] + dx[0] + square[0], x[1] + dx[1] + square[1], x[2] + dx[2] + square[2]


class TensorNet(nn.Module):
    """Energy model: species indices and edge vectors in, raw per-atom outputs out (before shift/scale).

    ``n_outputs`` = 1 gives one raw energy per atom [N]; 2 gives [N, 2] (column 0 the raw energy, column 1 a
    raw charge, both read out of the same MLP). TensorNet's usual depth is 2 interaction layers.
    """

    stackable = True  # its layers act on rows of atoms or edges: a committee stacks its members (models.stacking)

    def __init__(
        self,
        n_species: int,
        cutoff: float,
        features: int = 64,
        n_interactions: int = 2,
        n_rbf: int = 20,
        n_outputs: int = 1,
    ):
        super().__init__()
        if n_outputs not in (1, 2):
            raise ValueError(f"n_outputs must be 1 (energy) or 2 (energy and charge), got {n_outputs}")
        self.cutoff = cutoff
        self.features = features
        self.n_outputs = n_outputs
        self.rbf = ExpNormalBasis(n_rbf, cutoff)
        self.embedding = TensorEmbedding(n_species, features, n_rbf)
        self.interactions = nn.ModuleList([TensorInteraction(features, n_rbf) for _ in range(n_interactions)])
        hidden = max(features // 2, 1)
        self.readout_norm = nn.LayerNorm(3 * features)
        self.readout = nn.Sequential(
            nn.Linear(3 * features, features),
            nn.SiLU(),
            nn.Linear(features, hidden),
            nn.SiLU(),
            nn.Linear(hidden, n_outputs),
        )
        self.register_buffer("basis", component_basis(), persistent=False)

    def representations(self, species: Tensor, edge_index: Tensor, vectors: Tensor, lengths: Tensor) -> List[Parts]:
        """Coordinates of I [N, F], A [N, 3, F] and S [N, 5, F] after the embedding and after each interaction."""
        radial_basis = self.rbf(lengths) * cosine_cutoff(lengths, self.cutoff).unsqueeze(-1)
        geometry = edge_components(vectors / lengths.unsqueeze(-1), self.basis)
        x = self.embedding(species, edge_index, radial_basis, geometry)
        states = [x]
        for interaction in self.interactions:
            x = interaction(x, edge_index, radial_basis)
            states.append(x)
        return states

    def forward(self, species: Tensor, edge_index: Tensor, vectors: Tensor, lengths: Tensor) -> Tensor:
        """species [N] (index into the model's species list), edge_index [2,E], vectors [E,3] (r_ij, angstrom),
        lengths [E] -> per-atom outputs [N] (n_outputs = 1) or [N, n_outputs]."""
        x = self.representations(species, edge_index, vectors, lengths)[-1]
        norms = squared_norms(x)
        out = self.readout(self.readout_norm(norms.reshape(norms.shape[0], -1)))
        if self.n_outputs == 1:
            return out.squeeze(-1)
        return out
