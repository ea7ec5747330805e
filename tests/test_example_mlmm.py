"""examples/mlmm/run.py on a tiny budget: ethanol by the potential in TIP3P water through openmm-ml."""

import json
import subprocess
import sys
from pathlib import Path

import mdtraj
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "mlmm" / "run.py"


def test_mlmm_example_runs_and_its_ml_energy_equals_ase(molecule_model, tmp_path):
    pytest.importorskip("openmmml")
    command = [sys.executable, str(SCRIPT), "--model", str(molecule_model.model_path), "--out", str(tmp_path)]
    done = subprocess.run(
        [*command, "--time", "10 fs", "--report-every", "5"], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["ml_atoms"] == list(range(9))
    assert summary["ml_energy_openmm_ev"] == pytest.approx(summary["ml_energy_ase_ev"], rel=1e-6)
    trajectory = mdtraj.load(str(tmp_path / "mlmm.dcd"), top=str(tmp_path / "mlmm.pdb"))
    assert trajectory.n_frames == 4 and trajectory.n_atoms == summary["atoms"]
    lines = (tmp_path / "mlmm.csv").read_text().splitlines()
    assert lines[0].startswith('#"Step"') and len(lines) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_missing_model_is_one_clear_error(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "missing.pt: no such model file" in done.stderr
    assert "Traceback" not in done.stderr
