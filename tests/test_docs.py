"""The generated reference pages match the code, and docs/mapping.md names only keys that exist."""

import importlib.util
import re
from pathlib import Path

import pytest

from physml_md.training import config as C
from physml_md.training.config_reference import (
    config_keys,
    config_reference,
    config_sections,
    is_config_key,
    leaf_fields,
)
from physml_md.training.schema import TrainerConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REGENERATE = "regenerate with: .venv/bin/python docs/generate.py"


@pytest.fixture(scope="module")
def generate():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sections(markdown: str) -> dict:
    """``{table name: [keys of its rows]}`` of a generated configuration reference."""
    sections, current = {}, None
    for line in markdown.splitlines():
        heading = re.match(r"^## `\[+([\w.]+)\]+`$", line)
        if heading:
            current = sections.setdefault(heading.group(1), [])
            continue
        row = re.match(r"^\| `(\w+)` \|", line)
        if row and current is not None:
            current.append(row.group(1))
    return sections


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


def test_every_field_is_in_the_reference():
    sections = _sections(config_reference())
    for name, cls, _ in config_sections():
        assert name in sections, f"no section [{name}] in the configuration reference"
        leaves = [info.alias or field for field, info in leaf_fields(cls)]
        assert sections[name] == leaves, f"[{name}]: the reference lists {sections[name]}, the schema {leaves}"
    assert [s for s in sections if s.startswith("trainer")] == ["trainer", "trainer.checkpoint", "trainer.callbacks"]
    for key in TrainerConfig.model_fields:
        assert key in sections["trainer"] or key == "checkpoint"
    assert "cut_off" in sections["data"] and "cutoff" in sections["model"]  # the keys as written in a file


def test_every_field_has_help():
    for name, cls, _ in config_sections():
        for field, info in leaf_fields(cls):
            assert info.description, f"{name}.{field} has no Field(description=...)"


def test_defaults_and_choices_come_from_the_code():
    text = config_reference()
    for scheduler in C.LR_SCHEDULERS:
        assert f'`"{scheduler}"`' in text
    for strategy in C.SPLITTING_STRATEGIES:
        assert f'`"{strategy}"`' in text
    for component in C.LOSS_COMPONENTS:
        assert f"`{component}`" in text
    # a sub-table's own default, not its class default: data.train.batch_size
    train = text.split("## `[data.train]`")[1].split("## ")[0]
    assert f"| `batch_size` | integer ≥ 1 | `{C.Config().data.train.batch_size}` |" in train


def test_editing_help_changes_the_reference(monkeypatch):
    monkeypatch.setattr(C.ModelConfig.model_fields["zbl"], "description", "a changed description")
    assert "a changed description" in config_reference()


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


def test_is_config_key():
    assert all(is_config_key(key) for key in config_keys())
    assert is_config_key("trainer.gradient_clip_val")  # a lightning.Trainer argument
    assert is_config_key("trainer.checkpoint.dirpath")  # a ModelCheckpoint argument
    for wrong in ("data.batch_size", "model.cut_off", "trainer.not_an_argument", "trainer.checkpoint.nope", "x"):
        assert not is_config_key(wrong)
