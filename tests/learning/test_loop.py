"""physml_md/learning/loop.py: the loop train -> MD -> select -> label (EMT) -> retrain on EMT Cu, its
round folders, its resume after a kill or a signal, and a labelling calculator that fails (checked before round 0)."""

import contextlib
import copy
import json
import os
import signal
from pathlib import Path

import ase.io
import pytest
import yaml
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT

from physml_md.cli.main import main
from physml_md.config.learning import LearningConfig
from physml_md.config.load import config_from_dict
from physml_md.config.types import ConfigError, validate
from physml_md.data.packed.folder import PackedFolder
from physml_md.data.packed.writer import pack
from physml_md.learning import loop as loop_module
from physml_md.learning.labelling import LabellingError
from physml_md.learning.loop import learn, select_frames
from physml_md.md.control import Interrupts
from tests.helpers import rattled_cu


class BrokenCalculator(Calculator):
    """A reference calculator that fails on every frame (as a DFT code that does not converge would)."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        raise RuntimeError("SCF did not converge")


class FailsOnMDFrames(EMT):
    """EMT on the start structure, a failure on the MD frames (they carry info["step"])."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if "step" in atoms.info:
            raise RuntimeError("SCF did not converge")
        super().calculate(atoms, properties, system_changes)


class NaNForces(EMT):
    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["forces"] = self.results["forces"] * float("nan")


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
    return learn(config_from_dict({**raw, "learning": learning}), verbose=False)


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


@pytest.fixture
def packed_setup(setup, tmp_path):
    """``setup`` with the EMT Cu data packed: (raw config, [learning] table, the packed folder)."""
    raw, learning = setup
    source = tmp_path / "cu.packed"
    pack([raw["data"]["source"]], source)
    raw["data"]["source"] = str(source)
    return raw, learning, source


def test_a_packed_source_trains_on_a_packed_set_the_rounds_append_to(packed_setup, monkeypatch):
    """Before: the loop read the packed folder with ase.io.read (an error) and could only write data.extxyz."""
    raw, learning, source = packed_setup
    manifest = (source / "manifest.json").read_bytes()
    n = len(PackedFolder(source))
    seen, real_train = [], loop_module.train_committee
    monkeypatch.setattr(
        loop_module, "train_committee",
        lambda config, **kw: seen.append(len(PackedFolder(config.data.source))) or real_train(config, **kw),
    )  # fmt: skip
    root = Path(raw["trainer"]["default_root_dir"])
    (root / "data.packed.tmp").mkdir(parents=True)  # a copy stopped before: made again
    result = run(raw, learning)
    first, second = result.rounds
    assert first["labelled_frames"] == second["labelled_frames"] == 2
    assert seen == [n, n + 2] == [first["training_frames"], second["training_frames"]]  # round 1 saw round 0's
    packed = PackedFolder(root / "data.packed")
    assert packed.summary["n_structures"] == len(packed) == n + 4  # the last round's frames added at the end
    assert packed.summary["label_counts"]["forces"] == n + 4
    labelled = ase.io.read(root / "round_1" / "labelled.extxyz", ":")
    stored = [packed.arrays(i)["energy"][0] for i in (n + 2, n + 3)]
    assert stored == [frame.get_potential_energy() for frame in labelled]
    assert (source / "manifest.json").read_bytes() == manifest and len(PackedFolder(source)) == n  # not written
    assert not list(root.glob("round_*/data.extxyz")) and not (root / "data.packed.tmp").exists()


def test_a_packed_training_split_is_copied_and_appended_to_as_well(packed_setup):
    raw, learning, source = packed_setup
    raw["data"]["source"] = None
    raw["data"]["train"] = {"path": str(source)}
    raw["data"]["validation"] = {"path": str(source)}
    result = run(raw, {**learning, "rounds": 1})
    assert len(PackedFolder(Path(raw["trainer"]["default_root_dir"]) / "data.packed")) == len(PackedFolder(source)) + 2
    assert result.rounds[0]["training_frames"] == len(PackedFolder(source))


