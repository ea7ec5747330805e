"""physml_md.data.structures: ase.Atoms <-> structure dictionary, label lookup and masks (data from ASE's EMT).

Also covers physml_md/data/keys.py (names only, and mask_key): the keys, shapes and masks of every dictionary
made here are checked below (tests/test_layers.py: TESTED_THROUGH).
"""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress

from physml_md.data import keys as K
from physml_md.data.structures import LabelKeys, atoms_to_dict, dict_to_atoms

TOL = 1e-10


def emt_bulk(symbol="Cu", seed=0):
    atoms = bulk(symbol, "fcc", a=3.6, cubic=True).repeat((1, 1, 2))
    atoms.rattle(0.05, seed=seed)
    atoms.calc = EMT()
    atoms.get_potential_energy()
    atoms.get_stress()
    return atoms


def emt_molecule(name="H2O"):
    atoms = molecule(name)
    atoms.calc = EMT()
    atoms.get_potential_energy()
    return atoms


def test_periodic_structure_shapes_dtypes_and_emt_labels():
    atoms = emt_bulk()
    n = len(atoms)
    data = atoms_to_dict(atoms)
    expected = {
        K.POSITIONS: ((n, 3), torch.float64),
        K.ATOMIC_NUMBERS: ((n,), torch.int64),
        K.CELL: ((1, 3, 3), torch.float64),
        K.PBC: ((1, 3), torch.bool),
        K.BATCH: ((n,), torch.int64),
        K.N_ATOMS: ((1,), torch.int64),
        K.ENERGY: ((1,), torch.float64),
        K.FORCES: ((n, 3), torch.float64),
        K.STRESS: ((1, 3, 3), torch.float64),
        K.CHARGES: ((n,), torch.float64),
        K.TOTAL_CHARGE: ((1,), torch.float64),
        K.DIPOLE: ((1, 3), torch.float64),
    }
    expected.update({K.mask_key(label): ((1,), torch.bool) for label in K.LABEL_KEYS})
    assert set(data) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert tuple(data[key].shape) == shape, key
        assert data[key].dtype == dtype, key

    assert torch.equal(data[K.BATCH], torch.zeros(n, dtype=torch.int64))
    assert int(data[K.N_ATOMS]) == n
    assert data[K.PBC].all()
    np.testing.assert_array_equal(data[K.ATOMIC_NUMBERS].numpy(), atoms.numbers)
    np.testing.assert_allclose(data[K.POSITIONS].numpy(), atoms.positions, rtol=0, atol=TOL)
    np.testing.assert_allclose(data[K.CELL][0].numpy(), atoms.cell.array, rtol=0, atol=TOL)
    assert abs(float(data[K.ENERGY]) - atoms.get_potential_energy()) < TOL
    np.testing.assert_allclose(data[K.FORCES].numpy(), atoms.get_forces(), rtol=0, atol=TOL)
    np.testing.assert_allclose(data[K.STRESS][0].numpy(), atoms.get_stress(voigt=False), rtol=0, atol=TOL)
    masks = {label: bool(data[K.mask_key(label)]) for label in K.LABEL_KEYS}
    assert masks == {
        "energy": True,
        "forces": True,
        "stress": True,
        "charges": False,
        "total_charge": False,
        "dipole": False,
    }
    for label in ("charges", "total_charge", "dipole"):  # missing labels are zeros, not invented
        assert not data[label].any()


def test_molecule_keeps_zero_cell_and_masks_stress():
    atoms = emt_molecule("CH4")
    data = atoms_to_dict(atoms)
    assert not data[K.PBC].any()
    assert torch.equal(data[K.CELL], torch.zeros(1, 3, 3, dtype=torch.float64))
    assert bool(data["energy_mask"]) and bool(data["forces_mask"]) and not bool(data["stress_mask"])
    assert not data[K.STRESS].any()


def test_non_periodic_structure_keeps_its_cell():
    atoms = molecule("H2O", cell=[10.0, 11.0, 12.0])
    atoms.calc = EMT()
    atoms.get_potential_energy()
    data = atoms_to_dict(atoms)
    np.testing.assert_array_equal(data[K.CELL][0].numpy(), np.diag([10.0, 11.0, 12.0]))
    assert not data[K.PBC].any()


def _with_info_stress(value):
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.info["stress"] = value
    return atoms


VOIGT = np.array([0.11, -0.22, 0.33, 0.044, -0.055, 0.066])  # xx yy zz yz xz xy


@pytest.mark.parametrize(
    "value",
    [VOIGT, voigt_6_to_full_3x3_stress(VOIGT), voigt_6_to_full_3x3_stress(VOIGT).reshape(9), list(VOIGT)],
    ids=["voigt6", "3x3", "9", "list"],
)
def test_stress_forms_become_full_3x3(value):
    data = atoms_to_dict(_with_info_stress(value))
    np.testing.assert_allclose(data[K.STRESS][0].numpy(), voigt_6_to_full_3x3_stress(VOIGT), rtol=0, atol=0)
    assert bool(data["stress_mask"])


def test_stress_of_wrong_size_is_an_error():
    with pytest.raises(ValueError, match=r"stress has shape \(4,\); expected Voigt 6"):
        atoms_to_dict(_with_info_stress(np.zeros(4)))


