"""The physml-md command line."""

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

import physml_md
from physml_md.cli import main
from physml_md.models import build_model
from tests.helpers import inputs


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    frames = []
    for seed in range(3):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.05, seed=seed)
        atoms.calc = EMT()
        atoms.get_forces()
        frames.append(atoms)
    write(folder / "cu.extxyz", frames)
    model = build_model(species=["Cu"], cutoff=4.0, features=8, n_interactions=1).eval()
    physml_md.export_potential(model, folder / "model.pt")
    return folder / "model.pt", folder / "cu.extxyz", frames, model


def test_info(files, capsys):
    assert main(["info", str(files[0])]) == 0
    out = capsys.readouterr().out
    assert "species         Cu" in out and "cutoff          4.0 angstrom" in out
    assert main(["info", "--json", str(files[0])]) == 0
    assert json.loads(capsys.readouterr().out)["atomic_numbers"] == [29]


def test_evaluate_compares_with_the_reference_labels(files, capsys):
    model_path, data_path, frames, model = files
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
