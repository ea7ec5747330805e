"""physml_md/export/agreement.py: every export measures the written file against the eager model, and refuses a
file that does not give the model's numbers."""

import pytest
import torch
from ase.build import molecule

import physml_md
import physml_md.export.save as save
from physml_md.data.structures import atoms_to_dict
from physml_md.export import read_metadata
from physml_md.export.agreement import AGREEMENT_TOLERANCE, AgreementError, builtin_structures
from physml_md.models import MODEL_NAMES, build_model
from tests.helpers import EXACT, assert_close, export_model, inputs, rattled_cu


@pytest.fixture(scope="module", params=MODEL_NAMES)
def model(request):
    """Every architecture's export model."""
    return export_model(request.param)


def test_the_export_measures_the_written_file_against_the_eager_model(model, tmp_path):
    """The agreement report: the file loaded again and the eager model on built-in structures (none given) or on the
    first three of the given ones; the report's numbers are what an independent evaluation of the file finds."""
    exported = physml_md.export_potential(model, tmp_path / "model.pt")
    report = read_metadata(exported)["agreement"]
    assert report["source"] == "built-in" and report["structures"] == 2
    assert report["tolerance"] == AGREEMENT_TOLERANCE["float64"] == 1e-10
    measured = report["differences"]["file vs eager"]
    assert set(measured) == {"energy", "forces", "stress"}  # the built-in cell is periodic: stress is compared
    assert all(0.0 <= value <= 1e-10 for value in measured.values()), measured
    loaded = physml_md.load_potential(exported)
    for data in builtin_structures(list(model.species), model.cutoff, torch.float64):
        assert_close(loaded(dict(data))["forces"].detach(), model(dict(data))["forces"].detach(), EXACT[torch.float64])
    given = [atoms_to_dict(atoms) for atoms in [molecule("CH3CH2OH"), rattled_cu(1)] * 2]
    path = physml_md.export_potential(model, tmp_path / "given.pt", structures=given)
    report = read_metadata(path)["agreement"]
    assert report["source"] == "training" and report["structures"] == 3


def test_an_unfaithful_file_fails_the_export_with_a_sentence(model, tmp_path, monkeypatch):
    """A file whose numbers differ from the model's (here: its energy read back 0.01 eV off) is not written."""
    real = save.load_potential

    def unfaithful(path, device="cpu"):
        loaded = real(path, device)
        module = loaded.module

        class Shifted(torch.nn.Module):
            def forward(self, data):
                out = dict(module(data))
                out["energy"] = out["energy"] + 0.01
                return out

        loaded.module = Shifted()
        return loaded

    monkeypatch.setattr(save, "load_potential", unfaithful)
    scale = max(1.0, abs(float(model(inputs(molecule("CH3CH2OH")))["energy"])))  # about the sum of the self-energies
    with pytest.raises(AgreementError) as error:
        physml_md.export_potential(model, tmp_path / "m.pt")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'm.pt'}: the exported torchscript file and the model"), message
    assert "disagree on energy by" in message and "the tolerance for this dtype is 1e-10" in message, message
    assert 0.3 * 0.01 / scale < float(message.split("energy by ")[1].split(" ")[0]) <= 0.01, message
    assert not list(tmp_path.iterdir())


def test_the_agreement_report_of_a_float32_and_a_program_export(tmp_path):
    small = build_model("painn", species=["H", "O"], cutoff=3.0, features=8, n_interactions=1, dtype="float32")
    path = physml_md.export_potential(small.eval(), tmp_path / "m32.pt")
    report = read_metadata(path)["agreement"]
    assert report["tolerance"] == AGREEMENT_TOLERANCE["float32"] == 1e-4
    assert all(value <= 1e-4 for value in report["differences"]["file vs eager"].values())
    program = physml_md.export_potential(small.eval(), tmp_path / "m32.pt2", format="export")
    assert set(read_metadata(program)["agreement"]["differences"]["file vs eager"]) == {"energy", "forces", "stress"}
    assert physml_md.load_potential(program).format == "export"  # the rewritten archive still loads


def test_a_trained_model_is_checked_on_its_training_structures(cu_model):
    report = read_metadata(cu_model.model_path)["agreement"]
    assert report["source"] == "training" and report["structures"] == 3
    assert all(value <= 1e-10 for value in report["differences"]["file vs eager"].values())
