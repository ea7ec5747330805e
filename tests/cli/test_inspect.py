"""physml_md/cli/inspect.py: `physml-md info` and `physml-md evaluate` (a committee's error against its
uncertainty too)."""

import json

import numpy as np
import pytest

import physml_md
from physml_md.cli.main import main
from tests.helpers import inputs


def test_info(cli_files, capsys):
    assert main(["info", str(cli_files[0])]) == 0
    out = capsys.readouterr().out
    assert "species         Cu" in out and "cutoff          4.0 angstrom" in out
    assert main(["info", "--json", str(cli_files[0])]) == 0
    assert json.loads(capsys.readouterr().out)["atomic_numbers"] == [29]


def test_evaluate_compares_with_the_reference_labels(cli_files, capsys):
    model_path, data_path, frames, model = cli_files
    assert main(["evaluate", str(model_path), str(data_path), "--batch-size", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out if line.strip()[:1].isdigit()]
    assert len(rows) == 3
    for row, atoms in zip(rows, frames):
        predicted = float(model(inputs(atoms))["energy"][0])
        assert float(row[3]) == pytest.approx(predicted, abs=1e-6)
        assert float(row[4]) == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    errors = [(float(r[3]) - float(r[4])) / int(r[2]) for r in rows]
    mae_line = next(line for line in out if line.startswith("energy per atom"))
    assert f"MAE {1000 * np.mean(np.abs(errors)):.3f} meV/atom" in mae_line


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a model")
    assert main(["info", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("physml-md info: error:") and "not a physml-md export" in err


def test_info_shows_the_agreement_report_and_the_closest_training_pairs(cu_model, cli_files, capsys):
    assert main(["info", str(cu_model.model_path)]) == 0
    rows = {line[:14].strip(): line[16:] for line in capsys.readouterr().out.splitlines()}
    meta = physml_md.read_metadata(cu_model.model_path)
    largest = meta["agreement"]["differences"]["file vs eager"]
    assert f"file vs eager: energy {largest['energy']:.1e}, forces {largest['forces']:.1e}" in rows["agreement"]
    assert "3 training structures" in rows["agreement"] and "tolerance 1e-10" in rows["agreement"]
    assert rows["closest pairs"] == f"Cu-Cu: {meta['shortest_pair_distances']['Cu-Cu']:.3f}"
    assert main(["info", str(cli_files[0])]) == 0  # exported without training data: built-in structures, no pairs
    rows = {line[:14].strip(): line[16:] for line in capsys.readouterr().out.splitlines()}
    assert "2 built-in structures" in rows["agreement"] and rows["closest pairs"] == "unknown"


def test_evaluate_a_committee_prints_error_against_uncertainty(cu_committee, cu_data, capsys):
    result, _ = cu_committee
    assert main(["evaluate", str(result.model_path), str(cu_data), "--index", ":8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "max sF / eV/A" in out[0]
    rows = [line.split() for line in out if line.strip()[:1].isdigit()]
    assert len(rows) == 8 and all(len(row) == 9 for row in rows)
    sigma = [float(row[8]) for row in rows]
    assert min(sigma) > 0
    (line,) = [line for line in out if line.startswith("uncertainty vs error")]
    assert "over 8 structures" in line
    assert main(["info", str(result.model_path)]) == 0
    assert "3 members" in capsys.readouterr().out
