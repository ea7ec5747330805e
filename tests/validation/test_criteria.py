"""physml_md/validation/criteria.py, the validation suite's trust criteria: the extrapolation flag (the closest
contact of each
element pair during the runs, against the shortest distance of that pair in the training data) and a committee's
force uncertainty along the runs."""

import inspect
from pathlib import Path

import pytest

import physml_md
from physml_md.data.statistics import EXTRAPOLATION_MARGIN
from physml_md.export import export_potential
from physml_md.integrations.ase import ExtrapolationWarning, PhysMLCalculator
from physml_md.models import build_model
from physml_md.validation.suite import validate
from tests.helpers import rattled_cu

NAME = "closest contact / training data's"


@pytest.fixture(scope="module")
def cu_file(tmp_path_factory):
    """A smooth untrained Cu model (one interaction, ZBL: a short run stays near the lattice) whose metadata says
    the training data never brought two Cu atoms closer than 2.7 angstrom (the lattice has them 2.55 apart)."""
    model = build_model(species=["Cu"], cutoff=4.0, features=8, n_interactions=1, zbl=True, seed=3).eval()
    path = tmp_path_factory.mktemp("extrapolation") / "model.pt"
    return export_potential(model, path, {"shortest_pair_distances": {"Cu-Cu": 2.7}})


def _criterion(report):
    return next(c for c in report.criteria if c.name == NAME)


def test_a_run_below_the_training_minimum_is_flagged(cu_file):
    with pytest.warns(ExtrapolationWarning, match="Cu-Cu"):  # the ASE calculator says so too, once
        report = validate(cu_file, rattled_cu(1), nvt_steps=20, nve_steps=10, report_every=5, temperature="50 K")
    criterion = _criterion(report)
    assert not criterion.passed and not report.passed
    assert criterion.threshold == 1.0 - EXTRAPOLATION_MARGIN
    assert 2.3 / 2.7 < criterion.value < 2.6 / 2.7  # nearest neighbours about 2.55 angstrom apart
    assert "Cu-Cu" in criterion.detail and "training data 2.700 angstrom" in criterion.detail
    assert "extrapolating" in criterion.detail


def test_a_file_without_training_distances_has_no_such_criterion(tmp_path):
    model = build_model(species=["Cu"], cutoff=4.0, features=8, n_interactions=1, zbl=True, seed=3).eval()
    path = export_potential(model, tmp_path / "model.pt")
    report = validate(path, rattled_cu(1), nvt_steps=10, nve_steps=5, report_every=5, temperature="50 K")
    assert NAME not in [c.name for c in report.criteria]


def test_the_closest_contact_threshold_is_an_option_and_the_warning_names_the_callers_line(cu_file):
    """The same run as above passes at 0.9 (its ratio is about 0.92); the calculator's warning points outside the
    package (here: this file), not at a physml_md source line."""
    with pytest.warns(ExtrapolationWarning, match="Cu-Cu") as caught:
        report = validate(cu_file, rattled_cu(1), nvt_steps=20, nve_steps=10, report_every=5, temperature="50 K",
                          thresholds={"closest_contact": 0.9})  # fmt: skip
    criterion = _criterion(report)
    assert criterion.threshold == 0.9 and criterion.passed and 0.9 < criterion.value < 0.95
    assert report.settings["thresholds"]["closest_contact"] == 0.9
    package = str(Path(physml_md.__file__).parent)
    assert caught[0].filename == __file__, caught[0].filename
    assert all(not w.filename.startswith(package) for w in caught)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="closest_contact threshold is a positive fraction"):
            validate(cu_file, rattled_cu(1), nvt_steps=2, nve_steps=2, thresholds={"closest_contact": bad})


def test_the_calculator_warning_names_the_callers_line(cu_file):
    atoms = rattled_cu(1)
    atoms.calc = PhysMLCalculator(cu_file)
    with pytest.warns(ExtrapolationWarning) as caught:
        atoms.get_potential_energy()
    assert (caught[0].filename, caught[0].lineno) == (__file__, inspect.currentframe().f_lineno - 1)


def test_validate_has_a_contact_threshold_option(monkeypatch, tmp_path):
    from physml_md.cli import main as cli

    seen = {}

    def fake_validate(model, atoms, **kwargs):
        seen.update(kwargs["thresholds"])
        raise ValueError("stop here")

    # the name the command calls (patching physml_md.validation.suite.validate misses it once commands is imported)
    monkeypatch.setattr("physml_md.cli.commands.validate", fake_validate)
    structure = tmp_path / "cu.extxyz"
    rattled_cu().write(structure)
    argv = ["validate", str(tmp_path / "model.pt"), "--structures", str(structure), "--contact-threshold", "0.9"]
    assert cli.main(argv) == 2
    assert seen == {"closest_contact": 0.9}
