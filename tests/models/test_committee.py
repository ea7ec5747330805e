"""physml_md/models/committee.py: N members as one potential: the mean of their outputs and their spread, the same
in eager, TorchScript, torch.export and the ASE calculator (float64)."""

import copy

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from physml_md.data import keys as K
from physml_md.export import export_potential, load_potential, script_potential
from physml_md.integrations.ase import PhysMLCalculator
from physml_md.models import MODEL_NAMES, build_model
from physml_md.models.committee import Committee, committee_statistics
from tests.helpers import assert_matches_finite_differences, inputs

SPECIES = ["H", "C", "O", "Cu"]


def members(arch="painn", n=3, **kwargs):
    options = {"features": 8, "n_interactions": 1, "n_rbf": 4, "cutoff": 4.0, **kwargs}
    models = [build_model(arch, species=SPECIES, seed=seed, **options) for seed in range(n)]
    for index, model in enumerate(models):  # members that differ in their shifts too, as bootstrap members do
        model.set_shift_and_scale({1: -13.6 + 0.01 * index, 6: -1029.0, 8: -2040.0, 29: -0.5}, 1.0 + 0.1 * index)
    return [m.eval() for m in models]


def structures():
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    copper = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    copper.rattle(0.1, seed=2)
    copper.cell[1, 0] = 0.4  # triclinic
    return [ethanol, copper]


def reference(models, data):
    """Each member on its own, then mean and spread computed here in numpy."""
    with torch.enable_grad():
        outs = [m(dict(data)) for m in models]
    energy = np.array([o[K.ENERGY].numpy() for o in outs])
    forces = np.array([o[K.FORCES].numpy() for o in outs])
    expected = {key: np.mean([o[key].numpy() for o in outs], axis=0) for key in outs[0]}
    expected[K.ENERGY_STD] = energy.std(axis=0)
    expected[K.FORCES_STD] = np.sqrt(np.mean(np.sum((forces - forces.mean(0)) ** 2, axis=-1), axis=0))
    return expected


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "loop"])
@pytest.mark.parametrize("arch", MODEL_NAMES)
@pytest.mark.parametrize("which", [0, 1], ids=["molecule", "triclinic-crystal"])
def test_committee_gives_the_members_mean_and_spread(arch, which, stacked):
    models = members(arch)
    for model in models:  # an energy model that cannot be stacked: the committee loops over its members
        model.energy_model.stackable = stacked
    committee = Committee(models).eval()
    assert len(committee.stacked) == int(stacked)
    data = inputs(structures()[which])
    expected = reference(models, data)
    with torch.enable_grad():
        out = committee(dict(data))
    assert set(out) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(out[key].detach().numpy(), value, rtol=1e-12, atol=1e-12, err_msg=key)
    assert out[K.FORCES_STD].shape == (len(structures()[which]),)
    assert float(out[K.FORCES_STD].min()) > 0.0  # members with other weights disagree


def test_committee_forces_are_the_gradient_of_its_mean_energy():
    committee = Committee(members("tensornet")).eval()
    assert_matches_finite_differences(structures()[1], committee, rtol=1e-6)


@pytest.mark.parametrize("arch", MODEL_NAMES)
@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_exported_committee_and_its_ase_calculator_match_eager(tmp_path, suffix, arch):
    models = members(arch, n=4)
    committee = Committee(models).eval()
    path = export_potential(committee, tmp_path / f"committee{suffix}")
    loaded = load_potential(path)
    assert loaded.metadata["committee"] == 4
    assert {"energy_std", "forces_std"} <= set(loaded.metadata["outputs"])
    atoms = structures()[1]
    expected = reference(models, inputs(atoms))
    out = loaded(inputs(atoms))
    for key in (K.ENERGY, K.FORCES, K.STRESS, K.ENERGY_STD, K.FORCES_STD):
        np.testing.assert_allclose(out[key].detach().numpy(), expected[key], rtol=1e-12, atol=1e-12, err_msg=key)
    atoms.calc = PhysMLCalculator(path)
    assert atoms.get_potential_energy() == pytest.approx(float(expected[K.ENERGY][0]), rel=1e-12)
    np.testing.assert_allclose(atoms.calc.get_property("forces_std"), expected[K.FORCES_STD], rtol=1e-12)
    assert atoms.calc.get_property("energy_std") == pytest.approx(float(expected[K.ENERGY_STD][0]), rel=1e-12)
    assert atoms.calc.get_property("max_forces_std") == pytest.approx(float(expected[K.FORCES_STD].max()))


def test_a_single_potential_gives_no_uncertainty():
    atoms = structures()[0]
    atoms.calc = PhysMLCalculator(script_potential(members(n=1)[0]))
    atoms.get_potential_energy()
    assert "forces_std" not in atoms.calc.results
    assert "forces_std" not in atoms.calc.implemented_properties


