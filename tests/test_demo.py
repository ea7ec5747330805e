"""The README's first command runs examples/demo.py: keep it working (tiny budget here)."""

import json
import subprocess
import sys
from pathlib import Path

from ase.io import read

import physml_md

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def test_demo_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, str(DEMO), "--out", str(tmp_path), "--structures", "3", "--md-frames", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[5/5]" in result.stdout and "Done." in result.stdout
    frames = read(tmp_path / "cu_emt.extxyz", ":")
    assert len(frames) == 5 and all("forces" in f.calc.results for f in frames)
    meta = physml_md.read_metadata(tmp_path / "model.pt")
    assert meta["species"] == ["Cu"] and len(meta["data_sha256"]) == 64
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["export_matches_eager"] is True and summary["structures"] == 5
