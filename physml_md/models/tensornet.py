"""TensorNet: Cartesian rank-2 tensor message passing (Simeon and De Fabritiis, NeurIPS 2023).

Each atom carries, per feature channel, a 3x3 matrix X = I + A + S: I = tr(X)/3 Id (scalar), A = (X - X^T)/2
(antisymmetric: a vector) and S = (X + X^T)/2 - I (symmetric traceless). Rotations act as X -> R X R^T and keep
the three parts apart, so linear channel mixing applied to each part separately, scaling by invariant
functions and matrix products are equivariant operations.

Representation: a matrix is stored by its 9 coordinates in an orthonormal basis of 3x3 matrices (Frobenius
inner product) whose first element spans I, the next 3 span A and the last 5 span S (``component_basis``).
Node features are kept as the three parts' coordinates, I [N, F], A [N, 3, F] and S [N, 5, F]: the
decomposition is free, squared Frobenius norms are sums of squares, channel mixing is a Linear on the last axis,
and matrices ([N, 3, 3, F]) are formed only per atom, for the matrix products.

On a large system the edge-sized tensors ([E, k, F]) set the memory and time of a forward + backward pass (on CPU
much of it the first touch of fresh pages), so few are kept:
- the embedding's per-edge factors are all linear (filter in e(r) phi(r), pair embedding in the species), so its sum
  over edges is taken first, of the [9 x n_rbf] outer products of each edge's geometry and basis per atom and
  neighbour species ([N, 9, n_species n_rbf]); filter and pair embedding then act per atom: no [E, F] tensor;
- an interaction's messages, per part, are one gather of the neighbours' coordinates (component-major, [k, e, F]),
  one product with the filter and one ``scatter_add_`` (its backward keeps only the index; ``index_add`` keeps its
  source): autograd keeps the gathered [E, 9, F] and the filters [E, 3, F] of each interaction;
- on CPU the edges come in chunks of ``chunk_elements`` [edges, F] elements (small: a chunk's [e, 9, F] stays in
  cache); in eval mode with several chunks the messages are ``_RecomputedMessages`` (``recompute_edges``): no
  per-edge tensor kept, each chunk's gathered features and filters made again in the backward pass, the weight's
  gradient only when asked for; second derivatives still possible. Eager mode only (not TorchScript).
The parameters and numbers are those of the plain formulation in tests/models/reference_tensornet.py (equal up to
rounding, tests/models/test_tensornet.py); benchmarks/bench_model.py --reference tensornet compares the two.

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
forces). The pair embedding W [z_i, z_j] = W_c z_i + W_n z_j (+ bias) is computed per species.
"""

import math
from typing import List, Tuple

import torch
from torch import Tensor, nn

from physml_md.models.radial import ExpNormalBasis, cosine_cutoff

_CHUNK_ELEMENTS = 1 << 17  # [edges, F] elements per chunk of edges on CPU: its [e, 9, F] stay in cache


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
    return components_to_matrices(torch.cat([scalar.unsqueeze(1), vector, tensor], dim=1), basis)


def components_to_matrices(components: Tensor, basis: Tensor) -> Tensor:
    """The 9 coordinates [N, 9, F] (I, A, S after one another) -> matrices [N, 3, 3, F]."""
    return torch.matmul(basis.reshape(9, 9).t(), components).reshape(components.shape[0], 3, 3, -1)


def to_parts(matrices: Tensor, basis: Tensor) -> Parts:
    """matrices [N, 3, 3, F] -> coordinates of I, A and S (orthogonal projection onto the basis)."""
    components = torch.matmul(basis.reshape(9, 9), matrices.reshape(matrices.shape[0], 9, -1))
    return components[:, 0], components[:, 1:4], components[:, 4:]


def matrix_product(x: Tensor, y: Tensor) -> Tensor:
    """Channel-wise matrix product of [N, 3, 3, F] matrices: (x y)_ab = sum_c x_ac y_cb."""
    product = x[:, :, :1] * y[:, :1]
    for c in range(1, 3):
        product = torch.addcmul(product, x[:, :, c : c + 1], y[:, c : c + 1])
    return product


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


# per chunk of edges: centre [e], neighbour [e], radial basis times the cutoff [e, n_rbf], edge_components [e, 9],
# row of the edge's (centre, neighbour species) pair in the embedding's per-species sums [e]
EdgeChunk = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


