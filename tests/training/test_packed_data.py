"""Training from a packed folder (physml_md/training/packed_data.py through AtomsDataModule): the same splits,
structures, statistics and training as from its source file; exact mid-epoch resume; disjoint shards per rank."""

import copy

import ase.io
import numpy as np
import pytest
import torch

from physml_md.config.load import ConfigError, config_from_dict
from physml_md.data import keys as K
from physml_md.data.collate import collate
from physml_md.data.packed.folder import PackedDataset
from physml_md.data.packed.writer import pack
from physml_md.data.structures import LabelKeys
from physml_md.training.datamodule import AtomsDataModule
from physml_md.training.loader import ResumableLoader
from physml_md.training.run import train
from tests.training.helpers import SimulatedCrash, metric_column
from tests.training.test_datamodule import metal_frames, molecule_frames
from tests.training.test_run import _cli_train, _final_weights, _restart_config

KEYS = LabelKeys(charges=None, total_charge=None, dipole=None)  # what [data] reads by default


@pytest.fixture(scope="module")
def cu_packed(cu_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("packed") / "cu.packed"
    pack([cu_data], folder, KEYS, chunk_size=7)  # 3 chunks: structures cross chunk boundaries
    return folder


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_packed_source_gives_the_same_splits_structures_and_statistics(cu_data, cu_packed, dtype):
    data = {"cut_off": 4.0, "splitting_strategy": {"data_split": [0.6, 0.2, 0.2], "seed": 3}}
    memory = AtomsDataModule(source=str(cu_data), dtype=dtype, **data)
    lazy = AtomsDataModule(source=str(cu_packed), dtype=dtype, **data)
    memory.setup(), lazy.setup()
    assert isinstance(lazy.splits["train"], PackedDataset)
    assert lazy.split_indices_ == memory.split_indices_
    for name in ("train", "validation", "test"):
        assert len(lazy.splits[name]) == len(memory.splits[name])
        for a, b in zip(memory._split(name), lazy._split(name)):
            assert a.keys() == b.keys()
            for key in a:
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (name, key)
    assert lazy.species() == memory.species() == [29] and lazy.periodic() is memory.periodic() is True
    assert lazy.self_energies() == memory.self_energies()
    a, b = memory.statistics(), lazy.statistics()
    assert a.keys() == b.keys()
    for key in a:
        # other order of summation: rounding of eV-sized numbers (a residual mean is ~0: an absolute bound)
        rel = 1e-14 if dtype == "float64" or key != "forces_rms" else 1e-6  # (the float64 stored sums of squares)
        assert b[key] == pytest.approx(a[key], rel=rel, abs=1e-12), key
    # the packed split's hash names its files (manifest sha256s) and indices, read from no structure
    again = AtomsDataModule(source=str(cu_packed), dtype=dtype, **data)
    assert lazy.dataset_sha256() == again.dataset_sha256() != memory.dataset_sha256()
    other = AtomsDataModule(source=str(cu_packed), dtype=dtype, cut_off=4.0, splitting_strategy={"seed": 4})
    assert other.dataset_sha256() != lazy.dataset_sha256() and lazy.dataset_sha256("test") != lazy.dataset_sha256()
    # stored from the float64 positions (the in-memory path measures float32 ones in float32 training)
    for cutoff in (4.0, 6.0):  # 6.0: past the stored 5.0, computed from the structures
        a, b = memory.shortest_pair_distances(cutoff), lazy.shortest_pair_distances(cutoff)
        assert a.keys() == b.keys() == {"Cu-Cu"}
        if dtype == "float64":
            assert a == b
        assert b["Cu-Cu"] == pytest.approx(a["Cu-Cu"], rel=1e-7, abs=0)
    batch_a, batch_b = next(iter(memory.train_dataloader())), next(iter(lazy.train_dataloader()))
    assert all(torch.equal(batch_a[k], batch_b[k]) for k in batch_a)


def test_split_paths_index_bootstrap_and_workers(cu_data, cu_packed):
    memory = AtomsDataModule(train_data=str(cu_data), validation_data=str(cu_data), cut_off=4.0, index="3:11")
    lazy = AtomsDataModule(train_data=str(cu_packed), validation_data=str(cu_packed), cut_off=4.0, index="3:11")
    for name in ("train", "validation"):
        assert list(lazy._split(name).indices) == list(range(3, 11))
        for a, b in zip(memory._split(name), lazy._split(name)):
            assert all(torch.equal(a[key], b[key]) for key in a)
    boot = AtomsDataModule(source=str(cu_packed), cut_off=4.0, bootstrap_seed=5)
    reference = AtomsDataModule(source=str(cu_data), cut_off=4.0, bootstrap_seed=5)
    for a, b in zip(reference._split("train"), boot._split("train")):
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert boot.self_energies() == reference.self_energies()
    workers = AtomsDataModule(source=str(cu_packed), cut_off=4.0, num_workers=2)
    single = AtomsDataModule(source=str(cu_packed), cut_off=4.0)
    for a, b in zip(workers.train_dataloader(), single.train_dataloader()):
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_each_rank_reads_only_its_shard(cu_packed):
    module = AtomsDataModule(source=str(cu_packed), cut_off=4.0)
    train = module._split("train")
    read = {}
    for rank in (0, 1):
        log = []
        dataset = PackedDataset(train.folder, train.indices, train.labels, cutoff=4.0, log=log)
        loader = ResumableLoader(dataset, 3, seed=7, collate_fn=collate, rank=rank, world_size=2)
        loader.set_epoch(1)
        batches = list(loader)
        read[rank] = log
        assert sum(int(b[K.N_ATOMS].numel()) for b in batches) == len(log) == len(train) // 2
    assert not set(read[0]) & set(read[1])
    assert sorted(read[0] + read[1]) == sorted(train.indices.tolist())


def test_bad_packed_data_is_named(cu_data, cu_packed, tmp_path):
    with pytest.raises(ConfigError, match="does not store charges"):
        AtomsDataModule(source=str(cu_packed), cut_off=4.0, y_charges="charges").setup()
    with pytest.raises(ConfigError, match=r"stores the records of info\['record'\]; set"):
        AtomsDataModule(
            source=str(cu_packed),
            cut_off=4.0,
            splitting_strategy={"name": "random_record_splitting_strategy", "record_key": "molecule"},
        ).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is a folder without a packed-folder manifest"):
        AtomsDataModule(source=str(tmp_path / "empty"), cut_off=4.0)
    no_energy = tmp_path / "no_energy"
    pack([cu_data], no_energy, LabelKeys(energy="REF_energy", charges=None, total_charge=None, dipole=None))
    with pytest.raises(ValueError, match="required label 'energy' is missing in 16 of 16 structures"):
        AtomsDataModule(source=str(no_energy), cut_off=4.0, y_energy="REF_energy").setup()


def _run(tiny_config, source, root, epochs=2):
    raw = copy.deepcopy(tiny_config)
    raw["data"]["source"] = str(source)
    raw["trainer"]["max_epochs"] = epochs
    raw["trainer"]["default_root_dir"] = str(root)
    return train(config_from_dict(raw), verbose=False)


@pytest.mark.parametrize("neighbor_cutoff", [None, 4.0])  # 4.0: the stored lists, at the model's cut-off
def test_training_from_a_packed_folder_equals_training_from_its_file(
    tiny_config, cu_data, cu_packed, tmp_path, neighbor_cutoff
):
    if neighbor_cutoff is not None:
        cu_packed = tmp_path / "neighbors.packed"
        pack([cu_data], cu_packed, KEYS, chunk_size=7, neighbor_cutoff=neighbor_cutoff)
    memory = _run(tiny_config, cu_data, tmp_path / "file")
    lazy = _run(tiny_config, cu_packed, tmp_path / "packed")
    for name in ("train/loss", "val/loss", "val/per_atom_force/rmse"):
        a = metric_column(memory.run_dir / "metrics.csv", name)
        b = metric_column(lazy.run_dir / "metrics.csv", name)
        assert len(a) == 2 and a == b, name
    a = torch.load(memory.best_checkpoint, weights_only=True)
    b = torch.load(lazy.best_checkpoint, weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, value in a["state_dict"].items():
        assert value.dtype == torch.float64 or not value.is_floating_point()
        assert torch.equal(value, b["state_dict"][name]), name
    assert a["hyper_parameters"]["shortest_pair_distances"] == b["hyper_parameters"]["shortest_pair_distances"]
    assert lazy.test_metrics == memory.test_metrics


@pytest.mark.slow
def test_resume_mid_epoch_from_a_packed_folder(tiny_config, cu_packed, tmp_path):
    save = "tests.training.helpers.SaveFinalWeights"
    crash = "tests.training.helpers.CrashAtStep"
    tiny_config["data"]["source"] = str(cu_packed)
    reference = _restart_config(
        copy.deepcopy(tiny_config),
        tmp_path / "a",
        [{"class_path": save, "init_args": {"path": str(tmp_path / "a.pt")}}],
    )
    train(reference, verbose=False)
    crashing = _restart_config(
        copy.deepcopy(tiny_config), tmp_path / "b", [{"class_path": crash, "init_args": {"step": 5}}]
    )
    with pytest.raises(SimulatedCrash):
        train(crashing, verbose=False)
    (last,) = (tmp_path / "b").glob("version_*/checkpoints/last.ckpt")
    resumed = _restart_config(
        copy.deepcopy(tiny_config),
        tmp_path / "c",
        [{"class_path": save, "init_args": {"path": str(tmp_path / "c.pt")}}],
    )
    train(resumed, ckpt_path=last, verbose=False)
    full, rest = _final_weights(tmp_path / "a.pt"), _final_weights(tmp_path / "c.pt")
    assert full["batches"] == 9 and rest["batches"] == 5
    for name, value in full["state"].items():
        assert torch.equal(value, rest["state"][name]), name
    assert np.isfinite([float(v.sum()) for v in full["state"].values() if v.is_floating_point()]).all()


@pytest.mark.slow
def test_two_process_ddp_on_a_packed_folder_matches_one_process(tmp_path, tiny_config, cu_packed):
    """As tests/training/test_run.py's DDP test, from a packed folder: 2 gloo ranks with batch 2 = 1 process with 4."""
    tiny_config["trainer"]["max_epochs"] = 2
    tiny_config["data"]["source"] = str(cu_packed)
    single_dir, _ = _cli_train(tmp_path, copy.deepcopy(tiny_config), "single", ["data.train.batch_size=4"])
    ddp_dir, _ = _cli_train(
        tmp_path,
        copy.deepcopy(tiny_config),
        "ddp",
        ["data.train.batch_size=2", "trainer.devices=2", "trainer.strategy=ddp"],
    )
    for name in ("val/loss", "train/loss"):
        a, b = metric_column(single_dir / "metrics.csv", name), metric_column(ddp_dir / "metrics.csv", name)
        assert len(a) == len(b) == 2
        np.testing.assert_allclose(b, a, rtol=1e-8, err_msg=name)


def test_statistics_of_several_elements_equal_the_in_memory_ones(tmp_path):
    frames = metal_frames(8) + molecule_frames()  # Cu, Al, H, C, N, O; periodic and not
    path = tmp_path / "mixed.extxyz"
    ase.io.write(path, frames, format="extxyz")
    pack([path], tmp_path / "mixed.packed", KEYS, chunk_size=5)
    data = {"cut_off": 4.0, "splitting_strategy": {"data_split": [0.7, 0.3, 0.0]}}
    memory, lazy = (
        AtomsDataModule(source=str(path), **data),
        AtomsDataModule(source=str(tmp_path / "mixed.packed"), **data),
    )
    assert lazy.species() == memory.species() and lazy.periodic() is memory.periodic() is None
    fitted = memory.self_energies()
    assert len(fitted) == 6 and lazy.self_energies() == fitted  # the same least squares: bit for bit
    a, b = memory.statistics(), lazy.statistics()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-13, abs=1e-12), key
    with pytest.raises(ValueError, match=r"no self-energy for elements \[1, 6"):
        lazy.statistics({29: 0.0, 13: 0.0})


def test_record_strategy_splits_a_packed_folder_as_its_file(tmp_path):
    frames = molecule_frames(("H2O", "CH4", "NH3", "CO", "N2", "C2H2", "CH3OH", "H2CO"), conformations=3)
    for i, atoms in enumerate(frames[:6]):  # integer records, and structures without one (their formula counts)
        atoms.info["record"] = 100 + i // 3
    del frames[7].info["record"], frames[8].info["record"]
    path = tmp_path / "molecules.extxyz"
    ase.io.write(path, frames, format="extxyz")
    pack([path], tmp_path / "molecules.packed", KEYS, chunk_size=5)
    data = {"cut_off": 4.0, "splitting_strategy": {"name": "random_record_splitting_strategy", "seed": 2}}
    memory = AtomsDataModule(source=str(path), **data)
    lazy = AtomsDataModule(source=str(tmp_path / "molecules.packed"), **data)
    memory.setup(), lazy.setup()
    assert lazy.split_indices_ == memory.split_indices_
    assert lazy._split("train").folder.records()[:3] == [100] * 3 and lazy._split("train").folder.records()[7] == "H3N"
