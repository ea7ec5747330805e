"""The potentials and their autograd wrapper: symmetry, derivatives, smoothness, batching, dtypes, errors.

Tests of the energy-model contract run for every architecture in MODEL_NAMES (parameter ``arch``), so a new
architecture is covered as soon as build_model knows it; tests of the wrapper alone use the default one.
"""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

from physml_md.data import keys as K
from physml_md.models import MODEL_NAMES, build_model
from tests.helpers import (
    CUTOFF,
    EXACT,
    SPECIES,
    SYMMETRY,
    assert_close,
    assert_matches_finite_differences,
    inputs,
    random_rotation,
    requires_cuda,
    small_model,
)


def make_model(dtype, zbl=True, arch="painn", **kw):
    return small_model(arch, dtype, features=16, n_interactions=2, zbl=zbl, **kw)


def systems():
    rng = np.random.default_rng(7)
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    cu.rattle(0.1, seed=2)
    alloy = bulk("Cu", "fcc", a=3.7).repeat((3, 2, 2))
    alloy.numbers[rng.choice(len(alloy), 4, replace=False)] = 13
    alloy.set_cell(alloy.cell.array @ (np.eye(3) + 0.1 * rng.normal(size=(3, 3))), scale_atoms=True)
    alloy.rattle(0.05, seed=3)
    slab = fcc111("Al", size=(2, 2, 3), vacuum=5.0)
    slab.rattle(0.05, seed=4)
    return {"ethanol": ethanol, "cu_bulk": cu, "triclinic_alloy": alloy, "al_slab": slab}


SYSTEMS = systems()


def evaluate(model, atoms, dtype):
    out = model(inputs(atoms, dtype))
    return {k: v.detach().double().numpy() for k, v in out.items()}


@pytest.mark.parametrize("arch", MODEL_NAMES)
@pytest.mark.parametrize("name", list(SYSTEMS))
def test_rotation_translation_permutation(name, dtype, arch):
    model = make_model(dtype, arch=arch)
    atoms = SYSTEMS[name]
    rng = np.random.default_rng(11)
    reference = evaluate(model, atoms, dtype)
    tol = SYMMETRY[dtype]

    rotation = random_rotation(rng)
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + rng.normal(size=3) * 3.0
    moved.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    out = evaluate(model, moved, dtype)
    assert_close(out["energy"], reference["energy"], tol, "energy under rotation+translation")
    assert_close(out["energies"], reference["energies"], tol, "per-atom energies under rotation")
    assert_close(out["forces"], reference["forces"] @ rotation.T, tol, "forces under rotation")
    if "stress" in reference:
        assert_close(out["stress"][0], rotation @ reference["stress"][0] @ rotation.T, tol, "stress under rotation")

    order = rng.permutation(len(atoms))
    permuted = atoms[order]
    out = evaluate(model, permuted, dtype)
    assert_close(out["energy"], reference["energy"], tol, "energy under permutation")
    assert_close(out["forces"], reference["forces"][order], tol, "forces under permutation")


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_energy_changes_when_geometry_changes(arch):
    """Guards the symmetry tests against a model that outputs a constant."""
    model = make_model(torch.float64, arch=arch)
    atoms = SYSTEMS["ethanol"]
    stretched = atoms.copy()
    stretched.positions[0] += [0.2, 0.0, 0.0]
    assert (
        abs(evaluate(model, atoms, torch.float64)["energy"][0] - evaluate(model, stretched, torch.float64)["energy"][0])
        > 1e-3
    )
    assert np.abs(evaluate(model, atoms, torch.float64)["forces"]).max() > 1e-3


@pytest.mark.parametrize("arch", MODEL_NAMES)
@pytest.mark.parametrize("name", list(SYSTEMS))
def test_forces_and_stress_match_finite_differences(name, arch):
    model = make_model(torch.float64, arch=arch)
    atoms = SYSTEMS[name].copy()
    assert_matches_finite_differences(atoms, model)


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_per_atom_energies_sum_to_energy(dtype, arch):
    model = make_model(dtype, arch=arch)
    out = evaluate(model, SYSTEMS["cu_bulk"], dtype)
    assert_close(out["energies"].sum(), out["energy"][0], EXACT[dtype], "sum of per-atom energies")


