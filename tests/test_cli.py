"""The physml-md command line."""

import json

import numpy as np
import pytest
from ase.io import write

import physml_md
from physml_md.cli import main
from tests.helpers import inputs, rattled_cu


# ----------------------------------------------------------------------------------------------- md and validate
@pytest.fixture(scope="module")
def cu_cell(tmp_path_factory):
    atoms = rattled_cu()
    path = tmp_path_factory.mktemp("md") / "cu32.extxyz"
    write(path, atoms)
    return path


@pytest.mark.parametrize("engine", ["ase", "openmm"])
def test_md_writes_a_dcd_with_its_topology_and_a_csv_log(cu_model, cu_cell, tmp_path, capsys, engine):
    import mdtraj

    from physml_md.md.writers import read_energy_log

    out = tmp_path / "run.dcd"
    args = [str(cu_model.model_path), str(cu_cell), "--engine", engine, "--ensemble", "nve", "--time", "10 fs"]
    code = main(["md", *args, "--timestep", "0.5 fs", "--report-every", "5", "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"{engine} nve: 20 of 20 steps" in printed and "energy drift" in printed and "ns/day" in printed
    trajectory = mdtraj.load(str(out), top=str(tmp_path / "run.pdb"))
    assert trajectory.n_frames == 5 and trajectory.n_atoms == 32
    log = read_energy_log(tmp_path / "run.csv")
    assert list(log["step"]) == [0, 5, 10, 15, 20]
    assert np.allclose(log["total_ev"], log["potential_ev"] + log["kinetic_ev"])


def test_md_blow_up_exits_1_and_says_where(cli_files, cu_cell, capsys):
    model, *_ = cli_files  # random weights
    code = main(["md", str(model), str(cu_cell), "--steps", "20", "--max-force", "1e-6", "--quiet"])
    assert code == 1
    assert "blow-up at step 0: force on atom" in capsys.readouterr().err


def test_md_wrong_unit_exits_2(cu_model, cu_cell, capsys):
    code = main(["md", str(cu_model.model_path), str(cu_cell), "--steps", "5", "--timestep", "1 K", "--quiet"])
    assert code == 2
    assert "timestep needs a time" in capsys.readouterr().err


def test_validate_writes_the_report_and_exits_by_the_verdict(cu_model, cu_cell, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["validate", str(cu_model.model_path), "--structures", str(cu_cell), "--out", str(out), "--quiet"]
    code = main([*args, "--nvt-steps", "200", "--nve-steps", "100"])
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert code == (0 if report["passed"] else 1)
    assert "MD validation:" in printed and "NVE energy drift" in printed
    # an impossible drift threshold fails the validation: exit 1
    assert main([*args, "--nvt-steps", "50", "--nve-steps", "50", "--drift", "1e-12"]) == 1
    assert json.loads((out / "report.json").read_text())["passed"] is False


@pytest.mark.parametrize(("signal_name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_md_interrupted_by_a_signal_says_so_and_exits_128_plus_its_number(
    cli_files, cu_cell, tmp_path, capsys, monkeypatch, signal_name, code
):
    """The run itself is tested in tests/md/test_interrupt.py; here: what the command makes of its result."""
    from physml_md.md import runner

    real = runner.run_md

    def interrupted_run(*args, **kwargs):
        result = real(*args, **kwargs)
        result.interrupted = signal_name
        return result

    monkeypatch.setattr(runner, "run_md", interrupted_run)
    args = [str(cli_files[0]), str(cu_cell), "--ensemble", "nve", "--time", "2 fs", "--timestep", "0.5 fs"]
    assert main(["md", *args, "--report-every", "1", "--out", str(tmp_path / "run.extxyz"), "--quiet"]) == code
    captured = capsys.readouterr()
    assert f"interrupted by {signal_name} at step 4 of 4" in captured.err
    assert "4 of 4 steps" in captured.out  # the frames it kept are still reported


def test_md_no_periodic_runs_a_periodic_model_on_a_cluster_in_openmm(cu_model, tmp_path, capsys):
    """A model trained on periodic cells only is refused on a cluster (no box) unless --no-periodic says so; then
    the first frame's energy is the model's on the isolated cluster."""
    from ase.cluster import Octahedron
    from ase.io import write

    cluster = Octahedron("Cu", 3)
    cluster.rattle(0.02, seed=1)
    path = tmp_path / "cluster.extxyz"
    write(path, cluster)
    log = tmp_path / "run.csv"
    args = [str(cu_model.model_path), str(path), "--engine", "openmm", "--ensemble", "nve", "--steps", "1"]
    args += ["--report-every", "1", "--out", str(tmp_path / "run.dcd"), "--quiet"]
    assert main(["md", *args]) == 2
    assert "--no-periodic" in capsys.readouterr().err
    assert main(["md", *args, "--no-periodic"]) == 0
    header = log.read_text().splitlines()[0].split(",")
    first = np.loadtxt(log, delimiter=",", skiprows=1, ndmin=2)[0]
    expected = float(physml_md.load_potential(cu_model.model_path)(inputs(cluster))["energy"][0])
    assert first[header.index("potential_ev")] == pytest.approx(expected, rel=1e-9)
