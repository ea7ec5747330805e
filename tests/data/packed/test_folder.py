"""Packed folders (physml_md.data.packed.folder; writing: tests/data/packed/test_writer.py): lossless, read one
structure at a
time, and a damaged folder is refused with a sentence naming the file."""

import json

import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from physml_md.data import keys as K
from physml_md.data.packed.folder import MANIFEST, PackedDataset, PackedFolder, PackedFolderError
from physml_md.data.packed.writer import pack
from physml_md.data.readers import read_dataset
from physml_md.data.structures import LabelKeys
from tests.training.test_datamodule import metal_frames, molecule_frames

ALL = LabelKeys(charges="charges", total_charge="total_charge", dipole="dipole")


def mixed_frames():
    """Periodic Cu/Al cells (energy, forces, stress) and molecules (no stress); some with charges, total charge and
    dipole; one without forces, one without energy: every label kind, present and missing."""
    rng = np.random.default_rng(3)
    frames = metal_frames(6) + molecule_frames(("H2O", "CH4", "NH3"), conformations=2)
    for i, atoms in enumerate(frames):
        results = dict(atoms.calc.results)
        if i == 2:
            results.pop("forces")
        if i == 7:
            results.pop("energy")
        if i % 3 == 0:
            atoms.arrays["charges"] = rng.normal(size=len(atoms))
            atoms.info["total_charge"] = float(rng.normal())
            atoms.info["dipole"] = rng.normal(size=3)
        atoms.calc = SinglePointCalculator(atoms, **results)
    return frames


@pytest.fixture(scope="module")
def mixed_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("packed") / "mixed.extxyz"
    ase.io.write(path, mixed_frames(), format="extxyz")
    return path


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_round_trip_is_lossless(mixed_file, tmp_path):
    out = tmp_path / "set"
    assert pack([mixed_file], out, ALL, chunk_size=5) == 12
    folder = PackedFolder(out, verify=True)
    assert len(folder) == 12 and len(folder.chunks) == 3 and folder.labels == list(ALL.requested())
    expected = read_dataset(mixed_file, ALL, required=())
    for i, reference in enumerate(expected):
        _assert_same(folder.structure(i), reference)
    # against ASE's own numbers (an independent reader): float64, bit for bit
    for i, atoms in enumerate(ase.io.read(mixed_file, ":")):
        stored = folder.arrays(i)
        assert stored[K.POSITIONS].dtype == np.float64
        assert np.array_equal(stored[K.POSITIONS], atoms.positions)
        assert np.array_equal(stored[K.CELL][0], atoms.cell.array)
        if "forces" in atoms.calc.results:
            assert np.array_equal(stored[K.FORCES], atoms.calc.results["forces"])
        else:
            assert not stored[K.mask_key(K.FORCES)][0]
        if "charges" in atoms.arrays:
            assert np.array_equal(stored[K.CHARGES], atoms.arrays["charges"])


def test_a_damaged_folder_is_refused_naming_the_file(mixed_file, tmp_path):
    out = tmp_path / "set"
    pack([mixed_file], out, ALL, chunk_size=5)
    positions = out / "chunk-000001" / "positions.npy"
    data = positions.read_bytes()
    positions.write_bytes(data[:-8])
    with pytest.raises(PackedFolderError, match=f"{positions} has {len(data) - 8} bytes, the manifest says"):
        PackedFolder(out)
    flipped = bytearray(data)
    flipped[-1] ^= 1
    positions.write_bytes(bytes(flipped))
    PackedFolder(out)  # the sizes agree
    with pytest.raises(PackedFolderError, match=f"{positions} does not match its sha256"):
        PackedFolder(out, verify=True)
    positions.unlink()
    with pytest.raises(PackedFolderError, match=f"{positions} is missing"):
        PackedFolder(out)
    (out / MANIFEST).write_text('{"format": "physml-md packed str')
    with pytest.raises(PackedFolderError, match=f"{out / MANIFEST} is damaged"):
        PackedFolder(out)
    (out / MANIFEST).write_text(json.dumps({"format": "physml-md packed structures", "format_version": 99}))
    with pytest.raises(PackedFolderError, match="format version 99; this physml-md reads version 1"):
        PackedFolder(out)


def test_dataset_reads_only_its_indices_with_neighbour_lists(mixed_file, tmp_path):
    pack([mixed_file], tmp_path / "set", ALL, chunk_size=5)
    log = []
    dataset = PackedDataset(PackedFolder(tmp_path / "set"), [7, 2, 11], ["energy"], cutoff=3.0, log=log)
    items = list(dataset)
    assert log == [7, 2, 11] and len(items) == 3
    assert set(items[0]) == {
        K.POSITIONS,
        K.ATOMIC_NUMBERS,
        K.CELL,
        K.PBC,
        K.BATCH,
        K.N_ATOMS,
        "energy",
        "energy_mask",
        K.EDGE_INDEX,
        K.CELL_SHIFTS,
    }
    with pytest.raises(IndexError):
        dataset[3]
