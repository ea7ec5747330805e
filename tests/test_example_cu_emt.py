"""examples/cu_emt/run.py, the Cu/EMT story end to end, on a tiny budget: every output exists and parses."""

import json
import subprocess
import sys
from pathlib import Path

from ase.io import read

from physml_md.md.io.writing import read_energy_log, read_trajectory

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "cu_emt" / "run.py"
PNG = b"\x89PNG\r\n\x1a\n"


def test_cu_emt_example_runs_end_to_end(tmp_path):
    command = [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--structures", "12", "--epochs", "1"]
    done = subprocess.run([*command, "--md-steps", "40"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[5/5]" in done.stdout and "Summary" in done.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert Path(summary["model"]).is_file()
    assert len(read(tmp_path / "data" / "cu_emt.extxyz", ":")) == 12
    assert read_trajectory(tmp_path / "nvt.traj").positions.shape == (5, 32, 3)  # 40 steps, a frame every 10
    assert list(read_energy_log(tmp_path / "nvt.csv")["step"]) == [0, 10, 20, 30, 40]
    assert 3.0 < summary["lattice_constant_emt"] < 4.0 and summary["lattice_constant_model"] > 0
    report = json.loads((tmp_path / "validation" / "report.json").read_text())
    assert report["passed"] == summary["validation_passed"]
    assert any(c["name"] == "rdf_difference" for c in report["criteria"])
    for png in ("energy.png", "structure.png"):
        assert (tmp_path / "validation" / png).read_bytes()[:8] == PNG
    assert len(read(tmp_path / "emt_300K.extxyz", ":")) == 10
