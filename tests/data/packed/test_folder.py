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
from physml_md.data.neighbors import neighbor_list
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
    with pytest.raises(PackedFolderError, match="format version 99; this physml-md reads versions 1, 2: pack the"):
        PackedFolder(out)


def test_a_folder_of_format_version_1_is_read(mixed_file, tmp_path):
    out = tmp_path / "set"
    pack([mixed_file], out, ALL, chunk_size=5)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format_version"] == 2 and manifest["neighbor_cutoff"] is None
    manifest["format_version"] = 1  # version 1: no neighbor_cutoff, no neighbour arrays
    del manifest["neighbor_cutoff"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    folder = PackedFolder(out)
    assert len(folder) == 12 and folder.neighbors(0, 3.0, torch.zeros(3, 3), torch.eye(3)) is None


def _edge_set(edge_index, shifts):
    return sorted(map(tuple, torch.cat([edge_index.T, shifts], dim=1).tolist()))


@pytest.mark.parametrize(
    ("dtype", "cutoff", "stored_used"),
    [
        (torch.float64, 4.0, True),  # the stored lists as they are (the same order too)
        (torch.float64, 2.9, True),  # filtered by distance
        (torch.float32, 2.9, True),
        (torch.float32, 4.0, False),  # float32 rounding could move a pair across the stored cut-off: computed
        (torch.float64, 4.5, False),  # beyond the stored cut-off: computed
    ],
)
def test_stored_neighbour_lists_are_the_computed_ones(mixed_file, tmp_path, dtype, cutoff, stored_used):
    out = tmp_path / "set"
    pack([mixed_file], out, ALL, chunk_size=5, neighbor_cutoff=4.0)
    folder = PackedFolder(out, verify=True)
    assert folder.manifest["neighbor_cutoff"] == 4.0
    dataset = PackedDataset(folder, range(12), ["energy"], dtype=dtype, cutoff=cutoff)
    for i, data in enumerate(dataset):
        fresh = neighbor_list(data[K.POSITIONS], data[K.CELL][0], data[K.PBC][0], cutoff)
        stored = folder.neighbors(i, cutoff, data[K.POSITIONS], data[K.CELL][0])
        assert (stored is not None) == stored_used
        assert data[K.EDGE_INDEX].dtype == data[K.CELL_SHIFTS].dtype == torch.int64
        assert _edge_set(data[K.EDGE_INDEX], data[K.CELL_SHIFTS]) == _edge_set(*fresh)
        if stored_used and cutoff == 4.0 or not stored_used:
            assert torch.equal(data[K.EDGE_INDEX], fresh[0]) and torch.equal(data[K.CELL_SHIFTS], fresh[1])
    assert len(dataset[0][K.EDGE_INDEX][0]) > 0  # (not vacuous)
    overridden = PackedDataset(folder, [0], ["energy"], cutoff=3.0, pbc=[False] * 3)[0]  # computed for the override
    assert _edge_set(overridden[K.EDGE_INDEX], overridden[K.CELL_SHIFTS]) == _edge_set(
        *neighbor_list(overridden[K.POSITIONS], overridden[K.CELL][0], overridden[K.PBC][0], 3.0)
    )


def test_append_stores_neighbour_lists_at_the_folders_cutoff(mixed_file, tmp_path):
    out = tmp_path / "set"
    pack([mixed_file], out, ALL, chunk_size=5, neighbor_cutoff=3.5)
    pack([mixed_file], out, ALL, chunk_size=5, append=True)
    folder = PackedFolder(out, verify=True)
    assert len(folder) == 24 and all(chunk.edge_start is not None for chunk in folder.chunks)
    data = folder.structure(19)  # structure 7 again
    again, first = (folder.neighbors(i, 3.5, data[K.POSITIONS], data[K.CELL][0]) for i in (19, 7))
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    with pytest.raises(ValueError, match="neighbor_cutoff must be a positive number of angstrom, got -1"):
        pack([mixed_file], tmp_path / "bad", ALL, neighbor_cutoff=-1.0)


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
