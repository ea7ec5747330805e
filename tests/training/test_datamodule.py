"""AtomsDataModule on small EMT-labelled data sets made here: rattled Cu/CuAl cells and H/C/N/O molecules."""

import os

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list as ase_neighbor_list

from physml_md.config.load import ConfigError
from physml_md.data import batch_neighbor_list, collate, dataset_sha256, fit_self_energies, read_dataset
from physml_md.data import keys as K
from physml_md.data.structures import LabelKeys, dict_to_atoms
from physml_md.models import build_model
from physml_md.training.datamodule import AtomsDataModule, PackedStructures
from physml_md.training.loader import ResumableLoader
from tests.helpers import EXACT, assert_close

CUT_OFF = 4.0
KEYS = LabelKeys(charges=None, total_charge=None, dipole=None)


def _label(atoms):
    atoms.calc = EMT()
    atoms.get_potential_energy()
    atoms.get_forces()
    if atoms.pbc.all():
        atoms.get_stress()
    return atoms


def metal_frames(n=8, seed=0):
    """Rattled 8-atom fcc Cu cells, every other one with 2 Al; EMT energy, forces and stress."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.6 + 0.02 * (i % 3), cubic=True).repeat((2, 1, 1))
        if i % 2:
            atoms.symbols[[1, 6]] = "Al"
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(_label(atoms))
    return frames


def molecule_frames(names=("H2O", "CH4", "NH3", "CO", "N2", "C2H2"), conformations=2, seed=1, record=True):
    """Rattled conformations of small molecules (no cell, not periodic), info["record"] = the molecule's name."""
    rng = np.random.default_rng(seed)
    frames = []
    for name in names:
        for _ in range(conformations):
            atoms = molecule(name)
            atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
            if record:
                atoms.info["record"] = name
            frames.append(_label(atoms))
    return frames


@pytest.fixture(scope="module")
def metals():
    return metal_frames()


@pytest.fixture(scope="module")
def metal_file(metals, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "cu.extxyz"
    ase.io.write(path, metals, format="extxyz")
    return path


def _edge_set(edge_index, cell_shifts):
    return set(zip(edge_index[0].tolist(), edge_index[1].tolist(), map(tuple, cell_shifts.long().tolist())))


def _module(**kwargs):
    kwargs.setdefault("cut_off", CUT_OFF)
    kwargs.setdefault("y_charges", None)
    return AtomsDataModule(**kwargs)


# ----------------------------------------------------------------------------------------- splits and loaders


def test_source_is_split_and_batched(metal_file, metals):
    dm = _module(
        source=str(metal_file),
        splitting_strategy={"name": "random_splitting_strategy", "data_split": [0.5, 0.25, 0.25], "seed": 3},
        train={"batch_size": 3},
    )
    dm.setup("fit")
    parts = dm.split_indices_
    assert sorted(parts["train"] + parts["validation"] + parts["test"]) == list(range(len(metals)))
    assert [len(dm.splits[s]) for s in ("train", "validation", "test")] == [4, 2, 2]
    assert "predict" not in dm.splits
    # the structures of each split are those of the file at the split's indices
    reference = read_dataset(str(metal_file), KEYS)
    for position, index in enumerate(parts["validation"]):
        stored = dm.splits["validation"][position]
        assert torch.equal(stored[K.POSITIONS], reference[index][K.POSITIONS])
        assert torch.equal(stored[K.ENERGY], reference[index][K.ENERGY])

    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableLoader) and loader.sampler.seed == dm.shuffle_seed == 42
    batches = list(loader)
    assert [int(b[K.N_ATOMS].numel()) for b in batches] == [3, 1]
    seen = sorted(float(e) for b in batches for e in b[K.ENERGY])
    assert seen == sorted(float(reference[i][K.ENERGY][0]) for i in parts["train"])
    for batch in batches:
        assert batch[K.POSITIONS].dtype == torch.float64
        assert batch[K.EDGE_INDEX].shape[0] == 2 and batch[K.CELL_SHIFTS].shape[1] == 3
        assert bool(batch[K.mask_key(K.STRESS)].all())
    val = list(dm.val_dataloader())
    assert len(val) == 1 and torch.equal(val[0][K.ENERGY], collate(list(dm.splits["validation"]))[K.ENERGY])


