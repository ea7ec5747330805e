"""The exported file: round trip, a fresh process without physml_md, metadata, atomic writes, bad files.

Tests physml_md/export/save.py, and through it physml_md/export/metadata.py (the document) and
physml_md/export/loading.py (every export test loads the file it wrote)."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

import physml_md
from physml_md.export import METADATA_FILE, ExportFormatError, read_metadata
from physml_md.export.metadata import FORMAT_VERSION, weights_sha256
from physml_md.models import MODEL_NAMES, build_model
from tests.helpers import EXACT, assert_close, export_model, inputs, requires_cuda


@pytest.fixture(scope="module", params=MODEL_NAMES)
def arch(request):
    """Every architecture: the tests that use ``model`` run once per architecture."""
    return request.param


@pytest.fixture(scope="module")
def model(arch):
    return export_model(arch)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "model.pt"
    physml_md.export_potential(model, path, {"data_sha256": "0" * 64, "description": "test model"})
    return path


def structures():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    cu.rattle(0.05, seed=1)
    return {"ethanol": molecule("CH3CH2OH"), "cu": cu}


def test_metadata_describes_the_model(model, exported, arch):
    meta = read_metadata(exported)
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["physml_md_version"] == physml_md.__version__
    assert meta["torch_version"] == torch.__version__
    assert meta["species"] == ["H", "C", "O", "Cu"] and meta["atomic_numbers"] == [1, 6, 8, 29]
    assert meta["cutoff"] == 4.5 and meta["dtype"] == "float64"
    assert meta["units"]["length"] == "angstrom" and meta["units"]["energy"] == "eV"
    assert meta["self_energies"] == {"H": -13.6, "C": -1029.0, "O": -2040.0, "Cu": -0.5}
    assert meta["hyperparameters"]["features"] == 16 and meta["hyperparameters"]["zbl"] is True
    assert meta["model"] == arch and meta["hyperparameters"]["name"] == arch
    assert meta["weights_sha256"] == weights_sha256(model)
    assert meta["data_sha256"] == "0" * 64 and meta["description"] == "test model"
    assert meta["imports"] == ["vesin_torch"] and "vesin-torch" in meta["requires"]
    assert meta["created"].endswith("+00:00")


def test_weights_hash_follows_the_weights(model, arch):
    other = build_model(arch, species=["H", "C", "O", "Cu"], cutoff=4.5, features=16, n_interactions=2, zbl=True)
    other.load_state_dict(model.state_dict())
    assert weights_sha256(other) == weights_sha256(model)
    with torch.no_grad():
        next(other.parameters())[0].add_(1e-12)
    assert weights_sha256(other) != weights_sha256(model)


def test_loaded_file_equals_eager_model(model, exported):
    loaded = physml_md.load_potential(exported)
    assert loaded.cutoff == 4.5 and loaded.atomic_numbers == [1, 6, 8, 29] and loaded.dtype == torch.float64
    for name, atoms in structures().items():
        eager = model(inputs(atoms))
        out = loaded(inputs(atoms))
        assert set(out) == set(eager)
        for key in eager:
            assert_close(out[key].numpy(), eager[key].numpy(), EXACT[torch.float64], f"{name} {key}")


FRESH_PROCESS = """
import sys, json, torch, numpy as np
import vesin_torch  # the file's neighbour list is a TorchScript class from vesin-torch
from ase.build import bulk
module = torch.jit.load(sys.argv[1])
atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
atoms.rattle(0.05, seed=1)
out = module({
    "positions": torch.tensor(atoms.positions), "atomic_numbers": torch.tensor(atoms.numbers),
    "cell": torch.tensor(atoms.cell.array).unsqueeze(0), "pbc": torch.tensor(atoms.pbc).unsqueeze(0),
})
assert not any(name.startswith("physml_md") for name in sys.modules), "physml_md was imported"
print(json.dumps({k: v.tolist() for k, v in out.items()}))
"""


def test_fresh_process_without_physml_md_gets_the_same_numbers(model, exported):
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(exported)],
        capture_output=True,
        text=True,
        check=True,
        cwd=exported.parent,
        env={**os.environ, "PYTHONPATH": ""},
    )
    out = json.loads(result.stdout)
    eager = model(inputs(structures()["cu"]))
    for key in ("energy", "energies", "forces", "stress"):
        assert_close(np.array(out[key]), eager[key].numpy(), EXACT[torch.float64], key)


@requires_cuda
def test_load_onto_cuda(model, exported):
    loaded = physml_md.load_potential(exported, device="cuda")
    atoms = structures()["cu"]
    out = loaded({k: v.to("cuda") for k, v in inputs(atoms).items()})
    assert_close(out["forces"].cpu().numpy(), model(inputs(atoms))["forces"].numpy(), 1e-9, "forces on cuda")


def test_float32_export_round_trip(tmp_path, arch):
    model = build_model(arch, species=["Cu"], cutoff=4.0, features=8, n_interactions=1, dtype="float32").eval()
    path = physml_md.export_potential(model, tmp_path / "m32.pt")
    loaded = physml_md.load_potential(path)
    assert loaded.dtype == torch.float32
    atoms = structures()["cu"]
    out = loaded(inputs(atoms, torch.float32))
    assert out["forces"].dtype == torch.float32
    assert_close(
        out["forces"].numpy(), model(inputs(atoms, torch.float32))["forces"].numpy(), EXACT[torch.float32], "forces"
    )


def test_float32_model_exported_in_float64(tmp_path):
    trained = build_model(species=["H", "C", "O"], cutoff=4.0, features=8, n_interactions=2, dtype="float32").eval()
    path = physml_md.export_potential(trained, tmp_path / "m64.pt", dtype="float64")
    assert next(trained.parameters()).dtype == torch.float32, "the trained model itself must stay float32"
    meta = read_metadata(path)
    assert meta["dtype"] == "float64" and meta["trained_dtype"] == "float32"
    assert meta["hyperparameters"]["dtype"] == "float64"
    # independent reference: a float64 model of the same architecture given the float32 weights
    reference = build_model(species=["H", "C", "O"], cutoff=4.0, features=8, n_interactions=2, dtype="float64")
    reference.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in trained.state_dict().items()})
    atoms = molecule("CH3CH2OH")
    out = physml_md.load_potential(path)(inputs(atoms))
    expected = reference.eval()(inputs(atoms))
    assert out["forces"].dtype == torch.float64
    assert_close(out["energy"].numpy(), expected["energy"].numpy(), EXACT[torch.float64], "energy")
    assert_close(out["forces"].numpy(), expected["forces"].numpy(), EXACT[torch.float64], "forces")
    same = physml_md.export_potential(trained, tmp_path / "m32.pt", dtype="float32")
    assert "trained_dtype" not in read_metadata(same)


def test_write_is_atomic(model, tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    path.write_bytes(b"previous content")

    def failing_save(module, filename, _extra_files=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch.jit, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        physml_md.export_potential(model, path)
    assert path.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_a_file_that_is_not_an_export(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ExportFormatError, match="not a physml-md export \\(not a zip archive\\)"):
        physml_md.load_potential(text)
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(plain))
    with pytest.raises(ExportFormatError, match=f"without physml-md's {METADATA_FILE}: .* or it is not a physml-md"):
        physml_md.load_potential(plain)
    with pytest.raises(FileNotFoundError, match="no exported model at"):
        physml_md.load_potential(tmp_path / "missing.pt")


def rewrite_metadata(source, target, change):
    """Copy an exported archive, changing its metadata document."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("/extra/" + METADATA_FILE):
                meta = json.loads(data)
                change(meta)
                data = json.dumps(meta).encode()
            zout.writestr(item, data)


