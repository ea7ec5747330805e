"""examples/active_learning/run.py on a tiny budget: GFN2-xTB data, two rounds of the loop, the round table."""

import json
from pathlib import Path

import pytest
from ase.io import read

from tests.helpers import load_script

pytest.importorskip("tblite.ase", reason="the active-learning example labels with tblite (pip install tblite)")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "active_learning" / "run.py"


@pytest.mark.filterwarnings("ignore::physml_md.integrations.ase.ExtrapolationWarning")  # 3-epoch models, 500 K
def test_smoke_run_makes_data_runs_rounds_and_prints_the_table(tmp_path, capsys):
    run = load_script(EXAMPLE)
    argv = ["--out", str(tmp_path), "--start-frames", "12", "--test-frames", "4", "--rounds", "2", "--epochs", "3"]
    assert run.main(argv + ["--md-time", "20 fs"]) == 0
    out = capsys.readouterr().out
    assert "test F MAE meV/A" in out and "500 K test force MAE" in out
    assert out.count("test F MAE meV/A") == 1, "the round table's header is printed once"
    start = read(tmp_path / "data" / run.START_NAME, ":")
    test = read(tmp_path / "data" / run.TEST_NAME, ":")
    assert len(start) == 12 and len(test) == 4
    assert {f.info["temperature_K"] for f in start} == {300.0} and {f.info["temperature_K"] for f in test} == {500.0}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 1 <= len(summary["rounds"]) <= 2
    assert all(r["test_force_mae_mev_per_angstrom"] > 0 for r in summary["rounds"])
    for record in summary["rounds"]:  # every round kept its files
        folder = tmp_path / "loop" / f"round_{record['round']}"
        assert (folder / "round.json").is_file() and (folder / "md.extxyz").is_file()