def test_a_round_killed_after_its_append_is_redone_without_appending_twice(packed_setup, monkeypatch):
    raw, learning, source = packed_setup
    n = len(PackedFolder(source))
    real_md = loop_module.run_md

    def killed_in_round_1(*args, seed, **kwargs):  # after round 1 appended round 0's frames and trained
        if seed == 1:
            raise RuntimeError("killed")
        return real_md(*args, seed=seed, **kwargs)

    monkeypatch.setattr(loop_module, "run_md", killed_in_round_1)
    with pytest.raises(RuntimeError, match="killed"):
        run(raw, learning)
    packed = Path(raw["trainer"]["default_root_dir"]) / "data.packed"
    assert len(PackedFolder(packed)) == n + 2
    monkeypatch.setattr(loop_module, "run_md", real_md)
    result = run(raw, learning)  # round 1 redone
    assert [r["training_frames"] for r in result.rounds] == [n, n + 2] and len(PackedFolder(packed)) == n + 4
    run(raw, learning)  # finished: read back, nothing appended
    assert len(PackedFolder(packed)) == n + 4


def test_a_failing_calculator_stops_the_round_and_writes_nothing_half_done(setup):
    raw, learning = setup
    learning["label"] = {"calculator": f"{__name__}.FailsOnMDFrames"}
    with pytest.raises(LabellingError, match=r"failed on frame 0 \(MD step \d+\): RuntimeError: SCF did not converge"):
        run(raw, learning)
    folder = Path(raw["trainer"]["default_root_dir"]) / "round_0"
    assert not (folder / "round.json").exists() and not (folder / "labelled.extxyz").exists()


@pytest.mark.parametrize(
    ("calculator", "message"),
    [
        (f"{__name__}.BrokenCalculator", "failed on frame 0: RuntimeError: SCF did not converge"),
        ("ase.calculators.nope.Nothing", "cannot import ase.calculators.nope"),
        (f"{__name__}.NaNForces", r"gave non-finite forces on frame 0: atom 0 \(nan\), atom 1 \(nan\)"),
    ],
)
def test_the_labelling_calculator_is_checked_before_any_training(setup, calculator, message):
    """Before: the committee was trained and the MD run (a whole round) before the calculator was first imported;
    a calculator giving NaN forces was accepted (the NaNs read back as missing labels)."""
    raw, learning = setup
    learning["label"] = {"calculator": calculator}
    with pytest.raises(LabellingError, match=rf"checked on the MD start structure before any training.*{message}"):
        run(raw, learning)
    assert not (Path(raw["trainer"]["default_root_dir"]) / "round_0").exists()


@pytest.mark.parametrize(("signal_name", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_during_the_md_leaves_the_round_unfinished_and_exits_128_plus_its_number(
    setup, tmp_path, capsys, monkeypatch, signal_name, code
):
    """Before: a SIGTERM that ended round 0's MD early (8 of 20 steps) let the round be labelled and recorded as
    finished, and the command exit 0 or 1; the rerun went on to round 1."""
    raw, learning = setup
    learning["rounds"] = 1
    path = tmp_path / "learn.yaml"
    path.write_text(yaml.safe_dump({**raw, "learning": learning}))
    real_armed = Interrupts.armed
    calls = {}

    @contextlib.contextmanager
    def armed(self):  # run_md arms its Interrupts for the first frame, then per 5 steps: the signal comes at step 5
        calls[id(self)] = calls.get(id(self), 0) + 1
        if calls[id(self)] == 3:
            os.kill(os.getpid(), getattr(signal, signal_name))
        with real_armed(self):
            yield

    monkeypatch.setattr(Interrupts, "armed", armed)
    assert main(["learn", str(path)]) == code
    captured = capsys.readouterr()
    assert f"round 0 interrupted by {signal_name} during its MD (at 5 of 20 steps)" in captured.err
    folder = Path(raw["trainer"]["default_root_dir"]) / "round_0"
    assert (folder / "train" / "model.pt").is_file()  # its committee is kept for the rerun
    assert not (folder / "round.json").exists() and not (folder / "labelled.extxyz").exists()
    monkeypatch.setattr(Interrupts, "armed", real_armed)
    assert main(["learn", str(path)]) == 1  # the rerun redoes round 0, whole: not converged after 1 round
    record = json.loads((folder / "round.json").read_text())
    assert record["md_ps"] == pytest.approx(0.04) and record["labelled_frames"] == 2
    assert capsys.readouterr().out.count("test F MAE") == 1


def test_a_committee_that_is_sure_converges_in_the_first_round_through_the_cli(setup, tmp_path, capsys):
    raw, learning = setup
    learning["uncertainty_threshold"] = "100 eV/angstrom"
    path = tmp_path / "learn.yaml"
    path.write_text(yaml.safe_dump({**raw, "learning": learning}))
    assert main(["learn", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "converged" in printed and printed.count("test F MAE") == 1  # the round table once (twice before)
    assert main(["learn", str(path)]) == 0  # finished: the rounds are read back and shown, once
    assert capsys.readouterr().out.count("test F MAE") == 1


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
