"""Interrupted MD keeps its work (issue 15, item 8): SIGINT / SIGTERM close the files up to the last whole frame,
and the temporaries a SIGKILL leaves are removed by the next run that writes to the same folder.

The run happens in a child process that prints each recorded step; the test signals it mid-run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from physml_md.md.control import Progress
from physml_md.md.frame import Frame
from physml_md.md.io.writing import read_energy_log, read_trajectory
from physml_md.md.runner import run_md
from physml_md.models import build_model

ROOT = Path(__file__).resolve().parents[2]

# A random Cu model at 1 K with a 0.01 fs step: the atoms barely move, so the run is sound for as long as it lasts.
CHILD = """
import json, sys
from ase.build import bulk
from physml_md.md import runner
from physml_md.models import build_model

record = runner._record
def announcing(result, frame, *args):
    problem = record(result, frame, *args)
    print("recorded", frame.step, flush=True)
    return problem
runner._record = announcing
model = build_model("painn", species=["Cu"], cutoff=4.0, features=8, n_interactions=1, seed=0)
atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
out = sys.argv[1]
result = runner.run_md(model, atoms, engine=sys.argv[2], temperature="1 K", timestep="0.01 fs", steps=10**7,
                       report_every=5, trajectory=out + "/run" + sys.argv[3], log=out + "/run.csv")
print("summary", json.dumps(result.summary()), flush=True)
print("sentence", result.interruption, flush=True)
"""


def _start(tmp_path, engine, suffix):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), engine, suffix],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip


def _wait_for_step(child, step):
    deadline = time.monotonic() + 120
    for line in child.stdout:
        if line.startswith("recorded") and int(line.split()[1]) >= step:
            return
        assert time.monotonic() < deadline, "the child never reached the step"
    raise AssertionError(f"the child ended early: {child.stderr.read()}")


@pytest.mark.parametrize(
    ("sig", "engine", "suffix"),
    [(signal.SIGINT, "ase", ".extxyz"), (signal.SIGTERM, "openmm", ".dcd")],
    ids=["sigint-ase-extxyz", "sigterm-openmm-dcd"],
)
def test_a_signal_closes_the_files_up_to_the_last_whole_frame(tmp_path, sig, engine, suffix):
    child = _start(tmp_path, engine, suffix)
    try:
        _wait_for_step(child, 20)
        child.send_signal(sig)
        out, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 0, err
    lines = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith(("summary", "sentence")))
    summary = json.loads(lines["summary"])
    step = summary["steps_done"]
    assert step >= 20 and summary["interrupted"] == {"signal": sig.name, "step": step}
    assert summary["stable"] and summary["blow_up"] is None
    expected_steps = list(range(0, step + 1, 5))
    assert list(read_energy_log(tmp_path / "run.csv")["step"]) == expected_steps
    trajectory = read_trajectory(tmp_path / f"run{suffix}")
    assert len(trajectory.positions) == len(expected_steps)
    if suffix == ".extxyz":
        assert list(trajectory.steps) == expected_steps
    assert lines["sentence"].strip() == (
        f"interrupted by {sig.name} at step {step} of 10000000; the trajectory and log hold the "
        f"{len(expected_steps)} frames up to it"
    )
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_the_next_run_removes_what_a_killed_run_left(tmp_path):
    child = _start(tmp_path, "ase", ".xtc")
    try:
        _wait_for_step(child, 5)
        child.kill()  # SIGKILL: nothing runs in the child any more
        child.communicate(timeout=60)
    finally:
        child.kill()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 3 and all(f".{child.pid}@" in name for name in left), left  # xtc, pdb, csv
    model = build_model("painn", species=["H", "O"], cutoff=4.0, features=8, n_interactions=1, seed=0)
    from ase.build import molecule

    run_md(model, molecule("H2O"), steps=2, report_every=1, log=tmp_path / "other.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.csv"]


def test_an_interrupt_before_the_first_frame_writes_no_file(tmp_path, monkeypatch):
    """In-process: KeyboardInterrupt while the engine computes the first frame (as Ctrl-C there would)."""
    from physml_md.md import engines

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(engines.ASEEngine, "frame", interrupted)
    model = build_model("painn", species=["H", "O"], cutoff=4.0, features=8, n_interactions=1, seed=0)
    from ase.build import molecule

    result = run_md(
        model, molecule("H2O"), steps=10, trajectory=tmp_path / "run.traj", log=tmp_path / "run.csv"
    )  # fmt: skip
    assert result.interrupted == "SIGINT" and result.steps_done == 0 and result.files == {}
    assert result.interruption == "interrupted by SIGINT before the first frame; no file was written"
    assert list(tmp_path.iterdir()) == []


# The MD progress bar (physml_md/md/control.py): steps, simulated ns/day and temperature on stderr.


def test_progress_bar_counts_steps_and_shows_the_temperature(capsys):
    bar = Progress(total=20, timestep_fs=0.5, enabled=True)
    frame = Frame(step=10, time_fs=5.0, positions=np.zeros((2, 3)), temperature_k=312.4)
    bar.update(10, frame, 10)
    bar.close()
    err = capsys.readouterr().err
    assert "10/20" in err
    assert "T=312 K" in err and "ns/day" in err


def test_a_disabled_bar_prints_nothing(capsys):
    bar = Progress(total=5, timestep_fs=1.0, enabled=False)
    bar.update(5, Frame(step=5, time_fs=5.0, positions=np.zeros((1, 3)), temperature_k=300.0), 5)
    bar.close()
    assert capsys.readouterr().err == ""