def test_setup_is_idempotent(metal_file, monkeypatch):
    dm = _module(source=metal_file)
    dm.setup("fit")
    splits = dict(dm.splits)

    def fail(*args, **kwargs):
        raise AssertionError("read again")

    monkeypatch.setattr("physml_md.training.datamodule.read_structures", fail)
    dm.setup("test")
    dm.setup("fit")
    assert all(dm.splits[name] is splits[name] for name in splits)


def test_record_strategy_keeps_molecules_together():
    frames = molecule_frames(names=("H2O", "CH4", "NH3", "CO", "N2", "C2H2", "CO2", "HCN"), conformations=3)
    strategy = {"name": "random_record_splitting_strategy", "data_split": [0.5, 0.25, 0.25], "record_key": "record"}
    dm = _module(source=frames, splitting_strategy=strategy, y_stress=None)
    dm.setup()
    owners = [{frames[i].info["record"] for i in dm.split_indices_[s]} for s in ("train", "validation", "test")]
    assert [len(o) for o in owners] == [4, 2, 2]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    # without the record key the chemical formula is the record
    plain = molecule_frames(conformations=3, record=False)
    dm = _module(source=plain, splitting_strategy=strategy, y_stress=None)
    dm.setup()
    formulas = [{plain[i].get_chemical_formula() for i in dm.split_indices_[s]} for s in ("train", "test")]
    assert len(formulas[0]) == 4 and not formulas[0] & formulas[1]  # 6 formulas: 4, 1, 1


def test_changing_the_split_seed_keeps_the_test_split(metal_file):
    def split(seed):
        dm = _module(
            source=metal_file, splitting_strategy={"seed": seed, "test_seed": 5, "data_split": [0.5, 0.25, 0.25]}
        )
        dm.setup()
        return dm.split_indices_

    a, b = split(1), split(2)
    assert a["test"] == b["test"] and a["train"] != b["train"]


def test_split_files_and_atoms_lists(metal_file, metals, tmp_path):
    molecules = molecule_frames(names=("H2O", "NH3"))
    predict_path = tmp_path / "predict.extxyz"
    ase.io.write(predict_path, [a.copy() for a in molecules[:2]], format="extxyz")  # no labels
    dm = _module(
        train={"path": str(metal_file), "batch_size": 2},
        validation_data=metals[:2],
        predict={"path": predict_path},
        index="1:",
    )
    dm.setup()
    assert len(dm.splits["train"]) == len(metals) - 1  # index applies to every file read
    assert len(dm.splits["validation"]) == 2 and "test" not in dm.splits
    assert len(dm.splits["predict"]) == 1 and not bool(dm.splits["predict"][0][K.mask_key(K.ENERGY)][0])
    assert dm.split_indices_ is None
    assert dm.species() == [1, 8, 13, 29], "every element of every split, including predict (H, O)"
    assert len(next(iter(dm.predict_dataloader()))[K.N_ATOMS]) == 1
    assert dm.val_dataloader() != [] and _module(train_data=metals).val_dataloader() == []
    with pytest.raises(ValueError, match="there is no test data"):
        dm.test_dataloader()


# ----------------------------------------------------------------------------------------- graphs


def test_edges_are_the_neighbour_lists_of_the_model_and_of_ase():
    frames = metal_frames(4) + molecule_frames(names=("CH4", "C2H2"), conformations=1)
    dm = _module(train_data=frames, train={"batch_size": len(frames)}, y_stress=None)
    batch = next(iter(dm.loader("train")))
    ours = _edge_set(batch[K.EDGE_INDEX], batch[K.CELL_SHIFTS])
    edges, shifts = batch_neighbor_list(batch[K.POSITIONS], batch[K.CELL], batch[K.PBC], batch[K.N_ATOMS], CUT_OFF)
    assert ours == _edge_set(edges, shifts)  # what Potential computes when no edges are given
    expected, offset = set(), 0
    for atoms in frames:
        i, j, s = ase_neighbor_list("ijS", atoms, CUT_OFF, self_interaction=False)
        expected |= {(a + offset, b + offset, tuple(c)) for a, b, c in zip(i.tolist(), j.tolist(), s.tolist())}
        offset += len(atoms)
    assert ours == expected
    assert len(expected) > 100 and any(shift != (0, 0, 0) for *_, shift in expected)


