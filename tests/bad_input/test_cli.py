"""Bad input through every ``physml-md`` command: exit code 2, one line on stderr naming the problem, no traceback."""

import json
import os
import re

import pytest
import torch
import yaml
from ase.build import bulk
from ase.io import write

from physml_md.cli.main import main
from physml_md.models import build_model
from tests.bad_input.cases import CASES, truncated
from tests.export.test_checkpoint import KWARGS, _checkpoint


def _one_line_error(capsys, command):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"physml-md {command}: error: "), captured.err
    assert "Traceback" not in captured.err and "TorchScript" not in captured.err, captured.err
    return lines[0]


# empty structure: an extxyz file of no atoms is read as a file holding no structures (see FILE_CASES)
@pytest.mark.parametrize("case", sorted(set(CASES) - {"empty structure"}))
def test_evaluate_exits_2_with_the_models_sentence(files, case, tmp_path, capsys):
    make, start, fix = CASES[case]
    structures = tmp_path / "structures.extxyz"
    write(structures, make())
    assert main(["evaluate", str(files[".pt"]), str(structures)]) == 2
    line = _one_line_error(capsys, "evaluate")
    assert start in line and fix in line, line


@pytest.mark.parametrize("engine", ["ase", "openmm"])
@pytest.mark.parametrize(
    "case", ["NaN positions", "two atoms at one position", "stretched structure", "huge coordinate"]
)
def test_md_exits_2_with_the_models_sentence(files, case, engine, tmp_path, capsys):
    """NaN positions were 'Eigenvalues did not converge' (the velocity draw); OpenMM printed the model's trace."""
    make, start, fix = CASES[case]
    structure = tmp_path / "structure.extxyz"
    write(structure, make())
    for ensemble in ("nve", "nvt"):
        args = [str(files[".pt"]), str(structure), "--engine", engine, "--ensemble", ensemble, "--steps", "10"]
        assert main(["md", *args, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "TorchScript" not in err and "HERE" not in err, err
        assert start in err and fix in err, err


@pytest.mark.parametrize("case", ["truncated checkpoint", "exported file", "output directory"])
def test_export_exits_2_with_a_sentence(good_checkpoint, files, case, tmp_path, capsys):
    if case == "truncated checkpoint":
        argv = [str(truncated(good_checkpoint, tmp_path / "cut.ckpt", 0.5)), str(tmp_path / "out.pt")]
        expected = "damaged or truncated"
    elif case == "exported file":  # `export` of a .pt (truncated or not): it reads checkpoints
        argv = [str(truncated(files[".pt"], tmp_path / "cut.pt", 0.5)), str(tmp_path / "out.pt")]
        expected = "damaged or truncated"
    else:
        (tmp_path / "out").mkdir()
        argv = [str(good_checkpoint), str(tmp_path / "out")]
        expected = "is a directory"
    assert main(["export", *argv]) == 2
    assert expected in _one_line_error(capsys, "export")


@pytest.mark.parametrize("command", ["evaluate", "md", "info"])
def test_a_truncated_exported_file_exits_2(files, structure_files, command, tmp_path, capsys):
    cut = str(truncated(files[".pt"], tmp_path / "cut.pt", 0.5))
    argv = {
        "evaluate": ["evaluate", cut, str(structure_files["good"])],
        "md": ["md", cut, str(structure_files["good"]), "--steps", "2", "--quiet"],
        "info": ["info", cut],
    }[command]
    assert main(argv) == 2
    assert "damaged or truncated" in _one_line_error(capsys, command)


def test_train_from_a_truncated_checkpoint_exits_2(good_checkpoint, tiny_config, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    cut = truncated(good_checkpoint, tmp_path / "cut.ckpt", 0.5)
    assert main(["train", str(config), "--ckpt-path", str(cut)]) == 2
    assert "damaged or truncated" in _one_line_error(capsys, "train")


# case -> (command, structure file, extra arguments, what the one line says)
FILE_CASES = {
    "md --index 99": ("md", "good", ["--index", "99"], r"index 99 is out of range: '.*cu\.extxyz' holds 1 structure"),
    "md empty file": ("md", "empty", [], r"'.*empty\.extxyz' holds no structures \(the file is empty\)"),
    "md truncated file": ("md", "truncated", [], r"cannot read '.*truncated\.extxyz'.*truncated or damaged"),
    "validate --index 99": ("validate", "good", ["--index", "99"], r"index 99 is out of range: .* holds 1 structure"),
    "validate empty file": ("validate", "empty", [], r"'.*empty\.extxyz' holds no structures"),
    "validate truncated file": ("validate", "truncated", [], r"cannot read '.*truncated\.extxyz'.*truncated or"),
    "evaluate empty file": ("evaluate", "empty", [], r"'.*empty\.extxyz' holds no structures \(the file is empty"),
    "evaluate truncated file": ("evaluate", "truncated", [], r"cannot read '.*truncated\.extxyz'.*truncated or"),
    "evaluate --index 99": ("evaluate", "good", ["--index", "99"], r"index 99 is out of range: .* holds 1 structure"),
    "evaluate --batch-size -1": ("evaluate", "good", ["--batch-size", "-1"], r"--batch-size must be a positive"),
    "evaluate --batch-size 0": ("evaluate", "good", ["--batch-size", "0"], r"--batch-size must be a positive"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_structure_files_and_options_exit_2_with_one_line(files, structure_files, case, capsys):
    command, which, extra, expected = FILE_CASES[case]
    path = str(structure_files[which])
    if command == "md":
        argv = ["md", str(files[".pt"]), path, "--steps", "2", "--quiet", *extra]
    elif command == "validate":
        argv = ["validate", str(files[".pt"]), "--structures", path, "--nvt-steps", "2", "--nve-steps", "2", *extra]
    else:
        argv = ["evaluate", str(files[".pt"]), path, *extra]
    assert main(argv) == 2
    line = _one_line_error(capsys, command)
    assert re.search(expected, line), line
    assert "StopIteration" not in line
    assert not capsys.readouterr().out.strip()  # nothing printed before the error (evaluate printed a header)


@pytest.mark.parametrize("value", ["-1", "0"])
def test_train_refuses_max_epochs_before_training(tiny_config, tmp_path, value, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", str(config), "--set", f"trainer.max_epochs={value}"]) == 2
    assert f"trainer.max_epochs = {value}" in _one_line_error(capsys, "train")
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_resuming_a_finished_run_exits_2_saying_how_to_train_longer(tiny_config, tmp_path, capsys):
    tiny_config["trainer"]["max_epochs"] = 1
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", str(config)]) == 0
    last = next((tmp_path / "runs").rglob("last.ckpt"))
    capsys.readouterr()
    assert main(["train", str(config), "--ckpt-path", str(last)]) == 2
    line = _one_line_error(capsys, "train")
    assert "raise trainer.max_epochs" in line and "metrics.csv" not in line, line
    versions = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert versions == ["version_0"], versions  # no empty run directory was started


# ------------------------------------------------------------------ outputs: no command writes over a file not its own
def test_export_with_the_output_name_forgotten_leaves_the_checkpoint_byte_identical(good_checkpoint, tmp_path, capsys):
    """`physml-md export member_a.ckpt member_b.ckpt` wrote over member_b.ckpt, then its clean-up deleted it."""
    member_a, member_b = tmp_path / "member_a.ckpt", tmp_path / "member_b.ckpt"
    member_a.write_bytes(good_checkpoint.read_bytes())
    torch.save(_checkpoint(KWARGS, build_model(**{**KWARGS, "seed": 4})), member_b)
    before = {path: path.read_bytes() for path in (member_a, member_b)}
    assert main(["export", str(member_a), str(member_b)]) == 2
    line = _one_line_error(capsys, "export")
    assert f"{member_b} exists and this run did not write it" in line and "--force to overwrite it" in line, line
    # an input named as the output is refused, --force or not
    assert main(["export", str(member_a), str(member_b), str(member_a), "--force"]) == 2
    assert f"{member_a} is an input of this command and also its output" in _one_line_error(capsys, "export")
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == before  # and no temporary left behind


def _existing_output_case(case, files, structure_files, tiny_config, tmp_path):
    """(argv, the file that exists before the command)."""
    model, structure = str(files[".pt"]), str(structure_files["good"])
    traj = tmp_path / "traj.dcd"
    md = ["md", model, structure, "--steps", "2", "--quiet", "--out", str(traj)]
    md += ["--uncertainty-threshold", "1 eV/angstrom"]
    if case.startswith("md"):
        name = {"md --out": "traj.dcd", "md topology": "traj.pdb", "md log": "traj.csv"}.get(case)
        return md, tmp_path / (name or "traj_uncertain.extxyz")
    if case == "validate report":
        return ["validate", model, "--structures", structure, "--out", str(tmp_path / "report")], tmp_path / "report"
    if case == "validate summary beside the model":
        copy = tmp_path / "model.pt"
        copy.write_bytes(files[".pt"].read_bytes())
        argv = ["validate", str(copy), "--structures", structure, "--out", str(tmp_path / "report")]
        return argv, tmp_path / "model.validation.json"
    tiny_config["training"]["committee"] = 2  # train --committee: the committee's file
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    return ["train", str(config)], tmp_path / "runs" / "model.pt"


EXISTING = ["md --out", "md topology", "md log", "md uncertain frames", "validate report"]
EXISTING += ["validate summary beside the model", "train committee"]


@pytest.mark.parametrize("case", EXISTING)
def test_every_command_refuses_an_existing_output_before_it_starts(
    case, files, structure_files, tiny_config, tmp_path, capsys
):
    argv, existing = _existing_output_case(case, files, structure_files, tiny_config, tmp_path)
    if case == "validate report":
        existing.mkdir()
        existing = existing / "report.json"
    existing.parent.mkdir(parents=True, exist_ok=True)
    existing.write_text("mine")
    assert main(argv) == 2
    line = _one_line_error(capsys, argv[0])
    assert f"{existing} exists and this run did not write it" in line and "--force" in line, line
    assert existing.read_text() == "mine"
    assert not list(tmp_path.rglob("member_*")) and not list(tmp_path.rglob("*.tmp*"))  # nothing started


@pytest.mark.parametrize("command", ["md", "export", "validate", "train"])
def test_an_output_below_a_file_is_one_line_not_file_exists_error(
    command, files, structure_files, good_checkpoint, tiny_config, tmp_path, capsys
):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    below = notes / "sub"
    argv = {
        "md": ["md", str(files[".pt"]), str(structure_files["good"]), "--steps", "2", "--out", str(below / "t.xyz")],
        "export": ["export", str(good_checkpoint), str(below / "model.pt")],
        "validate": ["validate", str(files[".pt"]), "--structures", str(structure_files["good"]), "--out", str(below)],
        "train": ["train", str(tmp_path / "config.yaml")],
    }[command]
    tiny_config["trainer"]["default_root_dir"] = str(below)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config))
    assert main(argv) == 2
    assert f"{notes} is a file, not a folder" in _one_line_error(capsys, command)
    assert notes.read_text() == "mine"


@pytest.mark.parametrize("command", ["train", "learn"])
def test_a_training_folder_in_use_by_another_run_is_refused(command, tiny_config, tmp_path, capsys):
    """Two `train --committee 2` into one folder at once both exited 0, model.pt holding the second's members."""
    from physml_md.atomic_write import _host

    runs = tmp_path / "runs"
    runs.mkdir()
    running = {"pid": os.getppid(), "host": _host(), "command": "physml-md train", "started": "2026-01-01T00:00:00"}
    (runs / ".physml-md.lock").write_text(json.dumps(running))
    tiny_config["training"]["committee"] = 2
    if command == "learn":
        tiny_config["learning"] = {
            "structures": str(tmp_path / "start.extxyz"),
            "uncertainty_threshold": "0.1 eV/angstrom",
            "label": {"calculator": "ase.calculators.emt.EMT"},
        }
        write(tmp_path / "start.extxyz", bulk("Cu", "fcc", a=3.6, cubic=True))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    assert main([command, str(config)]) == 2
    line = _one_line_error(capsys, command)
    assert f"{runs} is in use by another run (process {os.getppid()} on {_host()}" in line, line
    assert [p.name for p in runs.iterdir()] == [".physml-md.lock"]  # nothing trained, their lock kept


@pytest.mark.parametrize(("format", "name"), [("export", "an export file"), ("aotinductor", "an aotinductor file")])
def test_a_format_and_a_file_name_that_disagree_read_well(good_checkpoint, format, name, tmp_path, capsys):
    """It said "a export file" / "a aotinductor file"."""
    assert main(["export", str(good_checkpoint), str(tmp_path / "model.pt"), "--format", format]) == 2
    assert f"{name} is named *.pt2, not model.pt: rename the output to model.pt2" in _one_line_error(capsys, "export")
