"""physml_md.data.readers: extxyz and ASE database files written by ASE from EMT results, read back."""

import re

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from physml_md.data import keys as K
from physml_md.data.readers import read_dataset, read_structure, read_structures
from physml_md.data.statistics import LabelOutlierWarning
from physml_md.data.structures import LabelKeys

TOL = 1e-10
# ase.io.write of extxyz prints per-atom columns (positions, forces) with "%16.8f": they round-trip to half a
# unit of the 8th decimal. Per-structure values (energy, stress) are printed in full, and an ASE db keeps all.
EXTXYZ_COLUMN_TOL = 5e-9 + 1e-15


def emt_frames():
    """Rattled Cu, Al, Ni and a Cu/Ni alloy (periodic, with stress) and H2O, CH4 (molecules), EMT labels."""
    rng = np.random.default_rng(7)
    frames = []
    for symbol, a in (("Cu", 3.61), ("Al", 4.05), ("Ni", 3.52), ("Cu", 3.55)):
        atoms = bulk(symbol, "fcc", a=a, cubic=True)
        if len(frames) == 3:
            atoms.symbols[[1, 2]] = "Ni"
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(atoms)
    frames += [molecule("H2O"), molecule("CH4")]
    for atoms in frames:
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_forces()
        if atoms.pbc.all():
            atoms.get_stress()
    return frames


@pytest.fixture(scope="module")
def frames():
    return emt_frames()


@pytest.fixture(scope="module")
def files(frames, tmp_path_factory):
    """The frames written by ASE to every supported format."""
    folder = tmp_path_factory.mktemp("readers")
    paths = {}
    for name in ("frames.xyz", "frames.extxyz", "frames.db", "frames.json"):
        paths[name] = folder / name
        ase.io.write(paths[name], frames, format="extxyz" if "xyz" in name else None)
    return paths


@pytest.mark.parametrize("name", ["frames.xyz", "frames.extxyz", "frames.db", "frames.json"])
def test_labels_read_back_equal_emt(name, files, frames):
    data = read_dataset(files[name])
    assert len(data) == len(frames)
    column_tol = EXTXYZ_COLUMN_TOL if "xyz" in name else TOL
    for atoms, d in zip(frames, data, strict=True):
        np.testing.assert_array_equal(d[K.ATOMIC_NUMBERS].numpy(), atoms.numbers)
        np.testing.assert_allclose(d[K.POSITIONS].numpy(), atoms.positions, rtol=0, atol=column_tol)
        np.testing.assert_array_equal(d[K.PBC][0].numpy(), atoms.pbc)
        assert abs(float(d[K.ENERGY]) - atoms.get_potential_energy()) < TOL
        np.testing.assert_allclose(d[K.FORCES].numpy(), atoms.get_forces(), rtol=0, atol=column_tol)
        periodic = bool(atoms.pbc.all())
        assert bool(d["stress_mask"]) == periodic
        if periodic:
            np.testing.assert_allclose(d[K.STRESS][0].numpy(), atoms.get_stress(voigt=False), rtol=0, atol=TOL)
        assert bool(d["energy_mask"]) and bool(d["forces_mask"])
        assert not bool(d["charges_mask"]) and not bool(d["dipole_mask"]) and not bool(d["total_charge_mask"])


@pytest.mark.parametrize(
    "index, expected", [(":", [0, 1, 2, 3, 4, 5]), ("-2:", [4, 5]), (1, [1]), ("3", [3]), (slice(0, 2), [0, 1])]
)
@pytest.mark.parametrize("name", ["frames.xyz", "frames.db"])
def test_read_structures_index(name, index, expected, files, frames):
    images = read_structures(files[name], index=index)
    assert isinstance(images, list)
    assert [len(a) for a in images] == [len(frames[i]) for i in expected]
    assert [a.get_chemical_formula() for a in images] == [frames[i].get_chemical_formula() for i in expected]


def test_custom_keys_in_extxyz(tmp_path):
    frames = emt_frames()
    for atoms in frames:
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
    reference = [(a.get_potential_energy(), a.get_forces()) for a in frames]
    for atoms in frames:
        atoms.calc = None
    path = tmp_path / "custom.xyz"
    ase.io.write(path, frames, format="extxyz")
    data = read_dataset(path, LabelKeys(energy="REF_energy", forces="REF_forces"), required=("energy", "forces"))
    for (energy, forces), d in zip(reference, data, strict=True):
        assert abs(float(d[K.ENERGY]) - energy) < TOL
        np.testing.assert_allclose(d[K.FORCES].numpy(), forces, rtol=0, atol=EXTXYZ_COLUMN_TOL)


