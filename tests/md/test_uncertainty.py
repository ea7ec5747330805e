"""physml_md/md/uncertainty.py: a committee's force uncertainty along MD in both engines, frames over a threshold
flagged, written for labelling and (optionally) stopping the run; the validation report's uncertainty criterion."""

import shutil
from pathlib import Path

import ase.io
import numpy as np
import pytest

from physml_md.md.frame import Frame
from physml_md.md.io.reading import UNCERTAINTY_COLUMN, read_energy_log
from physml_md.md.runner import run_md
from physml_md.md.uncertainty import UncertaintyWatch, forces_std_of, parse_force_threshold, rank_correlation
from physml_md.validation.suite import validate
from tests.helpers import rattled_cu


@pytest.fixture(scope="module")
def committee_file(cu_committee):
    return cu_committee[0].model_path


@pytest.mark.parametrize("engine", ["ase", "openmm"])
def test_md_records_the_committee_uncertainty_of_every_frame(committee_file, engine, tmp_path):
    from physml_md.export import load_potential

    log = tmp_path / "run.csv"
    result = run_md(committee_file, rattled_cu(), engine=engine, steps=20, report_every=5, keep_positions=True, log=log)
    assert len(result.max_forces_std) == len(result.times_fs) == 5
    np.testing.assert_allclose(read_energy_log(log)[UNCERTAINTY_COLUMN], result.max_forces_std, rtol=1e-15)
    potential = load_potential(committee_file)
    atoms = rattled_cu()
    for positions, value in zip(result.positions, result.max_forces_std):  # the same number as a fresh evaluation
        expected = forces_std_of(potential, positions, atoms.numbers, atoms.cell.array, atoms.pbc).max()
        assert value == pytest.approx(expected, rel=1e-9)
    assert result.summary()["max_forces_std_ev_per_angstrom"] == max(result.max_forces_std)
    calc_atoms = rattled_cu()  # the force (the members' mean) is the same in both engines: so is the energy
    from physml_md.integrations.ase import PhysMLCalculator

    calc_atoms.calc = PhysMLCalculator(committee_file)
    assert result.potential_energies[0] == pytest.approx(calc_atoms.get_potential_energy(), rel=1e-9)


def test_frames_over_the_threshold_are_flagged_and_written(committee_file, tmp_path):
    out = tmp_path / "flagged.extxyz"
    result = run_md(committee_file, rattled_cu(), steps=20, report_every=5, uncertainty_threshold=0.0 + 1e-12,
                    uncertain_frames=out)  # fmt: skip
    assert result.steps_done == 20
    assert result.uncertainty["flagged_frames"] == 5 and not result.uncertainty["stopped"]
    frames = ase.io.read(out, ":")
    assert [f.info["step"] for f in frames] == [0, 5, 10, 15, 20]
    np.testing.assert_allclose([f.info["max_forces_std"] for f in frames], result.max_forces_std)
    assert result.files["uncertain_frames"] == str(out)


def test_a_run_can_stop_at_the_first_uncertain_frame(committee_file, tmp_path):
    # a threshold between the smallest and the largest recorded uncertainty of a free run
    free = run_md(committee_file, rattled_cu(), steps=40, report_every=5, temperature="1500 K")
    threshold = float(np.median(free.max_forces_std))
    first = next(i for i, value in enumerate(free.max_forces_std) if value > threshold)
    stopped = run_md(committee_file, rattled_cu(), steps=40, report_every=5, temperature="1500 K",
                     uncertainty_threshold=f"{threshold} eV/angstrom", stop_on_uncertainty=True)  # fmt: skip
    assert stopped.steps_done == 5 * first
    assert stopped.uncertainty["stopped"] and stopped.uncertainty["first_flagged_step"] == 5 * first
    assert "uncertain_frames" not in stopped.files  # no file was asked for


def test_no_frame_over_a_high_threshold_writes_no_file(committee_file, tmp_path):
    out = tmp_path / "none.extxyz"
    result = run_md(committee_file, rattled_cu(), steps=10, uncertainty_threshold="10 eV/angstrom",
                    uncertain_frames=out)  # fmt: skip
    assert result.uncertainty["flagged_frames"] == 0 and not out.exists()


def test_uncertainty_needs_a_committee(cu_model):
    with pytest.raises(ValueError, match="needs a committee model"):
        run_md(cu_model.model_path, rattled_cu(), steps=5, uncertainty_threshold=0.1)
    with pytest.raises(ValueError, match="need an uncertainty_threshold"):
        run_md(cu_model.model_path, rattled_cu(), steps=5, stop_on_uncertainty=True)
    assert run_md(cu_model.model_path, rattled_cu(), steps=5).max_forces_std == []


def test_threshold_parsing_and_the_watch_on_hand_made_frames(tmp_path):
    assert parse_force_threshold("1 kcal/mol/angstrom") == pytest.approx(0.0433641, rel=1e-5)
    for bad in ("-0.1 eV/angstrom", 0, "0.1 eV"):
        with pytest.raises(ValueError):
            parse_force_threshold(bad)
    with pytest.raises(ValueError, match="extxyz"):
        UncertaintyWatch(0.1, ["Cu"], [False] * 3, path=tmp_path / "frames.traj")
    watch = UncertaintyWatch(0.1, ["Cu", "Cu"], [False] * 3, stop=True, keep=1)
    calm = Frame(step=0, time_fs=0.0, positions=np.zeros((2, 3)), forces_std=np.array([0.01, 0.1]))
    wild = Frame(step=5, time_fs=2.5, positions=np.ones((2, 3)), forces_std=np.array([0.3, 0.01]))
    assert not watch.observe(calm) and watch.observe(wild) and watch.observe(wild)
    assert watch.flagged_steps == [5, 5] and len(watch.flagged) == 1  # keep caps what is stored
    assert watch.write() is None  # no path: nothing written


