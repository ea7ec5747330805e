"""physml_md/training/active_learning.py: the loop train -> MD -> select -> label (EMT) -> retrain on EMT Cu, its
round folders, its resume after a kill, and a labelling calculator that fails."""

import copy
import json
from pathlib import Path

import ase.io
import pytest
import yaml
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT

from physml_md.cli import main
from physml_md.training.active_learning import learn, select_frames
from physml_md.training.config import config_from_dict
from physml_md.training.labelling import LabellingError
from physml_md.training.schema_learning import LearningConfig
from physml_md.training.schema_types import ConfigError, validate
from tests.helpers import rattled_cu


class BrokenCalculator(Calculator):
    """A reference calculator that fails on every frame (as a DFT code that does not converge would)."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        raise RuntimeError("SCF did not converge")


@pytest.fixture
def setup(tiny_config, tmp_path):
    """(raw training config with a committee of 2, raw [learning] table) on the EMT Cu data."""
    raw = copy.deepcopy(tiny_config)
    raw["trainer"]["max_epochs"] = 3
    raw["training"]["committee"] = 2
    start = tmp_path / "start.extxyz"
    ase.io.write(start, rattled_cu(seed=5))
    test = []
    for seed in range(3):
        atoms = rattled_cu(seed=10 + seed)
        atoms.rattle(0.1, seed=seed)
        atoms.calc = EMT()
        atoms.get_forces()
        test.append(atoms)
    ase.io.write(tmp_path / "test.extxyz", test)
    learning = {
        "rounds": 2,
        "structures": str(start),
        "temperature": "600 K",
        "timestep": "2 fs",
        "md_time": "40 fs",
        "report_every": 5,
        "uncertainty_threshold": "0.001 eV/angstrom",  # an untrained committee: every frame is over it
        "min_spacing": "20 fs",
        "max_new_frames": 2,
        "test_data": str(tmp_path / "test.extxyz"),
        "label": {"calculator": "ase.calculators.emt.EMT"},
    }
    return raw, learning


def run(raw, learning):
    return learn(config_from_dict(raw), validate(LearningConfig, learning, "learning"), verbose=False)


def test_rounds_add_labelled_frames_and_keep_their_work(setup):
    raw, learning = setup
    result = run(raw, learning)
    root = Path(raw["trainer"]["default_root_dir"])
    assert [r["round"] for r in result.rounds] == [0, 1] and not result.converged
    first, second = result.rounds
    assert first["labelled_frames"] == 2 and first["flagged_frames"] == 5  # 40 fs / (5 * 2 fs) + the first frame
    assert second["training_frames"] == first["training_frames"] + 2
    labelled = ase.io.read(root / "round_0" / "labelled.extxyz", ":")
    times = [frame.info["time_fs"] for frame in labelled]
    assert times[1] - times[0] >= 20.0  # min_spacing
    for frame in labelled:  # EMT's own numbers at those positions
        reference = Atoms(frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
        reference.calc = EMT()
        assert frame.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-9)
    assert len(ase.io.read(root / "round_1" / "data.extxyz", ":")) == second["training_frames"]
    for name in ("md.extxyz", "md.csv", "uncertain.extxyz", "round.json", "train/model.pt"):
        assert (root / "round_1" / name).is_file(), name
    assert first["test_force_mae_mev_per_angstrom"] > 0 and second["test_force_mae_mev_per_angstrom"] > 0
    # the second round started from the first round's weights
    assert result.model_path == Path(second["model"])


def test_a_killed_loop_resumes_at_its_round(setup):
    raw, learning = setup
    run(raw, learning)
    root = Path(raw["trainer"]["default_root_dir"])
    kept = (root / "round_0" / "train" / "model.pt").stat().st_mtime_ns
    (root / "round_1" / "round.json").unlink()  # killed during round 1, after its training
    members = json.loads((root / "round_0" / "round.json").read_text())["members"]
    again = run(raw, learning)
    assert (root / "round_0" / "train" / "model.pt").stat().st_mtime_ns == kept  # round 0 was not redone
    assert [r["round"] for r in again.rounds] == [0, 1] and again.rounds[0]["members"] == members


def test_a_failing_calculator_stops_the_round_and_writes_nothing_half_done(setup):
    raw, learning = setup
    learning["label"] = {"calculator": f"{__name__}.BrokenCalculator"}
    with pytest.raises(LabellingError, match="SCF did not converge") as error:
        run(raw, learning)
    assert "frame 0 (MD step 0)" in str(error.value) or "MD step" in str(error.value)
    folder = Path(raw["trainer"]["default_root_dir"]) / "round_0"
    assert not (folder / "round.json").exists() and not (folder / "labelled.extxyz").exists()
    learning["label"] = {"calculator": "ase.calculators.nope.Nothing"}
    with pytest.raises(LabellingError, match="cannot import ase.calculators.nope"):
        run(raw, learning)


def test_a_committee_that_is_sure_converges_in_the_first_round_through_the_cli(setup, tmp_path, capsys):
    raw, learning = setup
    learning["uncertainty_threshold"] = "100 eV/angstrom"
    path = tmp_path / "learn.yaml"
    path.write_text(yaml.safe_dump({**raw, "learning": learning}))
    assert main(["learn", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "converged" in printed and "test F MAE" in printed


def test_config_errors_name_the_key(setup, tmp_path, capsys):
    raw, learning = setup
    raw["training"]["committee"] = 1
    with pytest.raises(ConfigError, match="committee"):
        run(raw, learning)
    with pytest.raises(ConfigError, match="uncertainty_threshold"):
        validate(LearningConfig, {**learning, "uncertainty_threshold": "0.1 eV"}, "learning")
    path = tmp_path / "no_learning.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["learn", str(path)]) == 2
    assert "[learning] table is needed" in capsys.readouterr().err


def test_select_frames_takes_the_most_uncertain_apart_in_time():
    frames = []
    for time, sigma in [(0, 0.5), (10, 0.9), (20, 0.2), (60, 0.8), (70, 0.7), (130, 0.3)]:
        atoms = Atoms("Cu")
        atoms.info.update(time_fs=float(time), max_forces_std=sigma)
        frames.append(atoms)
    chosen = select_frames(frames, min_spacing_fs=50.0, cap=3)
    assert [a.info["time_fs"] for a in chosen] == [10.0, 60.0, 130.0]
    assert [a.info["time_fs"] for a in select_frames(frames, 50.0, 1)] == [10.0]
