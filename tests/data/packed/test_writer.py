"""physml_md.data.packed.writer (and `physml-md pack`): atomic writing, appending, several inputs, the manifest's
summary."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor as ProcessPool
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest

import physml_md.data.packed.writer as pack_module
from physml_md.cli.main import main as cli
from physml_md.data.elements import CHEMICAL_SYMBOLS
from physml_md.data.packed.folder import MANIFEST, PackedFolder, PackedFolderError, is_packed_folder
from physml_md.data.packed.writer import pack
from physml_md.data.readers import read_dataset
from physml_md.data.statistics import energy_statistics, fit_self_energies, pair_minima, shortest_pair_distances
from physml_md.data.structures import LabelKeys
from tests.data.packed.test_folder import ALL, _assert_same, mixed_frames
from tests.training.test_datamodule import metal_frames


@pytest.fixture(scope="module")
def mixed_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pack") / "mixed.extxyz"
    ase.io.write(path, mixed_frames(), format="extxyz")
    return path


def test_summary_is_what_the_statistics_functions_give(mixed_file, tmp_path):
    pack([mixed_file], tmp_path / "set", ALL, chunk_size=4, pair_cutoff=4.0)
    summary = PackedFolder(tmp_path / "set").summary
    structures = read_dataset(mixed_file, ALL, required=())
    fitted = fit_self_energies(structures)
    assert summary["self_energies"] == {CHEMICAL_SYMBOLS[z]: e for z, e in fitted.items()} and len(fitted) == 6
    forces_rms = energy_statistics(structures, fitted)["forces_rms"]
    assert summary["forces_rms"] == pytest.approx(forces_rms, rel=1e-14)
    assert summary["shortest_pair_distances"] == shortest_pair_distances(structures, 4.0)
    assert summary["label_counts"] == {"energy": 11, "forces": 11, "stress": 6, "charges": 4, "total_charge": 4,
                                       "dipole": 4}  # fmt: skip
    assert summary["elements"] == ["H", "C", "N", "O", "Al", "Cu"] and summary["n_periodic"] == 6


def test_ase_db_and_several_inputs(mixed_file, tmp_path):
    db = tmp_path / "more.db"
    with ase.db.connect(str(db)) as connection:
        for atoms in metal_frames(3, seed=5):
            connection.write(atoms)
    quiet = LabelKeys(charges=None, total_charge=None, dipole=None)
    pack([mixed_file, db], tmp_path / "set", quiet)
    folder = PackedFolder(tmp_path / "set")
    expected = read_dataset(mixed_file, quiet, required=()) + read_dataset(db, quiet, required=())
    assert len(folder) == 15
    for i, reference in enumerate(expected):
        _assert_same(folder.structure(i), reference)


def test_append_adds_chunks_and_leaves_the_old_ones(mixed_file, tmp_path):
    out = tmp_path / "set"
    pack([mixed_file], out, ALL, chunk_size=5)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.npy")}
    assert pack([mixed_file], out, ALL, append=True, chunk_size=5) == 12
    folder = PackedFolder(out, verify=True)
    assert len(folder) == 24 and len(folder.chunks) == 6
    assert all(p.read_bytes() == before[p.relative_to(out)] for p in out.rglob("*.npy") if p.relative_to(out) in before)
    expected = read_dataset(mixed_file, ALL, required=())
    for i in range(24):
        _assert_same(folder.structure(i), expected[i % 12])
    assert folder.summary["label_counts"]["energy"] == 22
    with pytest.raises(ValueError, match="same label options"):
        pack([mixed_file], out, LabelKeys(charges=None), append=True)
    with pytest.raises(ValueError, match="exists: give another output folder, or --append"):
        pack([mixed_file], out, ALL)
    with pytest.raises(ValueError, match="does not exist"):
        pack([mixed_file], tmp_path / "none", ALL, append=True)


def test_a_failed_pack_or_append_leaves_no_complete_looking_folder(mixed_file, tmp_path, monkeypatch):
    write_chunk = pack_module._write_chunk
    calls = []

    def failing(folder, name, arrays, summary):
        calls.append(name)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return write_chunk(folder, name, arrays, summary)

    monkeypatch.setattr(pack_module, "_write_chunk", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        pack([mixed_file], tmp_path / "set", ALL, chunk_size=5)
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary

    monkeypatch.setattr(pack_module, "_write_chunk", write_chunk)
    pack([mixed_file], tmp_path / "set", ALL, chunk_size=5)
    manifest = (tmp_path / "set" / MANIFEST).read_bytes()
    monkeypatch.setattr(pack_module, "_write_chunk", failing)
    calls.clear()
    with pytest.raises(RuntimeError, match="disk full"):
        pack([mixed_file], tmp_path / "set", ALL, chunk_size=5, append=True)
    assert (tmp_path / "set" / MANIFEST).read_bytes() == manifest
    assert len(PackedFolder(tmp_path / "set", verify=True)) == 12  # the written chunk is not listed: ignored


def test_a_killed_pack_leaves_no_folder_under_the_output_name(mixed_file, tmp_path):
    out = tmp_path / "set"
    script = (
        "import sys, time\n"
        "import physml_md.data.packed.writer as p\n"
        "write = p._write_chunk\n"
        "def slow(*args):\n"
        "    record = write(*args)\n"
        "    time.sleep(60)\n"
        "    return record\n"
        "p._write_chunk = slow\n"
        "p.PARALLEL_MIN = 4\n"  # with the worker process that reads neighbour lists
        "p.pack([sys.argv[1]], sys.argv[2], chunk_size=4)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(mixed_file), str(out)])
    temporary = tmp_path / f"set.tmp-{process.pid}"
    deadline = time.monotonic() + 120
    while not (temporary / "chunk-000000").is_dir() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    workers = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert len(workers) == 1  # the worker process sees its parent gone and exits: no orphan
    while Path(f"/proc/{workers[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{workers[0]}").exists() or "Z" in Path(f"/proc/{workers[0]}/stat").read_text().split()[2]
    assert (temporary / "chunk-000000").is_dir()  # it was killed mid-pack
    assert not out.exists() and not is_packed_folder(temporary)
    with pytest.raises(PackedFolderError, match="has no manifest.json: it is not a complete packed folder"):
        PackedFolder(temporary)


def test_cli_pack_and_info(mixed_file, tmp_path, capsys):
    out = tmp_path / "set"
    assert cli(["pack", str(mixed_file), str(out), "--charges-key", "charges", "--quiet", "--chunk-size", "5"]) == 0
    assert "packed 12 structures" in capsys.readouterr().out
    assert cli(["pack", str(mixed_file), str(out), "--quiet"]) == 2
    assert "exists: give another output folder, or --append" in capsys.readouterr().err
    assert cli(["pack", str(mixed_file), str(out), "--append", "--charges-key", "charges", "--quiet"]) == 0
    assert cli(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "24 (" in printed and "H C N O Al Cu" in printed and "charges 8/24" in printed and "stress 12/24" in printed
    assert "neighbour lists  not stored (pack --neighbor-cutoff R)" in printed
    assert cli(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["n_structures"] == 24
    (out / "chunk-000001" / "forces.npy").write_bytes(b"\x93NUMPY")
    assert cli(["info", str(out)]) == 2
    assert f"{out / 'chunk-000001' / 'forces.npy'} has 6 bytes, the manifest says" in capsys.readouterr().err
    assert cli(["info", str(tmp_path)]) == 2
    assert "has no manifest.json: it is not a complete packed folder" in capsys.readouterr().err


def test_info_names_the_stored_neighbour_lists(mixed_file, tmp_path, capsys):
    out = tmp_path / "with-lists"
    assert cli(["pack", str(mixed_file), str(out), "--neighbor-cutoff", "4", "--quiet"]) == 0
    assert cli(["info", str(out)]) == 0
    assert "neighbour lists  stored within 4 A\n" in capsys.readouterr().out


def _chunk_files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*.npy"))}


def test_the_worker_process_writes_what_one_process_writes(mixed_file, tmp_path, monkeypatch):
    """Chunks of >= PARALLEL_MIN structures with more input after them have their neighbour-list work done in a
    worker process while the next chunk is read: the files are byte for byte those of the one-process pack."""
    pack([mixed_file], tmp_path / "one", ALL, chunk_size=5, neighbor_cutoff=4.0)
    started = []
    monkeypatch.setattr(pack_module, "PARALLEL_MIN", 5)
    monkeypatch.setattr(pack_module, "ProcessPoolExecutor", lambda *a, **k: started.append(1) or ProcessPool(*a, **k))
    pack([mixed_file], tmp_path / "two", ALL, chunk_size=5, neighbor_cutoff=4.0)
    assert started == [1]  # one worker, for the pack's three chunks
    one, two = PackedFolder(tmp_path / "one"), PackedFolder(tmp_path / "two")
    assert one.manifest["chunks"] == two.manifest["chunks"] and one.summary == two.summary
    assert _chunk_files(tmp_path / "one") == _chunk_files(tmp_path / "two") and len(one.chunks) == 3


def test_pair_distances_from_the_stored_lists_equal_their_own_lists(mixed_file, tmp_path):
    """At equal cut-offs (the default with --neighbor-cutoff) the shortest pairs come from the stored lists: each
    chunk's arrays equal ``pair_minima`` computing its own ``batch_neighbor_list``."""
    pack([mixed_file], tmp_path / "set", ALL, chunk_size=5, neighbor_cutoff=4.0)
    folder = PackedFolder(tmp_path / "set")
    assert folder.manifest["pair_cutoff"] == 4.0 and len(folder.chunks) == 3
    structures = read_dataset(mixed_file, ALL, required=())
    for c, chunk in enumerate(folder.chunks):
        expected = pair_minima(structures[5 * c : 5 * c + 5], 4.0)
        for name, values in zip(("pairs_structure", "pairs_code", "pairs_distance"), expected):
            assert np.array_equal(chunk.load(name), values), (c, name)