def test_rank_correlation():
    assert rank_correlation(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)
    assert rank_correlation(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation(np.ones(5), np.arange(5.0)))


def test_validation_reports_the_uncertainty_along_the_runs(committee_file, tmp_path):
    report = validate(committee_file, rattled_cu(), nvt_steps=20, nve_steps=10, report_every=5)
    (criterion,) = [c for c in report.criteria if c.name.startswith("committee force uncertainty")]
    runs_max = max(
        report.runs["nvt"]["max_forces_std_ev_per_angstrom"], report.runs["nve"]["max_forces_std_ev_per_angstrom"]
    )
    assert criterion.value == pytest.approx(runs_max)
    strict = validate(committee_file, rattled_cu(), nvt_steps=20, nve_steps=10, report_every=5,
                      thresholds={"max_forces_std": 1e-9})  # fmt: skip
    assert not strict.passed and "label those frames" in strict.format()


def test_cli_md_flags_frames_beside_the_trajectory(committee_file, tmp_path, capsys):
    from ase.io import write

    from physml_md.cli.main import main

    start = tmp_path / "start.extxyz"
    write(start, rattled_cu())
    out = tmp_path / "traj.extxyz"
    argv = ["md", str(committee_file), str(start), "--steps", "10", "--report-every", "5", "--quiet", "--out", str(out)]
    assert main(argv + ["--uncertainty-threshold", "1e-9 eV/angstrom"]) == 0
    printed = capsys.readouterr().out
    assert "committee uncertainty: largest per-atom force std" in printed and "3 frame(s) over 1e-09 eV/Å" in printed
    assert len(ase.io.read(tmp_path / "traj_uncertain.extxyz", ":")) == 3
    assert main(["md", str(committee_file), str(start), "--steps", "2", "--stop-on-uncertainty"]) == 2
    assert "need an uncertainty_threshold" in capsys.readouterr().err


def test_committee_errors_against_a_hand_computed_answer():
    """Two structures (2 and 1 atoms); the second's forces unlabelled: only the first counts for forces."""
    import torch

    from physml_md.data import keys as K
    from physml_md.md.uncertainty import committee_errors

    batch = {
        K.ENERGY: torch.tensor([1.0, 2.0], dtype=torch.float64),
        K.mask_key(K.ENERGY): torch.tensor([True, True]),
        K.N_ATOMS: torch.tensor([2, 1]),
        K.FORCES: torch.zeros(3, 3, dtype=torch.float64),
        K.mask_key(K.FORCES): torch.tensor([True, False]),
        K.BATCH: torch.tensor([0, 0, 1]),
    }
    out = {
        K.ENERGY: torch.tensor([1.2, 1.9], dtype=torch.float64),
        K.FORCES: torch.tensor([[0.3, 0.0, 0.0], [0.0, -0.6, 0.0], [9.0, 9.0, 9.0]], dtype=torch.float64),
        K.FORCES_STD: torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64),
    }
    result = committee_errors(lambda data: out, [batch])
    assert result["energy_mae_mev_per_atom"] == pytest.approx(1000 * (0.1 + 0.1) / 2)
    assert result["force_mae_mev_per_angstrom"] == pytest.approx(1000 * 0.9 / 6)  # the 9s are not labelled
    assert result["mean_forces_std_mev_per_angstrom"] == pytest.approx(200.0)
    assert np.isnan(result["spearman_max_force_error_vs_uncertainty"])  # one labelled structure: no ranking


def test_validate_refuses_an_uncertainty_threshold_on_a_single_model_as_md_does(cu_model, tmp_path, capsys):
    """md refused the option; validate passed with "uncertainty": null (a criterion that could never fail)."""
    from physml_md.cli.main import main
    from physml_md.validation.suite import validate

    with pytest.raises(ValueError, match="needs a committee model") as from_md:
        run_md(cu_model.model_path, rattled_cu(), steps=5, uncertainty_threshold=0.1)
    with pytest.raises(ValueError, match="needs a committee model") as from_validate:
        validate(cu_model.model_path, rattled_cu(), nvt_steps=10, nve_steps=5, out=tmp_path / "report",
                 thresholds={"max_forces_std": 0.1})  # fmt: skip
    assert str(from_validate.value) == str(from_md.value)  # one check, one sentence
    assert not (tmp_path / "report").exists()  # refused before anything ran or was written
    # a copy, so that no summary another test wrote beside the shared model (model.validation.json) is in the way
    model = shutil.copy(cu_model.model_path, tmp_path / Path(cu_model.model_path).name)
    structure, model = str(tmp_path / "cu.extxyz"), str(model)
    rattled_cu().write(structure)
    threshold = ["--uncertainty-threshold", "0.1 eV/angstrom", "--quiet"]
    for command in (
        ["md", model, structure, "--steps", "5", "--out", str(tmp_path / "md.extxyz"), *threshold],
        ["validate", model, "--structures", structure, "--out", str(tmp_path / "cli_report"), *threshold],
    ):
        assert main(command) == 2
        assert str(from_md.value) in capsys.readouterr().err
    assert not (tmp_path / "md.extxyz").exists() and not (tmp_path / "cli_report").exists()
