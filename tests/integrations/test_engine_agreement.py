"""physml_md/integrations/engine_agreement.py: the exported file through the ASE calculator and each OpenMM backend,
against the file itself, in the file's agreement report (``export_model``, the one export path)."""

import pytest
from ase import Atoms

import physml_md
from physml_md.export import read_metadata
from physml_md.export.agreement import AgreementError
from physml_md.integrations import engine_agreement as agreement
from physml_md.integrations.openmm import available_backends
from physml_md.models import build_model


@pytest.fixture(scope="module", params=["float64", "float32"])
def model(request):
    return build_model(
        "painn", species=["H", "O", "Cu"], cutoff=4.0, features=8, n_interactions=1, dtype=request.param
    ).eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return agreement.export_model(model, tmp_path_factory.mktemp("agreement") / "model.pt")


def test_every_engine_gives_the_files_numbers_and_the_report_says_so(exported):
    report = read_metadata(exported)["agreement"]
    rows = report["differences"]
    expected = {"file vs eager", "ase vs file"} | {f"openmm {b} vs file" for b in available_backends()}
    assert set(rows) == expected
    assert set(rows["ase vs file"]) == {"energy", "forces", "stress"}
    for name, values in rows.items():
        assert all(0.0 <= value <= report["tolerance"] for value in values.values()), (name, values)
    assert physml_md.load_potential(exported).metadata["agreement"] == report  # the rewritten file still loads


def test_a_program_file_has_the_rows_of_the_engines_that_load_it(tmp_path):
    model = build_model("painn", species=["H", "O"], cutoff=4.0, features=8, n_interactions=1).eval()
    path = agreement.export_model(model, tmp_path / "model.pt2")
    rows = read_metadata(path)["agreement"]["differences"]
    backends = {f"openmm {b} vs file" for b in available_backends() if b != "torchforce"}
    assert set(rows) == {"file vs eager", "ase vs file"} | backends


def test_only_cells_openmm_can_hold_are_given_to_openmm():
    cluster = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]])
    reduced = Atoms("H", cell=[[3, 0, 0], [1, 3, 0], [1, 1, 3]], pbc=True)
    sheared = Atoms("H", cell=[[3, 0, 0], [2, 3, 0], [0, 0, 3]], pbc=True)  # |b_x| > a_x / 2
    slab = Atoms("H", cell=[3, 3, 3], pbc=[True, True, False])
    assert agreement._openmm_box(cluster) is None and agreement._openmm_box(slab) is None
    assert agreement._openmm_box(sheared) is None
    assert agreement._openmm_box(reduced) == pytest.approx(reduced.cell.array / 10.0)


def test_an_engine_that_disagrees_is_named_and_nothing_is_written(model, tmp_path, monkeypatch):
    real = agreement._ase_outputs

    def off(path, structures):
        outputs = real(path, structures)
        outputs[0]["forces"] = outputs[0]["forces"] + 0.5
        return outputs

    monkeypatch.setattr(agreement, "_ase_outputs", off)
    target = tmp_path / "model.pt"
    target.write_bytes(b"kept")  # a file there (as --force leaves it until the new one is checked)
    with pytest.raises(
        AgreementError,
        match=r"model\.pt: the ase engine and the file disagree on forces by .*: ase does not run this file faithfully",
    ) as caught:
        agreement.export_model(model, target)
    assert ".tmp" not in str(caught.value)  # the error names the output, not its temporary
    assert target.read_bytes() == b"kept" and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