def test_model_on_a_batch_equals_the_model_without_precomputed_edges():
    frames = metal_frames(3) + molecule_frames(names=("H2O", "CO"), conformations=1)
    dm = _module(train_data=frames, train={"batch_size": 5}, y_stress=None)
    model = build_model(species=dm.species(), cutoff=CUT_OFF, features=8, n_interactions=1, n_rbf=4, seed=2).eval()
    batch = next(iter(dm.loader("train")))
    bare = {k: v for k, v in batch.items() if k not in (K.EDGE_INDEX, K.CELL_SHIFTS)}
    with_edges, without = model(batch), model(bare)
    for key in (K.ENERGY, K.FORCES, K.STRESS):
        assert_close(with_edges[key], without[key], EXACT[torch.float64], key)
    assert float(with_edges[K.STRESS].abs().max()) > 0


def test_float32_and_overrides():
    frames = molecule_frames(names=("H2O",), conformations=2)
    dm = _module(train_data=frames, dtype="float32", pbc=True, cell=[6.0, 6.0, 6.0], y_stress=None)
    dm.setup()
    for structure in dm.splits["train"]:
        assert structure[K.POSITIONS].dtype == torch.float32 and structure[K.ENERGY].dtype == torch.float32
        assert bool(structure[K.PBC].all())
        assert torch.equal(structure[K.CELL][0], torch.eye(3, dtype=torch.float32) * 6.0)
    assert dm.dataset_sha256() != _module(train_data=frames, y_stress=None).dataset_sha256()


# ----------------------------------------------------------------------------------------- on-disk cache


def _disk(tmp_path, frames, cut_off=CUT_OFF):
    dm = _module(train_data=frames, pre_batch="on_disk", cache_dir=tmp_path / "cache", cut_off=cut_off)
    dm.setup()
    return dm


def test_on_disk_cache_is_reused_and_rebuilt_when_needed(tmp_path, metals):
    first = _disk(tmp_path, metals)
    path = first.cache_paths["train"]
    assert first.cache_written == ["train"] and path.is_file()
    memory = _module(train_data=metals)
    for a, b in zip(first.splits["train"], memory.loader("train").dataset):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    mtime = path.stat().st_mtime_ns
    again = _disk(tmp_path, metals)
    assert again.cache_written == [] and again.cache_paths["train"] == path and path.stat().st_mtime_ns == mtime
    assert torch.equal(again.splits["train"].tensors[K.EDGE_INDEX], first.splits["train"].tensors[K.EDGE_INDEX])

    shorter = _disk(tmp_path, metals, cut_off="3.0 angstrom")
    assert shorter.cache_written == ["train"] and shorter.cache_paths["train"] != path
    assert shorter.splits["train"].tensors[K.EDGE_INDEX].shape[1] < first.splits["train"].tensors[K.EDGE_INDEX].shape[1]

    changed = []
    for i, atoms in enumerate(metals):  # the same structures, one energy 0.1 eV higher
        results = dict(atoms.calc.results, energy=atoms.calc.results["energy"] + (0.1 if i == 3 else 0.0))
        changed.append(atoms.copy())
        changed[-1].calc = SinglePointCalculator(changed[-1], **results)
    unchanged = _disk(tmp_path, [changed[i] if i != 3 else metals[3] for i in range(len(metals))])
    assert unchanged.cache_written == []
    rebuilt = _disk(tmp_path, changed)
    assert rebuilt.cache_written == ["train"]
    assert rebuilt.cache_paths["train"] not in (path, shorter.cache_paths["train"])
    assert float(rebuilt.splits["train"][3][K.ENERGY][0]) == metals[3].get_potential_energy() + 0.1
    assert len(list((tmp_path / "cache").iterdir())) == 3, "no temporary files left behind"


def test_packed_structures_round_trip(metals):
    structures = read_dataset(metals, KEYS)
    for data in structures:
        data[K.EDGE_INDEX] = torch.zeros(2, 3, dtype=torch.int64) + len(data[K.POSITIONS]) - 1
        data[K.CELL_SHIFTS] = torch.ones(3, 3, dtype=torch.int64)
    packed = PackedStructures.pack(structures)
    assert len(packed) == len(structures)
    for original, stored in zip(structures, packed):
        assert original.keys() == stored.keys()
        assert all(torch.equal(original[k], stored[k]) for k in original)