@pytest.mark.parametrize("arch", MODEL_NAMES)
@pytest.mark.parametrize("zbl", [False, True])
def test_energy_is_smooth_across_the_cutoff(zbl, arch):
    """An atom leaving the cutoff sphere changes the energy by less than 1e-8 eV and the forces by less than
    1e-6 eV/A (float64): the cutoff's value and slope vanish there."""
    model = make_model(torch.float64, zbl=zbl, arch=arch)

    def trimer(distance):
        return Atoms("CuCuAl", positions=[[0, 0, 0], [2.4, 0, 0], [-distance, 0.5, 0.0]])

    def evaluate_at(distance):
        return evaluate(model, trimer(distance), torch.float64)

    # distance of the Al atom to its nearest neighbour crosses the cutoff
    inside = evaluate_at(np.sqrt((CUTOFF - 1e-7) ** 2 - 0.25))
    outside = evaluate_at(np.sqrt((CUTOFF + 1e-7) ** 2 - 0.25))
    assert abs(inside["energy"][0] - outside["energy"][0]) < 1e-8
    assert np.abs(inside["forces"] - outside["forces"]).max() < 1e-6
    # and the interaction is real well inside the sphere, where it exerts a force on the Al atom
    well_inside = evaluate_at(CUTOFF - 1.0)
    assert abs(well_inside["energy"][0] - outside["energy"][0]) > 1e-4
    assert np.abs(well_inside["forces"][2] - outside["forces"][2]).max() > 1e-4


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_batch_equals_one_by_one(dtype, arch):
    model = make_model(dtype, arch=arch)
    structures = [SYSTEMS[name] for name in ("ethanol", "cu_bulk", "triclinic_alloy", "al_slab")]
    single = [evaluate(model, atoms, dtype) for atoms in structures]
    parts = [inputs(atoms, dtype) for atoms in structures]
    batch = {
        "positions": torch.cat([p["positions"] for p in parts]),
        "atomic_numbers": torch.cat([p["atomic_numbers"] for p in parts]),
        "cell": torch.cat([p["cell"] for p in parts]),
        "pbc": torch.cat([p["pbc"] for p in parts]),
        "batch": torch.cat([torch.full((len(a),), i, dtype=torch.long) for i, a in enumerate(structures)]),
    }
    out = {k: v.detach().double().numpy() for k, v in model(batch).items()}
    start = 0
    for index, (atoms, reference) in enumerate(zip(structures, single)):
        stop = start + len(atoms)
        assert_close(out["energy"][index], reference["energy"][0], EXACT[dtype], f"energy of structure {index}")
        assert_close(out["forces"][start:stop], reference["forces"], EXACT[dtype], f"forces of structure {index}")
        if "stress" in reference:
            assert_close(out["stress"][index], reference["stress"][0], EXACT[dtype], f"stress of structure {index}")
        else:
            assert np.all(out["stress"][index] == 0.0)
        start = stop


