"""The physml-md command line: physml_md/cli/main.py (the parser) and physml_md/cli/commands.py (what each command
does), run as users run them."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml
from ase.io import write

import physml_md
from physml_md.cli.commands import VALIDATION_FILES
from physml_md.cli.main import build_parser, main
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

    from physml_md.md.io.writing import read_energy_log

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
    assert {p.name for p in out.iterdir()} <= set(VALIDATION_FILES)  # what the command checks before it writes
    # the report of the first run is not written over without --force
    assert main([*args, "--nvt-steps", "50", "--nve-steps", "50"]) == 2
    assert f"{out / 'report.json'} exists and this run did not write it" in capsys.readouterr().err
    # an impossible drift threshold fails the validation: exit 1
    assert main([*args, "--nvt-steps", "50", "--nve-steps", "50", "--drift", "1e-12", "--force"]) == 1
    assert json.loads((out / "report.json").read_text())["passed"] is False


@pytest.mark.parametrize(("signal_name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_md_interrupted_by_a_signal_says_so_and_exits_128_plus_its_number(
    cli_files, cu_cell, tmp_path, capsys, monkeypatch, signal_name, code
):
    """The run itself is tested in tests/md/test_interrupt.py; here: what the command makes of its result."""
    from physml_md.cli import commands

    real = commands.run_md

    def interrupted_run(*args, **kwargs):
        result = real(*args, **kwargs)
        result.interrupted = signal_name
        return result

    monkeypatch.setattr(commands, "run_md", interrupted_run)
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


# ------------------------------------------------------------------------------ checkpoints, exit status, signals
@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two checkpoints of differently seeded random Cu models, the first exported alone and both as a committee:
    (checkpoint paths, the first's exported file, the committee's file)."""
    import torch

    from physml_md.export import export_potential
    from physml_md.export.checkpoint import committee_from_checkpoints, exportable_from_checkpoint
    from physml_md.models import build_model
    from tests.export.test_checkpoint import KWARGS, _checkpoint

    folder = tmp_path_factory.mktemp("members")
    paths = [folder / "member_a.ckpt", folder / "member_b.ckpt"]
    for seed, path in enumerate(paths, start=KWARGS["seed"]):
        torch.save(_checkpoint(KWARGS, build_model(**{**KWARGS, "seed": seed})), path)
    potential, metadata = exportable_from_checkpoint(paths[0])
    single = export_potential(potential, folder / "member_a.pt", metadata)
    potential, metadata = committee_from_checkpoints(paths)
    return paths, single, export_potential(potential, folder / "committee.pt", metadata)


def test_evaluate_accepts_a_checkpoint_as_md_and_validate_do(members, cli_files, capsys):
    """It said the checkpoint 'may be damaged... copy it again'; now the table is that of the exported file."""
    (checkpoint, _), exported, _ = members
    labelled = cli_files[1]  # 3 EMT-labelled Cu cells
    assert main(["evaluate", str(checkpoint), str(labelled)]) == 0
    from_checkpoint = capsys.readouterr().out
    assert main(["evaluate", str(exported), str(labelled)]) == 0
    assert from_checkpoint == capsys.readouterr().out and "energy per atom: MAE" in from_checkpoint


def test_md_stopped_by_the_uncertainty_exits_3_and_a_finished_run_0(members, cu_cell, tmp_path, capsys):
    *_, committee = members
    args = ["md", str(committee), str(cu_cell), "--steps", "10", "--report-every", "5", "--quiet"]
    args += ["--uncertainty-threshold", "1e-9 eV/angstrom"]  # random members disagree on every frame
    assert main([*args, "--uncertain-frames", str(tmp_path / "all.extxyz")]) == 0
    assert main([*args, "--uncertain-frames", str(tmp_path / "first.extxyz"), "--stop-on-uncertainty"]) == 3
    captured = capsys.readouterr()
    assert "stopped by --stop-on-uncertainty at step 0 of 10 (exit status 3)" in captured.err
    assert "exit status: " in build_parser().epilog and "3 md --stop-on-uncertainty" in build_parser().epilog


def _send_sigint(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, while the first member trains
    raise AssertionError("SIGINT did not stop the training step")


@pytest.mark.parametrize("command", ["train", "learn"])
def test_sigint_while_a_member_trains_exits_130_with_one_sentence(command, tiny_config, tmp_path, monkeypatch, capsys):
    """It was a raw KeyboardInterrupt traceback (Lightning turns KeyboardInterrupt into sys.exit(1))."""
    from physml_md.training.module import PotentialModule

    monkeypatch.setattr(PotentialModule, "training_step", _send_sigint)
    start = tmp_path / "start.extxyz"
    write(start, rattled_cu())
    tiny_config["training"]["committee"] = 2
    if command == "learn":
        tiny_config["learning"] = {
            "rounds": 1,
            "structures": str(start),
            "md_time": "10 fs",
            "uncertainty_threshold": "0.1 eV/angstrom",
            "label": {"calculator": "ase.calculators.emt.EMT"},
        }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    assert main([command, str(config)]) == 130
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines[-1].startswith(f"physml-md {command}: stopped by SIGINT; "), captured.err
    assert "run the same command again" in lines[-1]
    assert "Traceback" not in captured.err and "KeyboardInterrupt" not in captured.err, captured.err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers were put back
    assert not list((tmp_path / "runs").glob("**/.physml-md.lock"))  # the folder's lock was released


def test_version_and_help_do_not_import_torch():
    """`physml-md --version` took 4 s importing torch; measured here: 0.2 s."""
    probe = (
        "import sys\nfrom physml_md.cli.main import main\nfor argv in (['--version'], ['--help'], ['md', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'numpy', 'lightning', 'ase', 'pint') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout


def test_every_command_runs_its_handler_in_commands():
    """Each `physml-md NAME` parser names ``physml_md.cli.commands.NAME_command``, which main() calls."""
    from physml_md.cli import commands

    subcommands = next(a for a in build_parser()._actions if a.choices and "train" in a.choices).choices
    assert {name: parser.get_default("run") for name, parser in subcommands.items()} == {
        name: f"{name}_command" for name in subcommands
    }
    assert all(callable(getattr(commands, f"{name}_command")) for name in subcommands)


def test_info_into_a_closed_pipe_exits_quietly(cli_files):
    """`physml-md info --json | head -1` ended in a BrokenPipeError traceback."""
    read, write_end = os.pipe()
    os.close(read)  # the reader has gone
    try:
        argv = [sys.executable, "-m", "physml_md.cli.main", "info", str(cli_files[0]), "--json"]
        run = subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert run.returncode == 141 and run.stderr == "", run.stderr