def test_newer_format_version_is_refused(exported, tmp_path):
    newer = tmp_path / "newer.pt"
    rewrite_metadata(exported, newer, lambda meta: meta.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(
        ExportFormatError, match=f"format_version {FORMAT_VERSION + 1}, newer than .* upgrade physml-md"
    ):
        physml_md.load_potential(newer)


def test_species_that_disagree_with_the_module_are_refused(exported, tmp_path):
    altered = tmp_path / "altered.pt"
    rewrite_metadata(
        exported, altered, lambda meta: meta.update(species=["H", "C", "O", "Ag"], atomic_numbers=[1, 6, 8, 47])
    )
    with pytest.raises(ExportFormatError, match="do not match the module"):
        physml_md.load_potential(altered)


def test_a_cutoff_that_disagrees_with_the_module_is_refused(exported, tmp_path):
    """`physml-md info` reads the metadata; loading checks it against the module, which uses its own cutoff."""
    altered = tmp_path / "altered.pt"
    rewrite_metadata(exported, altered, lambda meta: meta.update(cutoff=meta["cutoff"] + 1.0))
    with pytest.raises(ExportFormatError, match=r"metadata cutoff .* does not match the module's .* export the model"):
        physml_md.load_potential(altered)


def test_metadata_cannot_override_computed_keys(model, tmp_path):
    with pytest.raises(ValueError, match="'cutoff' is computed by export_potential"):
        physml_md.export_potential(model, tmp_path / "m.pt", {"cutoff": 3.0})
    with pytest.raises(TypeError):
        physml_md.export_potential(model, tmp_path / "m.pt", {"object": object()})
    assert not list(tmp_path.iterdir())