def test_custom_keys_from_info_and_arrays():
    atoms = emt_molecule("H2O")
    reference = atoms.get_potential_energy()
    ref_forces = atoms.get_forces()
    atoms.calc = None
    atoms.info["REF_energy"] = reference
    atoms.arrays["REF_forces"] = ref_forces
    atoms.info["REF_dipole"] = np.array([0.1, 0.2, 0.3])
    keys = LabelKeys(energy="REF_energy", forces="REF_forces", dipole="REF_dipole", stress=None)
    data = atoms_to_dict(atoms, keys)
    assert abs(float(data[K.ENERGY]) - reference) < TOL
    np.testing.assert_allclose(data[K.FORCES].numpy(), ref_forces, rtol=0, atol=TOL)
    np.testing.assert_allclose(data[K.DIPOLE].numpy(), [[0.1, 0.2, 0.3]], rtol=0, atol=0)
    assert K.STRESS not in data and K.mask_key(K.STRESS) not in data  # None: not read, no mask
    # the default keys find nothing in this structure: every label masked
    default = atoms_to_dict(atoms)
    assert not any(bool(default[K.mask_key(label)]) for label in K.LABEL_KEYS)


def test_calculator_results_come_before_info():
    atoms = emt_molecule("H2O")
    atoms.info["energy"] = 123.0
    assert abs(float(atoms_to_dict(atoms)[K.ENERGY]) - atoms.get_potential_energy()) < TOL


def test_total_charge_is_not_invented_from_charges():
    atoms = molecule("H2O")
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, charges=np.array([-0.8, 0.4, 0.4]))
    data = atoms_to_dict(atoms)
    np.testing.assert_allclose(data[K.CHARGES].numpy(), [-0.8, 0.4, 0.4], rtol=0, atol=0)
    assert bool(data["charges_mask"]) and not bool(data["total_charge_mask"])
    atoms.info["total_charge"] = 0
    data = atoms_to_dict(atoms)
    assert bool(data["total_charge_mask"]) and float(data[K.TOTAL_CHARGE]) == 0.0


def test_all_nan_label_is_missing_partial_nan_is_an_error():
    atoms = molecule("H2O")
    atoms.info["energy"] = float("nan")
    data = atoms_to_dict(atoms)
    assert not bool(data["energy_mask"]) and float(data[K.ENERGY]) == 0.0
    atoms.arrays["forces"] = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, np.nan], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"label 'forces' \(stored as 'forces'\) is not finite: atom 1 \(nan\);"):
        atoms_to_dict(atoms)


def test_an_infinite_label_is_an_error_naming_the_atoms_not_a_missing_one():
    """Only NaN marks a label missing; inf (even in every entry) is a broken number and names where it is."""
    atoms = molecule("H2O")
    atoms.arrays["forces"] = np.full((3, 3), np.inf)
    with pytest.raises(ValueError, match=r"'forces'.*not finite: atom 0 \(inf\), atom 1 \(inf\), atom 2 \(inf\)"):
        atoms_to_dict(atoms)
    del atoms.arrays["forces"]
    atoms.info["energy"] = -np.inf
    with pytest.raises(ValueError, match=r"label 'energy' .*is not finite: -inf;"):
        atoms_to_dict(atoms)


def test_bad_label_values_are_errors():
    atoms = molecule("H2O")
    atoms.info["energy"] = "high"
    with pytest.raises(ValueError, match=r"label 'energy' \(stored as 'energy'\) is not numeric"):
        atoms_to_dict(atoms)
    atoms.info["energy"] = [1.0, 2.0]
    with pytest.raises(ValueError, match=r"label 'energy'.*shape \(2,\).*needs \(1,\)"):
        atoms_to_dict(atoms)


def test_stale_calculator_results_are_an_error():
    atoms = emt_bulk()
    atoms.positions[0, 0] += 0.1  # results now belong to other positions
    with pytest.raises(ValueError, match=r"stale: positions changed"):
        atoms_to_dict(atoms)


def test_dtype_is_honoured():
    data = atoms_to_dict(emt_bulk(), dtype=torch.float32)
    for key in (K.POSITIONS, K.CELL, K.ENERGY, K.FORCES, K.STRESS, K.CHARGES, K.TOTAL_CHARGE, K.DIPOLE):
        assert data[key].dtype == torch.float32, key
    assert data[K.ATOMIC_NUMBERS].dtype == torch.int64


@pytest.mark.parametrize("make", [emt_bulk, emt_molecule], ids=["bulk", "molecule"])
def test_dict_to_atoms_round_trip(make):
    atoms = make()
    atoms.info["total_charge"] = 0.0
    data = atoms_to_dict(atoms)
    back = dict_to_atoms(data)
    again = atoms_to_dict(back)
    assert set(again) == set(data)
    for key in data:
        torch.testing.assert_close(again[key], data[key], rtol=0, atol=0, msg=key)
    assert (back.pbc == atoms.pbc).all()


def test_dict_to_atoms_refuses_a_batch():
    data = atoms_to_dict(emt_molecule())
    data[K.N_ATOMS] = torch.tensor([1, 2])
    with pytest.raises(ValueError, match="single structure"):
        dict_to_atoms(data)
