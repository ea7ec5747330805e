"""physml_md/models/stacking.py: M members' layers as one, each block of rows through its own member's weights
(float64, against the members run one by one)."""

import pytest
import torch
from ase.build import molecule
from torch import nn

from physml_md.models import MODEL_NAMES, build_model
from physml_md.models.committee import Committee
from physml_md.models.stacking import StackedLayerNorm, StackedLinear, stack_energy_models
from tests.helpers import inputs

SPECIES = ["H", "C", "O"]


def energy_models(arch, n=3, **kwargs):
    options = {"features": 8, "n_interactions": 2, "n_rbf": 4, "cutoff": 4.0, **kwargs}
    return [build_model(arch, species=SPECIES, seed=seed, **options).energy_model.eval() for seed in range(n)]


@pytest.mark.parametrize("bias", [True, False])
def test_stacked_linear_runs_each_block_of_rows_through_its_member(bias):
    torch.manual_seed(0)
    layers = [nn.Linear(5, 7, bias=bias).double() for _ in range(3)]
    stacked = StackedLinear(layers)
    x = torch.randn(3 * 4, 2, 5, dtype=torch.float64)  # 4 rows of [2, 5] per member
    expected = torch.cat([layer(block) for layer, block in zip(layers, x.split(4))])
    torch.testing.assert_close(stacked(x), expected, rtol=1e-14, atol=1e-14)
    assert stacked(x).shape == (12, 2, 7)


def test_stacked_layer_norm_runs_each_block_of_rows_through_its_member():
    torch.manual_seed(0)
    layers = [nn.LayerNorm(6).double() for _ in range(2)]
    for layer in layers:  # not the initial ones and zeros
        nn.init.normal_(layer.weight)
        nn.init.normal_(layer.bias)
    stacked = StackedLayerNorm(layers)
    x = torch.randn(2 * 5, 6, dtype=torch.float64)
    expected = torch.cat([layer(block) for layer, block in zip(layers, x.split(5))])
    torch.testing.assert_close(stacked(x), expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_stacked_model_gives_every_member_output_on_its_copy(arch):
    models = energy_models(arch)  # PaiNN's: 3 species, 4 radial functions, 8 features: its species-folded path
    stacked = stack_energy_models(models)
    data = inputs(molecule("CH3CH2OH"))
    potential = build_model(arch, species=SPECIES, features=8, n_interactions=2, n_rbf=4, cutoff=4.0)
    _, _, species, *_, edge_index, cell_shifts, _ = potential.prepare(data)
    positions = data["positions"].to(torch.float64)
    vectors = positions[edge_index[1]] - positions[edge_index[0]]
    lengths = vectors.norm(dim=-1)
    m, n, e = len(models), positions.shape[0], lengths.shape[0]
    member = torch.arange(m).repeat_interleave(n)
    out = stacked(
        species.repeat(m) + member * len(SPECIES),
        edge_index.repeat(1, m) + (torch.arange(m) * n).repeat_interleave(e),
        vectors.repeat(m, 1),
        lengths.repeat(m),
    )
    expected = torch.cat([model(species, edge_index, vectors, lengths) for model in models])
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(expected[:n], expected[n : 2 * n])  # the members differ


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_committee_stacks_its_members(arch):
    committee = Committee([build_model(arch, species=SPECIES, seed=seed, features=8, n_rbf=4) for seed in range(2)])
    assert len(committee.stacked) == 1


def test_refuses_what_cannot_be_stacked():
    with pytest.raises(ValueError, match="Linear energy models cannot be stacked"):
        stack_energy_models([nn.Linear(2, 2), nn.Linear(2, 2)])
    wider = energy_models("tensornet", n=1)[0]
    with pytest.raises(ValueError, match="member 1's parameters"):
        stack_energy_models([energy_models("tensornet", n=1, features=4)[0], wider])
    with pytest.raises(ValueError, match="Bilinear has parameters of its own"):

        class Odd(nn.Module):
            stackable = True

            def __init__(self):
                super().__init__()
                self.layer = nn.Bilinear(2, 2, 2)

        stack_energy_models([Odd(), Odd()])
