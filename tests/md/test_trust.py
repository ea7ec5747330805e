"""physml_md/md/trust.py, the validation suite's trust criteria: the extrapolation flag (the closest contact of each
element pair during the runs, against the shortest distance of that pair in the training data) and a committee's
force uncertainty along the runs."""

import pytest

from physml_md.data.statistics import EXTRAPOLATION_MARGIN
from physml_md.export import export_potential
from physml_md.integrations.ase import ExtrapolationWarning
from physml_md.md.validation import validate
from physml_md.models import build_model
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