def radial_weight(weight: Tensor) -> Tensor:
    """The weight of a bias-free radial filter as [M, n_rbf, out]: M = 1 (``nn.Linear``: [out, n_rbf]) or M
    stacked members (``StackedLinear``: [M, n_rbf, out])."""
    if weight.dim() == 2:  # nn.Linear: [out, n_rbf]
        return weight.t().unsqueeze(0)
    return weight  # StackedLinear: [M, n_rbf, out]


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

    def forward(self, species: Tensor, chunks: List[EdgeChunk]) -> Parts:
        """The edges in chunks (``EdgeChunk``); the chunk's row = centre * n_species + species of the neighbour."""
        f = self.features
        z = self.species(species)
        n, n_species = z.shape[0], self.species.weight.shape[0]
        # X_i = sum_j g_ij (outer) f(r_ij) (P_c[z_i] + P_n[z_j]) with f = W e(r) phi(r): the per-edge factors are
        # all linear, so X_i = sum_{s, k} G_i[:, s, k] (outer) W_k (P_c[z_i] + P_n[s]) with
        # G_i[:, s, k] = sum over the neighbours j of species s of g_ij e_k(r_ij) phi(r_ij): [9, n_rbf] per atom and
        # neighbour species, summed per edge, and no [E, F]-sized tensor at all
        sums = torch.zeros(n * n_species, 9, self.radial.in_features, dtype=z.dtype, device=z.device)
        for _, _, basis, geometry, rows in chunks:
            e = basis.shape[0]
            index = rows.view(-1, 1, 1).expand(e, 9, basis.shape[1])
            sums.scatter_add_(0, index, geometry.unsqueeze(2) * basis.unsqueeze(1))
        sums = sums.view(n, n_species, 9, -1).transpose(1, 2).reshape(n, 9, -1)  # [N, 9, n_species n_rbf]
        # [M, n_rbf, 3F]; species row s belongs to member s // (n_species / M)
        weight = radial_weight(self.radial.weight)
        weight = weight.repeat_interleave(n_species // weight.shape[0], dim=0)  # [n_species, n_rbf, 3F]
        neighbour = self.pair_neighbour(self.species.weight).unsqueeze(1)  # [n_species, 1, F]
        centre = self.pair_centre(z).unsqueeze(1)  # [N, 1, F]
        parts: List[Tensor] = []
        for p, part_sums in enumerate(torch.split(sums, [1, 3, 5], dim=1)):
            w = weight[:, :, p * f : (p + 1) * f]  # [n_species, n_rbf, F]
            both = torch.cat([w, w * neighbour], dim=-1).reshape(-1, 2 * f)
            summed = torch.matmul(part_sums, both)  # [N, k, 2F]: sum W_k, sum W_k P_n[s]
            parts.append(torch.addcmul(summed[..., f:], centre, summed[..., :f]))
        scalar, vector, tensor = parts[0].squeeze(1), parts[1], parts[2]
        norms = squared_norms((scalar, vector, tensor))
        factors = self.factors(self.norm(norms.reshape(norms.shape[0], -1))).reshape(-1, 3, self.features)
        scalar, vector, tensor = self.mix((scalar, vector, tensor))
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

    def forward(self, parts: Parts, chunks: List[EdgeChunk], recompute: bool = False) -> Parts:
        """The edges in chunks (``EdgeChunk``); ``recompute``: keep no per-edge tensor for the backward pass but
        gather each chunk's features again there (eager mode only: ``_RecomputedMessages``)."""
        x = normalise(parts)
        y = self.mix_in(x)
        if recompute and not torch.jit.is_scripting():
            messages = self._recomputed_messages(y, chunks)
        else:
            # the messages' edge tensors component-major ([k, e, F]): the filter [e, F] of a part scales each
            # component's contiguous [e, F] block
            nodes = (y[0].unsqueeze(0), y[1].transpose(0, 1).contiguous(), y[2].transpose(0, 1).contiguous())
            parts = (torch.zeros_like(nodes[0]), torch.zeros_like(nodes[1]), torch.zeros_like(nodes[2]))
            for centre, neighbour, basis, _, _ in chunks:
                self._add_messages(parts, nodes, centre, neighbour, basis)
            messages = torch.cat(parts, dim=0).transpose(0, 1)
        messages = components_to_matrices(messages, self.basis)
        y_matrices = to_matrices(y, self.basis)
        product = matrix_product(y_matrices, messages) + matrix_product(messages, y_matrices)
        dx = self.mix_out(normalise(to_parts(product, self.basis)))
        dx_matrices = to_matrices(dx, self.basis)
        square = to_parts(matrix_product(dx_matrices, dx_matrices), self.basis)
        return x[0] + dx[0] + square[0], x[1] + dx[1] + square[1], x[2] + dx[2] + square[2]

    def _add_messages(self, messages: Parts, nodes: Parts, centre: Tensor, neighbour: Tensor, basis: Tensor):
        """messages += the chunk's sum_j f(r_ij) Y_j in place; parts component-major: [1 | 3 | 5, N, F]."""
        f = self.features
        weight = radial_weight(self.radial.weight)  # [M, n_rbf, 3F]
        members, n_rbf = weight.shape[0], weight.shape[1]
        # filters [3, e, F] (part-major), each member's block of edges through its own weight
        weight = weight.view(members, n_rbf, 3, f).permute(2, 0, 1, 3)  # [3, M, n_rbf, F]
        filters = torch.matmul(basis.view(1, members, -1, n_rbf), weight).view(3, -1, f)
        index = centre.view(1, -1, 1)
        for k in range(3):
            # scatter_add_ on an expanded index keeps only the index for the backward pass (index_add its source)
            gathered = nodes[k].index_select(1, neighbour)
            messages[k].scatter_add_(1, index.expand(gathered.shape), gathered * filters[k])

    @torch.jit.unused
    def _recomputed_messages(self, y: Parts, chunks: List[EdgeChunk]) -> Tensor:
        """The messages [N, 9, F] by ``_RecomputedMessages`` (autograd keeps no per-edge tensor but the basis)."""
        nodes = torch.cat([y[0].unsqueeze(1), y[1], y[2]], dim=1)  # [N, 9, F]
        centre, neighbour, basis = (torch.cat([chunk[k] for chunk in chunks]) for k in range(3))
        return _RecomputedMessages.apply(nodes, self.radial.weight, basis, centre, neighbour, len(chunks[0][0]))


def _scale(features: Tensor, filters: Tensor, in_place: bool) -> Tensor:
    """[e, 9, F] features (I, A, S coordinates) times the [e, 3, F] filters of their parts."""
    features = features if in_place else features.clone()
    for k, (start, stop) in enumerate(((0, 1), (1, 4), (4, 9))):
        features[:, start:stop].mul_(filters[:, k : k + 1])
    return features


def _will_execute(leaf: Tensor) -> bool:
    return bool(torch._C._will_engine_execute_node(torch.autograd.graph.get_gradient_edge(leaf).node))


class _RecomputedMessages(torch.autograd.Function):
    """M_i = sum_j f(r_ij) Y_j (each part by its filter basis W^T) in chunks of ``size`` edges, none kept for the
    backward pass; that is made of differentiable operations (out of place under create_graph): second derivatives."""

    @staticmethod
    def forward(ctx, nodes: Tensor, weight: Tensor, basis: Tensor, centre: Tensor, neighbour: Tensor, size: int):
        ctx.save_for_backward(nodes, weight, basis, centre, neighbour)
        ctx.size = size
        messages = torch.zeros_like(nodes)
        for start in range(0, basis.shape[0], size):
            filters = torch.matmul(basis[start : start + size], weight.t()).view(-1, 3, nodes.shape[-1])
            gathered = nodes.index_select(0, neighbour[start : start + size])
            messages.index_add_(0, centre[start : start + size], _scale(gathered, filters, True))
        return messages

    @staticmethod
    def backward(ctx, grad: Tensor):
        nodes, weight, basis, centre, neighbour = ctx.saved_tensors
        recorded = torch.is_grad_enabled()  # create_graph
        grad_nodes, grad_basis = torch.zeros_like(nodes), []
        # the weight's gradient only when this backward pass goes on to it (not when only forces are asked for)
        weight_needed = weight.requires_grad
        try:
            weight_needed = weight_needed and (recorded or _will_execute(weight))
        except RuntimeError:  # the weight among the inputs of autograd.grad (torch cannot tell then): needed
            pass
        grad_weight = torch.zeros_like(weight.t())  # [n_rbf, 3F]
        for start in range(0, basis.shape[0], ctx.size):
            stop = start + ctx.size
            chunk, index = basis[start:stop], neighbour[start:stop]
            filters = torch.matmul(chunk, weight.t()).view(-1, 3, nodes.shape[-1])
            grad_gathered = grad.index_select(0, centre[start:stop])
            product = nodes.index_select(0, index)
            product = product * grad_gathered if recorded else product.mul_(grad_gathered)
            grad_filters = torch.cat([product[:, :1], product[:, 1:4].sum(1, True), product[:, 4:].sum(1, True)], 1)
            grad_filters = grad_filters.view(chunk.shape[0], -1)  # [e, 3F]
            addend = _scale(grad_gathered, filters, not recorded)
            grad_nodes = grad_nodes.index_add(0, index, addend) if recorded else grad_nodes.index_add_(0, index, addend)
            if weight_needed:
                grad_weight = grad_weight + torch.matmul(chunk.t(), grad_filters)
            grad_basis.append(torch.matmul(grad_filters, weight))
        return grad_nodes, grad_weight.t() if weight_needed else None, torch.cat(grad_basis), None, None, None


class TensorNet(nn.Module):
    """Energy model: species indices and edge vectors in, raw per-atom outputs out (before shift/scale).

    ``n_outputs`` = 1 gives one raw energy per atom [N]; 2 gives [N, 2] (column 0 the raw energy, column 1 a
    raw charge, both read out of the same MLP). One interaction layer is the recommended depth (README).
    ``chunk_elements`` (an attribute, not a parameter) bounds the edges processed at once on CPU: chunk_elements /
    features edges; 0 processes them all at once (the torch.export file does: its graph may not depend on the
    number of edges). ``recompute_edges`` (default True): in eval mode with several chunks, recompute each chunk's
    messages in the backward pass rather than keep them (see the module).
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
        # an atom's energy reaches message_hops x cutoff: one per interaction, one for the embedding (a neighbour sum)
        self.message_hops = n_interactions + 1
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
        self.chunk_elements = _CHUNK_ELEMENTS
        self.recompute_edges = True
        self.members = 1  # M stacked members (models.stacking): atoms and edges come as M copies, member after member

    def representations(self, species: Tensor, edge_index: Tensor, vectors: Tensor, lengths: Tensor) -> List[Parts]:
        """Coordinates of I [N, F], A [N, 3, F] and S [N, 5, F] after the embedding and after each interaction."""
        chunks = self._edge_chunks(species, edge_index, vectors, lengths)
        x = self.embedding(species, chunks)
        states = [x]
        # recompute the edge tensors in the backward pass rather than keep them: eager inference on CPU
        recompute = self.recompute_edges and not self.training and len(chunks) > 1
        for interaction in self.interactions:
            x = interaction(x, chunks, recompute)
            states.append(x)
        return states

    def _edge_chunks(self, species: Tensor, edge_index: Tensor, vectors: Tensor, lengths: Tensor) -> List[EdgeChunk]:
        """The edges in chunks of chunk_elements / features edges (one chunk off CPU, for stacked members, or with
        chunk_elements 0) with what the layers need from them."""
        radial_basis = self.rbf(lengths) * cosine_cutoff(lengths, self.cutoff).unsqueeze(-1)
        geometry = edge_components(vectors / lengths.unsqueeze(-1), self.basis)
        rows = edge_index[0] * self.embedding.species.weight.shape[0] + species.index_select(0, edge_index[1])
        # stacked members take every edge at once: their filters (StackedLinear) need every member's block of edges
        if vectors.device.type != "cpu" or self.chunk_elements <= 0 or self.members > 1:
            return [(edge_index[0], edge_index[1], radial_basis, geometry, rows)]
        size = max(1, self.chunk_elements // self.features)
        # split, not slicing: its backward pass concatenates the chunks' gradients once
        chunks: List[EdgeChunk] = []
        for index, basis, edge_geometry, edge_rows in zip(
            edge_index.split(size, 1), radial_basis.split(size), geometry.split(size), rows.split(size)
        ):
            chunks.append((index[0], index[1], basis, edge_geometry, edge_rows))
        return chunks

    def set_traceable(self) -> None:
        """All edges in one chunk (``Potential.for_export``): the number of chunks depends on the data."""
        self.chunk_elements = 0

    def forward(self, species: Tensor, edge_index: Tensor, vectors: Tensor, lengths: Tensor) -> Tensor:
        """species [N] (index into the model's species list), edge_index [2,E], vectors [E,3] (r_ij, angstrom),
        lengths [E] -> per-atom outputs [N] (n_outputs = 1) or [N, n_outputs]."""
        x = self.representations(species, edge_index, vectors, lengths)[-1]
        norms = squared_norms(x)
        out = self.readout(self.readout_norm(norms.reshape(norms.shape[0], -1)))
        if self.n_outputs == 1:
            return out.squeeze(-1)
        return out
