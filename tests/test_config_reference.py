"""The configuration reference (training/config_reference.py) lists every field of the schema, with its help."""

import re

from docs.config_reference import (
    config_keys,
    config_reference,
    config_sections,
    is_config_key,
    leaf_fields,
)
from physml_md.config.data import ModelConfig
from physml_md.config.load import Config
from physml_md.config.trainer import TrainerConfig
from physml_md.config.training import LR_SCHEDULERS
from physml_md.config.types import LOSS_COMPONENTS
from physml_md.data.splits import STRATEGIES as SPLITTING_STRATEGIES


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
    for scheduler in LR_SCHEDULERS:
        assert f'`"{scheduler}"`' in text
    for strategy in SPLITTING_STRATEGIES:
        assert f'`"{strategy}"`' in text
    for component in LOSS_COMPONENTS:
        assert f"`{component}`" in text
    # a sub-table's own default, not its class default: data.train.batch_size
    train = text.split("## `[data.train]`")[1].split("## ")[0]
    assert f"| `batch_size` | integer ≥ 1 | `{Config().data.train.batch_size}` |" in train


def test_editing_help_changes_the_reference(monkeypatch):
    monkeypatch.setattr(ModelConfig.model_fields["zbl"], "description", "a changed description")
    assert "a changed description" in config_reference()


def test_is_config_key():
    assert all(is_config_key(key) for key in config_keys())
    assert is_config_key("trainer.gradient_clip_val")  # a lightning.Trainer argument
    assert is_config_key("trainer.checkpoint.dirpath")  # a ModelCheckpoint argument
    for wrong in ("data.batch_size", "model.cut_off", "trainer.not_an_argument", "trainer.checkpoint.nope", "x"):
        assert not is_config_key(wrong)
