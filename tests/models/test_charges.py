"""The charge head (charges, total charge, dipole) and PhysNet's damped Coulomb energy in the potential.

(The Coulomb kernel and module alone: test_coulomb.py.)"""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from physml_md.data import keys as K
from physml_md.export import export_potential, load_potential
from physml_md.models import PaiNN, Potential, build_model
from tests.helpers import (
    CUTOFF,
    EXACT,
    SPECIES,
    SYMMETRY,
    assert_close,
    assert_matches_finite_differences,
    inputs,
    random_rotation,
    small_model,
)
from tests.models.helpers import reference_kernel


def make_model(dtype=torch.float64, coulomb=True, **kw):
    return small_model(dtype=dtype, features=8, n_interactions=1, n_rbf=4, charges=True, coulomb=coulomb, **kw)


def systems():
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    rng = np.random.default_rng(5)
    alloy = bulk("Cu", "fcc", a=3.7).repeat((2, 2, 2))
    alloy.numbers[[1, 6]] = 13
    alloy.set_cell(alloy.cell.array @ (np.eye(3) + 0.1 * rng.normal(size=(3, 3))), scale_atoms=True)
    alloy.rattle(0.05, seed=3)
    return {"ethanol": ethanol, "triclinic_alloy": alloy}


SYSTEMS = systems()


def charged_inputs(atoms, total_charge, dtype=torch.float64):
    data = inputs(atoms, dtype)
    data[K.TOTAL_CHARGE] = torch.tensor([total_charge], dtype=dtype)
    return data


def evaluate(model, data):
    return {k: v.detach().double().numpy() for k, v in model(data).items()}


@pytest.mark.parametrize("total_charge", [0.0, 1.0, -2.0])
@pytest.mark.parametrize("name", list(SYSTEMS))
def test_charges_sum_to_the_total_charge(name, total_charge):
    model = make_model()
    atoms = SYSTEMS[name]
    out = evaluate(model, charged_inputs(atoms, total_charge))
    assert out["charges"].shape == (len(atoms),)
    assert abs(out["charges"].sum() - total_charge) <= 1e-12
    assert abs(out["total_charge"][0] - total_charge) <= 1e-12
    assert np.ptp(out["charges"]) > 1e-3, "charges should depend on the atom, not be Q / n"


def test_missing_total_charge_means_neutral_and_batches_agree():
    model = make_model()
    names = list(SYSTEMS)
    totals = [1.0, -1.0]
    single = [evaluate(model, charged_inputs(SYSTEMS[n], q)) for n, q in zip(names, totals)]
    parts = [inputs(SYSTEMS[n]) for n in names]
    batch = {key: torch.cat([p[key] for p in parts]) for key in ("positions", "atomic_numbers", "cell", "pbc")}
    batch["batch"] = torch.cat([torch.full((len(SYSTEMS[n]),), i, dtype=torch.long) for i, n in enumerate(names)])
    neutral = evaluate(model, batch)
    assert np.abs(neutral["total_charge"]).max() <= 1e-12
    batch[K.TOTAL_CHARGE] = torch.tensor(totals, dtype=torch.float64)
    out = evaluate(model, batch)
    assert_close(out["total_charge"], totals, 1e-12, "total charge per structure")
    start = 0
    for index, (name, reference) in enumerate(zip(names, single)):
        stop = start + len(SYSTEMS[name])
        for key, rows in (("charges", slice(start, stop)), ("dipole", index), ("energy", index)):
            expected = reference[key] if key == "charges" else reference[key][0]
            assert_close(out[key][rows], expected, EXACT[torch.float64], f"{key} of {name} in a batch")
        start = stop


def test_dipole_is_the_sum_of_charge_times_position():
    model = make_model()
    atoms = SYSTEMS["ethanol"]
    out = evaluate(model, charged_inputs(atoms, 1.0))
    expected = (out["charges"][:, None] * atoms.positions).sum(axis=0)
    assert_close(out["dipole"][0], expected, 1e-12, "dipole vs numpy sum q_i r_i")
    assert np.abs(expected).max() > 1e-2