def test_committee_statistics_of_identical_members_is_zero_spread():
    out = {K.ENERGY: torch.tensor([1.0, 2.0]), K.FORCES: torch.ones(3, 3)}
    stats = committee_statistics({key: torch.stack([value] * 3) for key, value in out.items()})
    assert torch.equal(stats[K.ENERGY], out[K.ENERGY])
    assert torch.equal(stats[K.ENERGY_STD], torch.zeros(2)) and torch.equal(stats[K.FORCES_STD], torch.zeros(3))


def test_cast_keeps_members_and_names_the_dtype():
    committee = Committee(members(n=2))
    single = committee.cast(torch.float32)
    assert single.shift.dtype == torch.float32
    assert all(m.shift.dtype == torch.float32 for m in single.members)
    assert single.hyperparameters["dtype"] == "float32"
    assert [m["dtype"] for m in single.hyperparameters["members"]] == ["float32", "float32"]


def test_members_that_do_not_fit_together_are_refused():
    with pytest.raises(ValueError, match="at least 2 members"):
        Committee(members(n=1))
    other_cutoff = build_model("painn", species=SPECIES, cutoff=5.0, features=8, n_interactions=1, n_rbf=4)
    with pytest.raises(ValueError, match="member 1 has cutoff 5.0, member 0 has 4.0"):
        Committee([members(n=1)[0], other_cutoff])
    other_arch = build_model("tensornet", species=SPECIES, cutoff=4.0, features=8, n_interactions=1, n_rbf=4)
    with pytest.raises(ValueError, match="architecture tensornet"):
        Committee([members(n=1)[0], other_arch])
    with pytest.raises(ValueError, match="each member"):
        Committee(members(n=2)).set_shift_and_scale({1: 0.0})


def test_identical_members_are_refused_naming_them():
    """The same member twice (or a copy of it) gives forces_std = 0 everywhere: no threshold could ever trigger."""
    first, second = members(n=2)
    with pytest.raises(ValueError, match="members 0 and 2 are identical"):
        Committee([first, second, copy.deepcopy(first)])
    with pytest.raises(ValueError, match="members 0 and 1 are identical"):
        Committee([first, first])
    twin = copy.deepcopy(second)
    with torch.no_grad():  # one weight apart: a different member
        next(twin.parameters()).view(-1)[0] += 1e-6
    assert Committee([second, twin]).n_members == 2


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_stacked_committee_with_charges_zbl_and_coulomb_matches_its_members(arch):
    models = members(arch, charges=True, coulomb=True, zbl=True)
    committee = Committee(models).eval()
    assert len(committee.stacked) == 1
    data = inputs(structures()[1])
    data["total_charge"] = torch.tensor([1.0], dtype=torch.float64)
    expected = reference(models, data)
    with torch.enable_grad():
        out = committee(dict(data))
    assert {K.CHARGES, K.DIPOLE, K.STRESS} <= set(out) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(out[key].detach().numpy(), value, rtol=1e-12, atol=1e-12, err_msg=key)
    assert float(out[K.TOTAL_CHARGE]) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_stacked_committee_on_a_batch_of_structures_matches_each_alone(arch):
    committee = Committee(members(arch)).eval()
    calculator = PhysMLCalculator(committee)
    batch = calculator.calculate_batch(structures())
    for atoms, result in zip(structures(), batch):
        atoms.calc = PhysMLCalculator(committee)
        alone = {key: atoms.calc.get_property(key, atoms) for key in ("energy", "forces", "energy_std", "forces_std")}
        for key, value in alone.items():
            np.testing.assert_allclose(result[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_members_are_stacked_on_small_structures_only(arch, monkeypatch):
    committee = Committee(members(arch)).eval()
    data = inputs(structures()[1])
    calls = []
    evaluate = committee.stacked[0].evaluate
    monkeypatch.setattr(committee.stacked[0], "evaluate", lambda *args: calls.append(1) or evaluate(*args))
    with torch.enable_grad():
        stacked = committee(dict(data))
        assert len(calls) == 1
        edges = committee.prepare(dict(data))[7].shape[1]
        committee.stack_edges = 3 * edges - 1  # M times the edges is more than this: one member after the other
        looped = committee(dict(data))
    assert len(calls) == 1
    for key, value in stacked.items():
        np.testing.assert_allclose(looped[key].numpy(), value.numpy(), rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_for_export_is_a_copy_whose_graph_does_not_depend_on_the_data(arch):
    """``Potential.for_export`` (what torch.export traces): members one after the other at every size, every energy
    model's edges in one chunk, eval mode, no parameter gradients; the committee itself is left as it is."""
    committee = Committee(members(arch))
    traced = committee.for_export()
    assert traced.stack_edges == 0 and committee.stack_edges > 0
    energy_models = [m.energy_model for m in [*traced.members, *traced.stacked]]
    assert energy_models and all(model.chunk_elements == 0 for model in energy_models)
    assert all(m.energy_model.chunk_elements > 0 for m in committee.members)
    assert not traced.training and not any(p.requires_grad for p in traced.parameters())
    assert any(p.requires_grad for p in committee.parameters())
