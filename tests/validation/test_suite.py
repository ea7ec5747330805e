"""The MD validation suite (physml_md/validation/suite.py) on EMT Cu and on broken models; its criteria
(physml_md/validation/criteria.py) are read through the report."""

import json

import ase.io
import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

from physml_md.config.md import md_settings
from physml_md.export import export_potential
from physml_md.md.io.writing import read_energy_log, read_trajectory
from physml_md.validation import suite as validation
from physml_md.validation.suite import validate
from tests.helpers import random_cu_model, rattled_cu
from tests.integrations.openmm_tools import methanol

PNG = b"\x89PNG\r\n\x1a\n"


def _reference_md(path, atoms, calculator, temperature=300.0, steps=1500, every=10, timestep=2.0, seed=0):
    """A reference trajectory: Langevin MD with ``calculator`` (500 steps of equilibration, then frames)."""
    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    dynamics = Langevin(atoms, timestep * units.fs, temperature_K=temperature, friction=0.02, fixcm=False, rng=rng)
    dynamics.run(500)
    frames = []
    for _ in range(steps // every):
        dynamics.run(every)
        frames.append(atoms.copy())
    ase.io.write(path, frames)
    return path


@pytest.fixture(scope="module")
def emt_reference(tmp_path_factory):
    """1 500 steps (3 ps) of EMT Langevin MD of the 32-atom Cu cell at 300 K, a frame every 10 steps."""
    return _reference_md(tmp_path_factory.mktemp("emt") / "emt_md.extxyz", rattled_cu(), EMT())


def test_trained_cu_model_holds_300_k_and_matches_the_emt_rdf(cu_model, emt_reference, tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(cu_model.model_path.read_bytes())
    report = validate(
        model, rattled_cu(), reference=emt_reference, nvt_steps=2000, nve_steps=400, out=tmp_path / "report"
    )
    by_name = {c.name: c for c in report.criteria}
    assert report.passed, report.format()
    assert set(by_name) == {
        "NVT stable",
        "NVT mean temperature (relative deviation)",
        "NVT temperature spread |log2(std / canonical std)|",
        "NVE stable",
        "NVE energy drift",
        "minimum interatomic distance",
        "maximum force",
        "closest contact / training data's",
        "rdf_difference",
    }
    assert by_name["rdf_difference"].value <= validation.DEFAULT_THRESHOLDS["rdf_difference"]
    assert by_name["NVT mean temperature (relative deviation)"].value <= 0.1
    # every file is there and parses
    out = tmp_path / "report"
    document = json.loads((out / "report.json").read_text())
    assert document["passed"] is True and len(document["criteria"]) == 9
    assert document["runs"]["nvt"]["steps_done"] == 2000 and document["runs"]["nve"]["steps_done"] == 400
    assert len(read_energy_log(out / "nvt.csv")["step"]) == 201 and len(read_energy_log(out / "nve.csv")["step"]) == 41
    assert read_trajectory(out / "nvt.extxyz").positions.shape == (201, 32, 3)
    for png in ("energy.png", "structure.png"):
        assert (out / png).read_bytes()[:8] == PNG
    beside = json.loads((tmp_path / "model.validation.json").read_text())
    assert beside["passed"] is True and beside["criteria"]["rdf_difference"]["value"] == by_name["rdf_difference"].value
    assert not list(out.glob(".*tmp")) and not list(tmp_path.glob(".*tmp"))


def test_random_model_fails_and_says_where(tmp_path):
    path = export_potential(random_cu_model(), tmp_path / "random.pt")
    report = validate(path, rattled_cu(), temperature="600 K", nvt_steps=3000, nve_steps=100, out=tmp_path / "report")
    assert not report.passed
    stable = next(c for c in report.criteria if c.name == "NVT stable")
    assert not stable.passed and "blew up at step" in stable.detail and "are 0." in stable.detail
    assert "NVE was not run: the NVT run blew up" in report.notes
    assert json.loads((tmp_path / "report" / "report.json").read_text())["passed"] is False
    closest = next(c for c in report.criteria if c.name == "minimum interatomic distance")
    assert not closest.passed and closest.value < 0.5


def test_report_is_written_atomically(cu_model, tmp_path, monkeypatch):
    """A failure while writing the report leaves the previous report.json whole and no temporary files."""
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text('{"previous": true}')

    def broken_plot(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("physml_md.validation.plots.energy_plot", broken_plot)
    with pytest.raises(RuntimeError, match="disk full"):
        validate(cu_model.model_path, rattled_cu(), nvt_steps=50, nve_steps=20, out=out)
    assert json.loads((out / "report.json").read_text()) == {"previous": True}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.filterwarnings("ignore::physml_md.integrations.ase.ExtrapolationWarning")  # the crude molecule model
def test_molecule_is_judged_on_bonds_and_dihedrals(molecule_model, tmp_path):
    atoms = methanol(seed=1)
    reference = _reference_md(tmp_path / "ref.extxyz", atoms, EMT(), steps=400, timestep=0.5)
    report = validate(molecule_model.model_path, atoms, reference=reference, nvt_steps=400, nve_steps=50, out=tmp_path)
    names = [c.name for c in report.criteria]
    assert "bond lengths (jensen_shannon)" in names and "dihedrals (jensen_shannon)" in names
    for criterion in report.criteria:
        if "jensen_shannon" in criterion.name:
            assert 0.0 <= criterion.value <= 1.0
    assert (tmp_path / "structure.png").read_bytes()[:8] == PNG


def test_bad_input(cu_model, emt_reference, tmp_path):
    with pytest.raises(ValueError, match="unknown threshold\\(s\\) \\['drft'\\]"):
        validate(cu_model.model_path, rattled_cu(), thresholds={"drft": 1.0})
    other = bulk("Cu", "fcc", a=3.61, cubic=True)
    with pytest.raises(ValueError, match="holds 32 atoms .* not the validated structure's 4"):
        validate(cu_model.model_path, other, reference=emt_reference, nvt_steps=20, nve_steps=10)
    with pytest.raises(ValueError, match="timestep needs a time"):
        validate(cu_model.model_path, rattled_cu(), timestep="1 angstrom")


def test_the_md_settings_reach_both_runs(cu_model):
    """validate takes the MD settings (physml_md.config.md) or their keys; the NVT friction is 5/ps unless given,
    and a blow-up limit given as a threshold is the runs' limit too."""
    given = validate(cu_model.model_path, rattled_cu(), settings=md_settings(friction="2/ps", report_every=5),
                     nvt_steps=10, nve_steps=5)  # fmt: skip
    assert given.settings["friction"] == pytest.approx(0.002) and given.runs["nvt"]["steps_done"] == 10
    default = validate(cu_model.model_path, rattled_cu(), nvt_steps=10, nve_steps=5, report_every=5, seed=3)
    assert default.settings["friction"] == pytest.approx(0.005) and default.settings["seed"] == 3
    blown = validate(cu_model.model_path, rattled_cu(), nvt_steps=10, nve_steps=5, thresholds={"min_distance": 10.0})
    assert blown.runs["nvt"]["blow_up"]["reason"] == "close_contact" and "nve" not in blown.runs
    assert blown.settings["thresholds"]["min_distance"] == 10.0 and not blown.passed
