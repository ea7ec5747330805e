"""examples/ethanol_xtb: make_data.py labels with GFN2-xTB (tblite), and run.py end to end on a tiny budget."""

import json
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest
from ase.io import read

from physml_md.md.io.writing import read_energy_log
from tests.helpers import load_script

pytest.importorskip("tblite.ase", reason="the ethanol example needs tblite (pip install tblite)")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ethanol_xtb"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def make_data():
    return load_script(EXAMPLE / "make_data.py")


def test_make_data_labels_are_gfn2_xtb_of_the_written_positions(make_data, tmp_path):
    files = make_data.make_data(tmp_path, n_frames=3, n_reference_frames=2, seed=1)
    assert files == (tmp_path / make_data.DATA_NAME, tmp_path / make_data.REFERENCE_NAME)
    frames, reference = read(files.data, ":"), read(files.reference, ":")
    assert len(frames) == 3 and len(reference) == 2
    assert [f.info["temperature_K"] for f in frames + reference] == [500.0] * 3 + [300.0] * 2
    assert [f.info["step"] for f in frames] == [1020, 1040, 1060]  # after 1000 steps, every 20
    for frame in frames + reference:
        assert frame.get_chemical_symbols() == ["C", "C", "O", "H", "H", "H", "H", "H", "H"]
        fresh = frame.copy()  # positions as read back from the file
        fresh.calc = make_data.xtb_calculator()
        with make_data.openmp_threads(1):
            energy, forces = fresh.get_potential_energy(), fresh.get_forces()
        np.testing.assert_allclose(frame.get_potential_energy(), energy, rtol=0, atol=1e-8)
        np.testing.assert_allclose(frame.get_forces(), forces, rtol=0, atol=1e-8)
    positions = np.array([f.positions for f in frames])
    assert np.abs(positions[1:] - positions[:-1]).max() > 0.01  # the MD moved between frames
    # the same arguments find the files; other counts or seeds do not
    assert make_data.existing_data(tmp_path, 3, 2, 1) == files
    assert make_data.existing_data(tmp_path, 4, 2, 1) is None
    assert make_data.existing_data(tmp_path, 3, 2, 2) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([make_data.DATA_NAME, make_data.REFERENCE_NAME])


def test_make_data_refuses_bad_counts(make_data, tmp_path):
    with pytest.raises(ValueError, match="n_frames must be a positive integer"):
        make_data.make_data(tmp_path, n_frames=0, n_reference_frames=2)
    assert not any(tmp_path.iterdir())


def test_run_py_end_to_end_on_a_tiny_budget(tmp_path):
    command = [sys.executable, str(EXAMPLE / "run.py"), "--out", str(tmp_path), "--seed", "3"]
    # the smallest budget whose potential survives 60 MD steps (with 12 frames and 2 epochs it does not, and the
    # validation then writes neither nve.csv nor structure.png): about 20 s
    command += ["--frames", "60", "--reference-frames", "20", "--epochs", "30", "--md-steps", "40"]
    command += ["--validation-steps", "60"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[5/5] Summary" in done.stdout and "MD validation" in done.stdout and "Done in" in done.stdout

    summary = json.loads((tmp_path / "summary.json").read_text())
    files = {"train": tmp_path / "data" / "ethanol_xtb_500K.extxyz"}
    files["reference"] = tmp_path / "data" / "ethanol_xtb_300K_reference.extxyz"
    assert summary["data"] == {name: str(path) for name, path in files.items()}
    data, reference = read(files["train"], ":"), read(files["reference"], ":")
    assert len(data) == 60 and len(reference) == 20
    assert all({"energy", "forces"} <= set(frame.calc.results) for frame in data + reference)

    model = Path(summary["model"])
    run_dir = Path(summary["run_dir"])
    assert model.is_file() and model.parent == run_dir / "checkpoints" and run_dir.parent == tmp_path / "runs"
    assert summary["test_metrics"]["test/per_atom_force/mae"] > 0
    assert summary["reference_300K_errors"]["frames"] == 20
    for png in (run_dir / "parity.png", run_dir / "learning_curves.png"):
        assert png.read_bytes()[:8] == PNG

    md = tmp_path / "md"
    trajectory = mdtraj.load(str(md / "nvt.dcd"), top=str(md / "nvt.pdb"))
    assert trajectory.n_frames == 5 and trajectory.n_atoms == 9  # 40 steps, a frame every 10
    assert [a.element.symbol for a in trajectory.topology.atoms] == ["C", "C", "O", "H", "H", "H", "H", "H", "H"]
    log = read_energy_log(md / "nvt.csv")
    assert list(log["step"]) == [0, 10, 20, 30, 40] and np.isfinite(log["total_ev"]).all()
    assert summary["md"]["engine"] == "openmm" and summary["md"]["stable"] and summary["md"]["steps_done"] == 40

    validation = tmp_path / "validation"
    report = json.loads((validation / "report.json").read_text())
    assert report["passed"] == summary["validation_passed"]
    assert report["settings"]["engine"] == "openmm" and report["settings"]["nvt_steps"] == 60
    names = [c["name"] for c in report["criteria"]]
    assert "NVE energy drift" in names
    assert "bond lengths (jensen_shannon)" in names and "dihedrals (jensen_shannon)" in names
    assert list(read_energy_log(validation / "nvt.csv")["step"]) == [0, 10, 20, 30, 40, 50, 60]
    assert list(read_energy_log(validation / "nve.csv")["step"]) == [0, 10, 15]  # 60 // 4 steps
    assert len(read(validation / "nvt.extxyz", ":")) == 7
    for png in ("energy.png", "structure.png"):
        assert (validation / png).read_bytes()[:8] == PNG


def test_epochs_option_keeps_the_mixing_fraction_of_the_config():
    import tomllib

    run = load_script(EXAMPLE / "run.py")
    config = tomllib.loads((EXAMPLE / "config.toml").read_text())
    epochs, mixing = config["trainer"]["max_epochs"], config["training"]["loss_parameter"]["mixing_epochs"]
    overrides = run.epoch_overrides(EXAMPLE / "config.toml", epochs // 2)
    expected = [f"trainer.max_epochs={epochs // 2}"]
    expected += [f"training.loss_parameter.mixing_epochs.{k}={max(1, round(v / 2))}" for k, v in mixing.items()]
    assert overrides == expected and len(overrides) == 3
    assert run.epoch_overrides(EXAMPLE / "config.toml", 1)[1:] == [
        f"training.loss_parameter.mixing_epochs.{k}=1" for k in mixing
    ]