def test_custom_keys_in_ase_db(tmp_path, frames):
    """key_value_pairs and data of an ASE db are read too (ase.io.read would drop them)."""
    path = tmp_path / "custom.db"
    with ase.db.connect(path) as db:
        for atoms in frames:
            plain = atoms.copy()  # no calculator: the labels live only under the custom names
            db.write(
                plain,
                key_value_pairs={"REF_energy": atoms.get_potential_energy()},
                data={"REF_forces": atoms.get_forces()},
            )
    data = read_dataset(path, LabelKeys(energy="REF_energy", forces="REF_forces"), required=("energy", "forces"))
    for atoms, d in zip(frames, data, strict=True):
        assert abs(float(d[K.ENERGY]) - atoms.get_potential_energy()) < TOL
        np.testing.assert_allclose(d[K.FORCES].numpy(), atoms.get_forces(), rtol=0, atol=TOL)


def test_missing_required_label_is_one_clear_error(tmp_path, frames):
    images = [a.copy() for a in frames]  # copies carry no calculator
    for atoms, original in zip(images, frames, strict=True):
        atoms.info["REF_energy"] = original.get_potential_energy()
    images[2].info["energy"] = frames[2].get_potential_energy()  # one structure does use the default name
    path = tmp_path / "renamed.xyz"
    ase.io.write(path, images, format="extxyz")
    with pytest.raises(ValueError) as info:
        read_dataset(path)
    message = str(info.value)
    assert "required label 'energy'" in message
    assert str(path) in message
    assert "missing in 5 of 6 structures" in message
    assert "(indices 0, 1, 3, 4, 5)" in message
    assert "info['REF_energy']" in message
    assert "LabelKeys(energy='REF_energy')" in message
    assert "drop 'energy' from required" in message
    # the suggested fix works
    data = read_dataset(path, LabelKeys(energy="REF_energy"))
    assert all(bool(d["energy_mask"]) for d in data)


def test_error_lists_only_the_first_indices():
    images = [molecule("H2O") for _ in range(8)]
    with pytest.raises(
        ValueError,
        match=re.escape("missing in 8 of 8 structures of the given list of structures (indices 0, 1, 2, 3, 4, ...)"),
    ):
        read_dataset(images)


def test_partial_labels_give_correct_masks(frames):
    images = [a.copy() for a in frames]
    images[0].info["energy"] = frames[0].get_potential_energy()
    images[1].arrays["forces"] = frames[1].get_forces()
    images[2].info["energy"] = frames[2].get_potential_energy()
    images[2].info["stress"] = frames[2].get_stress()
    images[4].arrays["charges"] = np.array([-0.8, 0.4, 0.4])
    images[5].info["dipole"] = [0.0, 0.1, 0.2]
    images[5].info["total_charge"] = 1
    data = read_dataset(images, required=())
    masks = {label: [bool(d[K.mask_key(label)]) for d in data] for label in K.LABEL_KEYS}
    assert masks == {
        "energy": [True, False, True, False, False, False],
        "forces": [False, True, False, False, False, False],
        "stress": [False, False, True, False, False, False],
        "charges": [False, False, False, False, True, False],
        "total_charge": [False, False, False, False, False, True],
        "dipole": [False, False, False, False, False, True],
    }
    for d in data:
        for label in K.LABEL_KEYS:
            if not bool(d[K.mask_key(label)]):
                assert not d[label].any(), label
    np.testing.assert_allclose(data[2][K.STRESS][0].numpy(), frames[2].get_stress(voigt=False), rtol=0, atol=TOL)
    with pytest.raises(ValueError, match=r"'forces'.*missing in 5 of 6"):
        read_dataset(images, required=("energy", "forces")[1:])


def test_list_of_atoms_is_accepted(frames):
    data = read_dataset(frames, required=("energy", "forces"), dtype=torch.float32)
    assert len(data) == len(frames) and data[0][K.POSITIONS].dtype == torch.float32


def test_required_label_that_is_not_read_is_an_error(frames):
    with pytest.raises(ValueError, match=r"LabelKeys\(energy=None\)"):
        read_dataset(frames, LabelKeys(energy=None))
    with pytest.raises(ValueError, match="unknown required label 'energies'"):
        read_dataset(frames, required=("energies",))


def test_empty_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="the given list of structures holds no structures"):
        read_dataset([])
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(ValueError, match=re.escape(f"{str(empty)!r} holds no structures")):
        read_dataset(empty)
    empty_db = tmp_path / "empty.db"
    with ase.db.connect(empty_db) as db:
        db.write(molecule("H2O"))
        db.delete([1])
    with pytest.raises(ValueError, match="holds no structures"):
        read_dataset(empty_db)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_structures(tmp_path / "nothere.xyz")
    other = tmp_path / "frames.cif"
    other.write_text("data_x\n")
    with pytest.raises(ValueError, match=r"unknown file type '\.cif'; supported: \.xyz, \.extxyz, \.db, \.json"):
        read_structures(other)