@pytest.mark.parametrize("total_charge", [0.0, 1.0])
def test_dipole_under_translation_changes_by_total_charge_times_shift(total_charge):
    model = make_model()
    atoms = SYSTEMS["ethanol"]
    shift = np.array([1.5, -2.0, 3.0])
    moved = atoms.copy()
    moved.positions += shift
    before = evaluate(model, charged_inputs(atoms, total_charge))["dipole"][0]
    after = evaluate(model, charged_inputs(moved, total_charge))["dipole"][0]
    assert_close(after, before + total_charge * shift, SYMMETRY[torch.float64], "dipole after translation")


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_symmetry_with_charges_and_coulomb(name, dtype):
    model = make_model(dtype)
    atoms = SYSTEMS[name]
    total_charge = 1.0
    rng = np.random.default_rng(11)
    tol = SYMMETRY[dtype]
    reference = evaluate(model, charged_inputs(atoms, total_charge, dtype))
    rotation = random_rotation(rng)
    shift = rng.normal(size=3) * 3.0
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + shift
    moved.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    out = evaluate(model, charged_inputs(moved, total_charge, dtype))
    assert_close(out["energy"], reference["energy"], tol, "energy under rotation+translation")
    assert_close(out["charges"], reference["charges"], tol, "charges under rotation+translation")
    assert_close(out["forces"], reference["forces"] @ rotation.T, tol, "forces under rotation")
    expected_dipole = reference["dipole"][0] @ rotation.T + total_charge * shift
    assert_close(out["dipole"][0], expected_dipole, tol, "dipole under rotation+translation")


@pytest.mark.parametrize(("name", "total_charge"), [("ethanol", 1.0), ("triclinic_alloy", 0.0)])
def test_forces_and_stress_with_coulomb_match_finite_differences(name, total_charge):
    model = make_model()
    atoms = SYSTEMS[name].copy()

    def module(data):
        data[K.TOTAL_CHARGE] = torch.tensor([total_charge], dtype=torch.float64)
        return model(data)

    forces = assert_matches_finite_differences(atoms, module)
    # the Coulomb term takes part in the forces
    without = evaluate(make_model(coulomb=False), charged_inputs(SYSTEMS[name], total_charge))
    assert np.abs(forces - without["forces"]).max() > 1e-4


@pytest.mark.parametrize("distance", [1.2, 2.5, 3.4])
def test_model_pair_energy_equals_the_formula(distance):
    """The Coulomb model minus the same model without Coulomb (same seed, same weights) on a CuAl dimer."""
    dimer = Atoms("CuAl", positions=[[0, 0, 0], [distance, 0, 0]])
    with_coulomb = evaluate(make_model(coulomb=True), charged_inputs(dimer, 1.0))
    without = evaluate(make_model(coulomb=False), charged_inputs(dimer, 1.0))
    assert_close(with_coulomb["charges"], without["charges"], 1e-15, "charges do not depend on the Coulomb flag")
    q1, q2 = with_coulomb["charges"]
    if distance > CUTOFF / 2:
        chi = 1 / distance + distance / CUTOFF**2 - 2 / CUTOFF
    else:
        chi = reference_kernel(distance, CUTOFF)
    expected = 14.399645 * q1 * q2 * chi
    difference = with_coulomb["energy"][0] - without["energy"][0]
    assert difference == pytest.approx(expected, rel=1e-7)  # 1e-7: k_e above is rounded to 7 digits
    assert abs(difference) > 1e-3


def test_energy_and_forces_are_smooth_across_the_cutoff():
    """An atom leaving the cutoff sphere changes the energy by less than 1e-8 eV, the forces continuously."""
    model = make_model()

    def trimer(distance):
        return charged_inputs(Atoms("CuCuAl", positions=[[0, 0, 0], [2.4, 0, 0], [-distance, 0.5, 0.0]]), 1.0)

    inside = evaluate(model, trimer(np.sqrt((CUTOFF - 1e-7) ** 2 - 0.25)))
    outside = evaluate(model, trimer(np.sqrt((CUTOFF + 1e-7) ** 2 - 0.25)))
    assert abs(inside["energy"][0] - outside["energy"][0]) < 1e-8
    assert np.abs(inside["forces"] - outside["forces"]).max() < 1e-6
    # the Coulomb energy of the third atom is real well inside the sphere
    near = trimer(CUTOFF - 1.0)
    coulomb_part = evaluate(model, near)["energy"][0] - evaluate(make_model(coulomb=False), near)["energy"][0]
    assert abs(coulomb_part) > 1e-3


