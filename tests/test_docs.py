"""The generated reference pages match the code, and docs/mapping.md names only keys that exist."""

import importlib.util
import re
from pathlib import Path

import pytest

from docs.config_reference import config_reference, is_config_key

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REGENERATE = "regenerate with: .venv/bin/python docs/generate.py"


@pytest.fixture(scope="module")
def generate():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_md_is_generated(generate):
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert committed == config_reference(), f"docs/configuration.md is out of date; {REGENERATE}"


def test_cli_md_is_generated(generate):
    committed = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert committed == generate.cli_reference(), f"docs/cli.md is out of date; {REGENERATE}"


def test_generate_check_passes(generate, capsys):
    assert generate.main(["--check"]) == 0, capsys.readouterr().out


def test_check_reports_a_stale_file(generate, tmp_path, monkeypatch, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(generate, "render", lambda: {stale: "new\n"})
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    assert generate.main(["--check"]) == 1
    assert stale.read_text(encoding="utf-8") == "old\n"  # --check writes nothing
    assert "-old" in capsys.readouterr().out


def _mapping_rows():
    """``(line number, cells)`` of every table row of docs/mapping.md, with the index of its "ours" column."""
    lines = (DOCS / "mapping.md").read_text(encoding="utf-8").splitlines()
    ours = None
    for number, line in enumerate(lines, 1):
        if not line.startswith("|"):
            ours = None
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if ours is None:
            assert "ours" in cells, f"docs/mapping.md:{number}: a table without an 'ours' column"
            ours = cells.index("ours")
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        yield number, cells[ours]


def test_mapping_names_only_real_keys():
    rows = list(_mapping_rows())
    assert len(rows) > 50
    named = set()
    for number, cell in rows:
        keys = re.findall(r"`([^`]+)`", cell)
        assert keys or cell == "—", f"docs/mapping.md:{number}: the 'ours' cell {cell!r} is neither keys nor '—'"
        for key in keys:
            assert is_config_key(key), f"docs/mapping.md:{number}: {key!r} is not a key of our configuration"
            named.add(key)
    assert {"data.train.batch_size", "training.loss_parameter.mixing_steps", "trainer.max_epochs"} <= named