# ----------------------------------------------------------------------------------------- statistics


def test_statistics_come_from_the_training_split(metal_file):
    dm = _module(source=metal_file, splitting_strategy={"data_split": [0.5, 0.25, 0.25]})
    dm.setup()
    reference = read_dataset(str(metal_file), KEYS)
    train = [reference[i] for i in dm.split_indices_["train"]]
    assert dm.dataset_sha256() == dataset_sha256(train)
    assert dm.self_energies() == fit_self_energies(train)
    everything = fit_self_energies(reference)
    assert dm.self_energies() != everything
    statistics = dm.statistics(everything)
    assert statistics["n_energies"] == len(train) and statistics["forces_rms"] > 0
    test = [dict_to_atoms(data) for data in dm.splits["test"]]  # the test split in order, labels kept
    assert [a.get_potential_energy() for a in test] == [
        float(reference[i][K.ENERGY][0]) for i in dm.split_indices_["test"]
    ]


# ----------------------------------------------------------------------------------------- errors


def test_num_workers_all_means_every_cpu(metals):
    assert _module(train_data=metals, num_workers="all").num_workers == os.cpu_count()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "no training data: give source"),
        ({"source": "{file}", "train": {"path": "{file}"}}, "data.source and data.train.path are both set"),
        ({"source": "{file}", "test_data": "{file}"}, "both source and test data"),
        ({"train": {"path": "missing.xyz"}}, "train data: no such file 'missing.xyz'"),
        ({"source": "nowhere/data.xyz"}, "source: no such file"),
        ({"train_data": "{file}", "train": {"path": "{file}"}}, "train data given twice"),
        ({"train_data": "{file}", "self_interaction": True}, "zero-length edges"),
        ({"train_data": "{file}", "pre_batch": "on_disk"}, "give data.cache_dir"),
        ({"train_data": "{file}", "pre_batch": "disk"}, "data.pre_batch must be one of"),
        ({"train_data": "{file}", "train": {"batchsize": 4}}, "unknown key 'data.train.batchsize'; did you mean"),
        ({"source": "{file}", "splitting_strategy": {"name": "random"}}, "one of 'first_come"),
        ({"source": "{file}", "splitting_strategy": {"seeds": 1}}, "did you mean 'data.splitting_strategy.seed'"),
        ({"train_data": "{file}", "y_energy": None}, "data.y_energy is not set"),
        ({"train_data": "{file}", "num_workers": -1}, "data.num_workers must be"),
        ({"train_data": "{file}", "cut_off": "5 fs"}, "data.cut_off needs a length"),
        ({"train_data": "{file}", "pbc": [True, False]}, "data.pbc must be"),
        ({"train_data": "{file}", "cell": [[1.0, 2.0]]}, "data.cell must be a 3x3"),
        ({"train_data": 3}, "file path or a list of ase.Atoms"),
    ],
)
def test_bad_arguments(kwargs, message, metal_file):
    def fill(value):
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return str(metal_file) if value == "{file}" else value

    with pytest.raises(ConfigError, match=message):
        AtomsDataModule(**fill(kwargs))


def test_missing_energy_names_the_file(tmp_path):
    path = tmp_path / "unlabelled.extxyz"
    ase.io.write(path, [molecule("H2O")], format="extxyz")
    dm = _module(train={"path": path})
    with pytest.raises(ValueError, match=r"train data '.*unlabelled.extxyz': .*required label 'energy'"):
        dm.setup()


def test_broken_periodic_override_names_the_structure(metals):
    dm = _module(train_data=metals, cell=[[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]])
    with pytest.raises(ValueError, match="train structure 0: cell is singular"):
        dm.setup()


def test_periodicity_of_the_data(metals):
    """True for bulk only, False for molecules only, None when both occur (the engines check models against it)."""
    molecules = molecule_frames(conformations=1, record=False)
    assert _module(train_data=metals[:4], validation_data=metals[4:]).periodic() is True
    assert _module(train_data=molecules[:3], validation_data=molecules[3:]).periodic() is False
    assert _module(train_data=metals[:4], validation_data=molecules).periodic() is None