def test_scripted_equals_eager(dtype):
    model = make_model(dtype)
    scripted = torch.jit.script(model)
    for name, atoms in SYSTEMS.items():
        data = charged_inputs(atoms, 1.0, dtype)
        eager = evaluate(model, data)
        script = evaluate(scripted, data)
        assert set(script) == set(eager) and {"charges", "total_charge", "dipole"} <= set(eager)
        for key in eager:
            assert_close(script[key], eager[key], EXACT[dtype], f"{name} {key}")


def test_export_round_trip_returns_charges_and_dipole(tmp_path, dtype):
    model = make_model(dtype)
    path = export_potential(model, tmp_path / "charged.pt")
    loaded = load_potential(path)
    assert loaded.metadata["hyperparameters"]["charges"] is True
    assert loaded.metadata["hyperparameters"]["coulomb"] is True
    assert {"charges", "total_charge", "dipole"} <= set(loaded.metadata["outputs"])
    data = charged_inputs(SYSTEMS["ethanol"], -1.0, dtype)
    eager = evaluate(model, data)
    exported = evaluate(loaded, data)
    for key in ("energy", "forces", "charges", "total_charge", "dipole"):
        assert_close(exported[key], eager[key], EXACT[dtype], f"exported {key}")


def test_model_without_charge_head_keeps_its_outputs(tmp_path):
    model = build_model(species=SPECIES, cutoff=CUTOFF, features=8, n_interactions=1, n_rbf=4).eval()
    assert model.hyperparameters["charges"] is False and model.hyperparameters["coulomb"] is False
    out = model(charged_inputs(SYSTEMS["ethanol"], 1.0))  # a total charge is ignored without a charge head
    assert set(out) == {"energy", "energies", "forces"}
    meta = load_potential(export_potential(model, tmp_path / "plain.pt")).metadata
    assert meta["outputs"] == ["energy", "energies", "forces", "stress"]


def test_charges_carry_parameter_gradients_in_training_only():
    model = make_model().train()
    out = model(charged_inputs(SYSTEMS["ethanol"], 1.0))
    assert out["charges"].requires_grad and out["dipole"].requires_grad
    loss = out["dipole"].pow(2).sum() + out["charges"].pow(2).sum() + out["forces"].pow(2).sum()
    loss.backward()
    readout = model.energy_model.readout[-1].weight.grad
    assert readout is not None and float(readout[1].abs().max()) > 0, "the charge channel gets a gradient"
    out = model.eval()(charged_inputs(SYSTEMS["ethanol"], 1.0))
    assert not any(value.requires_grad for value in out.values())


def test_coulomb_without_charges_is_an_error():
    with pytest.raises(ValueError, match="coulomb=True needs charges=True.*pass charges=True"):
        build_model(species=SPECIES, features=8, n_interactions=1, n_rbf=4, coulomb=True)
    energy_only = PaiNN(2, CUTOFF, features=8, n_interactions=1, n_rbf=4)
    with pytest.raises(ValueError, match="charges=True needs an energy model with n_outputs=2"):
        Potential(energy_only, [1, 8], CUTOFF, charges=True)


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
def test_total_charge_of_the_wrong_shape(scripted):
    model = make_model()
    model = torch.jit.script(model) if scripted else model
    data = inputs(SYSTEMS["ethanol"])
    data[K.TOTAL_CHARGE] = torch.tensor([1.0, 0.0], dtype=torch.float64)
    with pytest.raises(Exception, match="total_charge has 2 entries for 1 structures"):
        model(data)
