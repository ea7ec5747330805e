"""Bad input through every ``physml-md`` command: exit code 2, one line on stderr naming the problem, no traceback."""

import re

import pytest
import yaml
from ase.io import write

from physml_md.cli import main
from tests.bad_input.cases import CASES, truncated


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
