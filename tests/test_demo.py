"""The README's first command runs examples/demo.py: keep it working (tiny budget here)."""

import json
import math
import subprocess
import sys
from pathlib import Path

from ase.io import read

import physml_md

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def test_demo_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(DEMO),
            "--out",
            str(tmp_path),
            "--structures",
            "10",
            "--epochs",
            "2",
            "--validation-steps",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=900,  # a hang guard, not a speed test: the suite may share the machine
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[8/8]" in result.stdout and "Done." in result.stdout and "Summary" in result.stdout
    frames = read(tmp_path / "cu_emt.extxyz", ":")
    assert len(frames) == 10 and all("stress" in f.calc.results for f in frames)
    summary = json.loads((tmp_path / "summary.json").read_text())
    meta = physml_md.read_metadata(summary["model"])
    assert meta["species"] == ["Cu"] and len(meta["data_sha256"]) == 64 and meta["training"]["epochs"] == 2
    assert summary["export_matches_eager"] is True and summary["structures"] == 10
    assert summary["test_metrics"]["test/per_atom_force/rmse"] > 0
    assert math.isfinite(summary["md_drift_ev_per_atom"])  # NVE in ASE ran
    assert math.isfinite(summary["openmm_drift_mev_per_atom_per_ps"])  # and in OpenMM
    assert summary["openmm_vs_ase_max_position_difference"] < 1e-6  # the same trajectory in both engines
    report = json.loads(Path(summary["validation_report"]).read_text())  # the validation report was written
    assert report["passed"] == summary["validation_passed"] and report["criteria"]