def test_slab_without_a_third_cell_vector_has_zero_stress_not_nan():
    slab = SYSTEMS["al_slab"].copy()
    slab.cell[2] = 0.0
    out = evaluate(make_model(torch.float64), slab, torch.float64)
    reference = evaluate(make_model(torch.float64), SYSTEMS["al_slab"], torch.float64)
    assert np.all(out["stress"] == 0.0)
    assert_close(out["forces"], reference["forces"], 1e-12, "forces do not depend on the non-periodic vector")


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_dtype_is_per_model_and_global_default_untouched(arch):
    before = torch.get_default_dtype()
    m32 = make_model(torch.float32, arch=arch)
    m64 = make_model("float64", arch=arch)
    assert torch.get_default_dtype() == before
    assert all(p.dtype == torch.float32 for p in m32.parameters())
    assert all(p.dtype == torch.float64 for p in m64.parameters())
    assert all(b.dtype in (torch.float32, torch.long, torch.bool) for b in m32.buffers())
    atoms = SYSTEMS["cu_bulk"]
    out32 = m32(inputs(atoms, torch.float64))  # inputs are cast to the model's dtype
    out64 = m64(inputs(atoms, torch.float32))
    assert out32["energy"].dtype == torch.float32 and out64["forces"].dtype == torch.float64
    # same seed, same weights: float32 agrees with float64 to float32 precision
    e64 = evaluate(m64, atoms, torch.float64)
    e32 = evaluate(m32, atoms, torch.float32)
    assert_close(e32["forces"], e64["forces"], 1e-4, "float32 vs float64 forces")
    with pytest.raises(ValueError, match="float32' or 'float64"):
        build_model(species=SPECIES, dtype="float16")


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_seed_fixes_weights_without_touching_global_rng(arch):
    state = torch.random.get_rng_state()
    a = build_model(arch, species=SPECIES, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    b = build_model(arch, species=SPECIES, seed=3)
    c = build_model(arch, species=SPECIES, seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_shift_and_scale_are_per_element():
    model = make_model(torch.float64)
    atoms = SYSTEMS["ethanol"]
    base = evaluate(model, atoms, torch.float64)
    model.set_shift_and_scale({1: -13.6, 6: -1000.0, 8: -2000.0}, 1.0)
    shifted = evaluate(model, atoms, torch.float64)
    counts = {z: int((atoms.numbers == z).sum()) for z in (1, 6, 8)}
    expected = base["energy"][0] - 13.6 * counts[1] - 1000.0 * counts[6] - 2000.0 * counts[8]
    assert_close(shifted["energy"][0], expected, 1e-12, "energy with self-energies")
    assert_close(shifted["forces"], base["forces"], 1e-12, "forces do not depend on the shift")


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_scripted_equals_eager(dtype, arch):
    model = make_model(dtype, arch=arch)
    scripted = torch.jit.script(model)
    for name, atoms in SYSTEMS.items():
        eager = evaluate(model, atoms, dtype)
        script = evaluate(scripted, atoms, dtype)
        for key in eager:
            assert_close(script[key], eager[key], EXACT[dtype], f"{name} {key}")


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_training_mode_keeps_the_graph_for_force_losses(arch):
    model = make_model(torch.float64, arch=arch).train()
    out = model(inputs(SYSTEMS["cu_bulk"]))
    loss = (out["forces"] ** 2).sum() + out["stress"].pow(2).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().max()) > 0 for g in grads)


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_charge_head_and_coulomb_work_with_every_architecture(arch):
    """n_outputs = 2: charges follow the total charge, forces include the Coulomb energy, scripting keeps it."""
    model = make_model(torch.float64, arch=arch, charges=True, coulomb=True)
    atoms = SYSTEMS["ethanol"].copy()
    data = inputs(atoms)
    data[K.TOTAL_CHARGE] = torch.tensor([1.0], dtype=torch.float64)
    out = {k: v.numpy() for k, v in model(data).items()}
    assert abs(out["charges"].sum() - 1.0) < 1e-12 and np.abs(out["charges"]).max() > 1e-3
    assert_close(out["dipole"][0], out["charges"] @ atoms.positions, 1e-12, "dipole")
    scripted = torch.jit.script(model)(data)
    for key in ("energy", "forces", "charges", "dipole"):
        assert_close(scripted[key].numpy(), out[key], EXACT[torch.float64], f"scripted {key}")
    without = make_model(torch.float64, arch=arch, charges=True, coulomb=False)(data)
    assert abs(float(without["energy"][0]) - out["energy"][0]) > 1e-3  # the Coulomb energy is there
    assert_matches_finite_differences(atoms, model)


@requires_cuda
@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_cuda_equals_cpu(dtype, arch):
    model = make_model(dtype, arch=arch)
    on_gpu = make_model(dtype, arch=arch).to("cuda")
    for name, atoms in SYSTEMS.items():
        reference = evaluate(model, atoms, dtype)
        out = on_gpu({k: v.to("cuda") for k, v in inputs(atoms, dtype).items()})
        for key in reference:
            assert out[key].device.type == "cuda"
            assert_close(out[key].cpu().double().numpy(), reference[key], SYMMETRY[dtype], f"{name} {key}")


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
class TestBadInput:
    def model(self, scripted):
        model = make_model(torch.float64)
        return torch.jit.script(model) if scripted else model

    def test_nan_positions(self, scripted):
        atoms = SYSTEMS["ethanol"].copy()
        data = inputs(atoms)
        data["positions"][2, 1] = float("nan")
        with pytest.raises(Exception, match="NaN or infinite"):
            self.model(scripted)(data)
        data["positions"][2, 1] = float("inf")
        with pytest.raises(Exception, match="NaN or infinite"):
            self.model(scripted)(data)

    def test_unknown_element_is_named_with_the_known_ones(self, scripted):
        with pytest.raises(
            Exception, match="element\\(s\\) Fe not known to this model, which was trained on H, C, O, Al, Cu"
        ):
            self.model(scripted)(inputs(bulk("Fe")))

    def test_empty_structure(self, scripted):
        with pytest.raises(Exception, match="empty structure"):
            self.model(scripted)(inputs(Atoms()))

    def test_singular_cell_with_periodic_directions(self, scripted):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        data = inputs(atoms)
        data["cell"][0, 2] = data["cell"][0, 1]  # two equal lattice vectors
        with pytest.raises(Exception, match="singular"):
            self.model(scripted)(data)

    def test_overlapping_atoms(self, scripted):
        atoms = SYSTEMS["ethanol"].copy()
        atoms.positions[3] = atoms.positions[5]
        with pytest.raises(Exception, match="atoms 3 and 5 \\(or a periodic image\\) sit at the same position"):
            self.model(scripted)(inputs(atoms))

    def test_gradients_disabled(self, scripted):
        with torch.no_grad(), pytest.raises(Exception, match="gradients enabled"):
            self.model(scripted)(inputs(SYSTEMS["ethanol"]))
