"""physml_md/models/build.py: a model by name, with its species, cut-off and dtype checked on the way in."""

import pytest
import torch

from physml_md.models import MAX_CUTOFF, MODEL_NAMES, build_model, check_cutoff, resolve_dtype, to_atomic_numbers


def test_species_as_symbols_or_numbers_give_the_same_sorted_list():
    assert to_atomic_numbers(["O", "H", "H", 6]) == [1, 6, 8]
    with pytest.raises(ValueError, match="'Xx' is not a chemical symbol"):
        to_atomic_numbers(["Xx"])


@pytest.mark.parametrize("given, expected", [("float32", torch.float32), (torch.float64, torch.float64)])
def test_dtypes(given, expected):
    assert resolve_dtype(given) is expected


@pytest.mark.parametrize("bad", ["float16", torch.float16, "double"])
def test_other_dtypes_are_refused(bad):
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        resolve_dtype(bad)


@pytest.mark.parametrize(
    "bad, message", [(0, "positive, finite"), (float("inf"), "positive, finite"), (MAX_CUTOFF * 2, "check the unit")]
)
def test_cutoffs_outside_what_a_potential_uses_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        check_cutoff(bad)
    assert check_cutoff(MAX_CUTOFF) == MAX_CUTOFF


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_architecture_builds_with_its_hyperparameters_recorded(name):
    options = dict(cutoff=4.0, dtype="float32", features=8, n_interactions=1, n_rbf=4, seed=3)
    model = build_model(name, species=["H", "O"], self_energies={1: -13.6, 8: -432.0}, **options)
    assert list(model.species) == [1, 8] and model.cutoff == 4.0 and model.shift.dtype == torch.float32
    assert model.hyperparameters["name"] == name and model.hyperparameters["seed"] == 3
    assert model.shift.tolist() == pytest.approx([-13.6, -432.0])
    again = build_model(name, species=[8, 1], self_energies={1: -13.6, 8: -432.0}, **options)  # same species
    for (key, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), f"{key}: the seed does not fix the initial weights"


def test_the_seed_leaves_the_global_random_state_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    build_model(species=["Cu"], cutoff=4.0, features=8, n_interactions=1, n_rbf=4, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_an_unknown_architecture_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'mace'; available: " + ", ".join(MODEL_NAMES)):
        build_model("mace", species=["H"])