def test_not_a_list_of_atoms_is_an_error():
    with pytest.raises(TypeError, match="list of ase.Atoms"):
        read_dataset([molecule("H2O"), "H2O"])


def test_bad_label_names_the_structure(tmp_path):
    images = [molecule("H2O"), molecule("H2O")]
    images[1].info["energy"] = "n/a"
    with pytest.raises(ValueError, match=r"structure 1: label 'energy'.*not numeric"):
        read_dataset(images)


def test_unreadable_files_are_value_errors(tmp_path, files):
    not_a_db = tmp_path / "other.json"
    not_a_db.write_text('{"a": 1}')
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("garbage\nfoo\n")
    for path in (not_a_db, garbage):
        with pytest.raises(ValueError, match=rf"cannot read '.*{path.name}' as (db|extxyz)"):
            read_structures(path)
    for name in ("frames.xyz", "frames.db"):
        with pytest.raises(ValueError, match=r"\(index=10\)"):
            read_structures(files[name], index=10)
    with pytest.raises(ValueError, match="index 'energy>1' is not a structure index"):
        read_structures(files["frames.db"], index="energy>1")


def _with_labels(atoms, **results):
    """A copy of ``atoms`` whose calculator results are its EMT labels with ``results`` replaced."""
    copy = atoms.copy()
    labels = {key: atoms.calc.results[key] for key in ("energy", "forces", "stress") if key in atoms.calc.results}
    copy.calc = SinglePointCalculator(copy, **{**labels, **results})
    return copy


def test_a_structure_without_atoms_is_refused_naming_file_and_index(tmp_path, frames):
    """Before: read, then a ZeroDivisionError in the statistics (energy per atom of no atoms)."""
    empty = ase.Atoms()
    empty.calc = SinglePointCalculator(empty, energy=0.0)
    path = tmp_path / "with_empty.extxyz"
    ase.io.write(path, [*frames[:2], empty, *frames[2:]], format="extxyz")
    message = rf"'{re.escape(str(path))}': structure 2 has no atoms; remove it"
    for index in (":", "1:", 2, -5):
        with pytest.raises(ValueError, match=message):
            read_structures(path, index=index)
    with pytest.raises(ValueError, match=message):
        read_structure(path, index=2)
    with pytest.raises(ValueError, match=r"the given list of structures, structure 2 has no atoms; remove it"):
        read_dataset([*frames[:2], empty])


def test_non_finite_labels_in_a_file_name_structure_and_atom(tmp_path, frames):
    """A NaN among real forces, or an infinite energy, is an error naming where it is; all-NaN still marks missing."""
    forces = frames[1].calc.results["forces"].copy()
    forces[2, 1] = np.nan
    path = tmp_path / "nan.extxyz"
    ase.io.write(path, [frames[0], _with_labels(frames[1], forces=forces), *frames[2:]], format="extxyz")
    with pytest.raises(ValueError, match=rf"'{re.escape(str(path))}', structure 1: label 'forces'.*atom 2 \(nan\)"):
        read_dataset(path)
    images = list(frames)
    images[3] = _with_labels(frames[3], energy=np.inf)
    with pytest.raises(ValueError, match=r"structure 3: label 'energy'.*not finite: inf"):
        read_dataset(images)
    images[3] = _with_labels(frames[3], forces=np.full_like(forces, np.nan))
    assert not bool(read_dataset(images)[3][K.mask_key(K.FORCES)][0])


def test_absurd_labels_warn_naming_structure_and_atom(tmp_path, frames):
    """One force of 1e10 eV/angstrom (or an energy of 1e10 eV) among real labels trained silently before."""
    images = [*frames]
    for seed in range(3):  # more Cu cells, so that a Cu energy has others to be judged against
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        atoms.rattle(0.05, seed=seed)
        atoms.calc = EMT()
        atoms.get_forces()
        images.append(atoms)
    forces = frames[2].calc.results["forces"].copy()
    forces[3, 0] = 1e10
    images[2] = _with_labels(frames[2], forces=forces)
    images[7] = _with_labels(images[7], energy=1e10)
    path = tmp_path / "absurd.extxyz"
    ase.io.write(path, images, format="extxyz")
    with pytest.warns(LabelOutlierWarning) as record:
        read_dataset(path)
    (warning,) = record
    text = str(warning.message)
    assert text.startswith(f"'{path}': 2 label(s) lie far outside")
    assert "structure 2, atom 3: force (1e+10," in text and "structure 7: energy 1e+10 eV" in text
    read_dataset([*frames, *images[6:7], *images[8:]])  # the real labels: no warning (pytest turns one into an error)
