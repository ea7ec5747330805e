"""examples/mlmm/run.py on a tiny budget: ethanol by the potential in TIP3P water through openmm-ml."""

import json
import subprocess
import sys
from pathlib import Path

import mdtraj
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "mlmm" / "run.py"


def test_mlmm_example_runs_and_its_ml_energy_equals_ase(molecule_model, tmp_path):
    """The plumbing: openmm-ml's ML energy equals ASE's, the files are written. The tiny test model was trained on
    EMT molecules without ethanol and cannot hold ethanol under a minimisation in water (it breaks apart in 200
    iterations, which the next test shows is caught), so the run starts MD from the built geometry."""
    pytest.importorskip("openmmml")
    command = [sys.executable, str(SCRIPT), "--model", str(molecule_model.model_path), "--out", str(tmp_path)]
    done = subprocess.run(
        [*command, "--time", "10 fs", "--report-every", "5", "--minimise-iterations", "0"],
        capture_output=True,
        text=True,
        timeout=900,
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


def test_a_model_that_cannot_hold_the_molecule_is_named_not_the_box(tmp_path):
    """An untrained model (its network scaled to nothing: no force holds ethanol together) lets the molecule fall
    apart in MD; the example said "ML region spans 0.52 of box vector 1" (blaming the box) or ran on with a broken
    molecule, and now stops at the first reported frame where a bond has doubled and says the molecule broke apart."""
    pytest.importorskip("openmmml")
    from physml_md.export import export_potential
    from physml_md.models import build_model

    model = build_model(species=["H", "C", "O"], cutoff=4.0, features=8, n_interactions=1, n_rbf=4, seed=0)
    model.set_shift_and_scale({1: 0.0, 6: 0.0, 8: 0.0}, 1e-6)
    path = export_potential(model.eval(), tmp_path / "untrained.pt")
    out = tmp_path / "out"
    command = [sys.executable, str(SCRIPT), "--model", str(path), "--out", str(out), "--report-every", "10"]
    # no minimisation: with it, the molecule may already break there (torch 2.14 did), and MD is what this tests
    command += ["--minimise-iterations", "0", "--time", "150 fs"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("the ML region broke apart: the ") and " bond is " in message, message
    assert "Å at the start) after MD steps " in message and "check it with physml-md validate" in message, message
    assert "box vector" not in done.stderr and "Traceback" not in done.stderr
    frames = mdtraj.load(str(out / "mlmm.dcd"), top=str(out / "mlmm.pdb"))  # the frames up to the break are kept
    assert 1 <= frames.n_frames < 30 and not (out / "summary.json").exists()
