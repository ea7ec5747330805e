"""Where a relative path in a configuration starts: at the config file's folder when written in the file, at the
working directory when given with ``--set`` (``overrides``), for every path key, [learning] included."""

from pathlib import Path

import pytest
import yaml

from docs.config_reference import config_reference
from physml_md.config.load import _PATH_KEYS, load_config

CONFIG = """
[data]
source = "data/train.xyz"
cut_off = 4.0
"""

LEARNING = """
[training]
committee = 2

[learning]
structures = "start/in_file.extxyz"
test_data = "test/in_file.extxyz"

[learning.label]
calculator = "ase.calculators.emt.EMT"
"""


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """A config file in ``project/`` and a working directory ``work/`` elsewhere; returns both folders."""
    project, work = tmp_path / "project", tmp_path / "work"
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.xyz").write_text("")
    (project / "run.toml").write_text(CONFIG)
    work.mkdir()
    monkeypatch.chdir(work)
    return project.resolve(), work.resolve()


def _get(raw, chain):
    for key in chain:
        raw = raw[key]
    return raw


def _write(path: Path, chain, value: str) -> None:
    """A YAML config whose training data are data/train.xyz and whose ``chain`` key is ``value``."""
    raw = {"data": {"cut_off": 4.0}}
    raw["data"].update({"train": {"path": "data/train.xyz"}} if chain[1] in SPLITS else {"source": "data/train.xyz"})
    table = raw
    for key in chain[:-1]:
        table = table.setdefault(key, {})
    table[chain[-1]] = value
    path.write_text(yaml.safe_dump(raw))


SPLITS = ("train", "validation", "test", "predict")
TRAINING_CHAINS = [chain for chain in _PATH_KEYS if chain[0] != "learning"]


@pytest.mark.parametrize("chain", TRAINING_CHAINS, ids=".".join)
def test_a_path_in_the_file_starts_at_the_file_and_one_from_set_at_the_working_directory(layout, chain):
    project, work = layout
    _write(project / "run.yaml", chain, "in_file/x.xyz")
    config = load_config(project / "run.yaml", require_files=False)
    assert _get(config.model_dump(by_alias=True), chain) == str(project / "in_file" / "x.xyz")

    config = load_config(project / "run.yaml", [f"{'.'.join(chain)}=from_set/x.xyz"], require_files=False)
    assert _get(config.model_dump(by_alias=True), chain) == str(work / "from_set" / "x.xyz")


def test_data_source_from_set_starts_at_the_working_directory(layout):
    project, work = layout
    assert load_config(project / "run.toml").data.source == str(project / "data" / "train.xyz")
    (work / "mine.xyz").write_text("")
    assert load_config(project / "run.toml", ["data.source=mine.xyz"]).data.source == str(work / "mine.xyz")


def test_learning_paths_follow_the_same_rule(layout):
    """``physml-md learn --set learning.structures=...`` is typed relative to the working directory; before, the
    [learning] table's paths were all resolved against the config file, --set ones too. [learning] is part of the
    configuration, validated and resolved with the rest by ``load_config``."""
    project, work = layout
    (project / "learn.toml").write_text(CONFIG + LEARNING)
    learning = load_config(project / "learn.toml").learning
    assert learning.structures == str(project / "start" / "in_file.extxyz")
    assert learning.test_data == str(project / "test" / "in_file.extxyz")
    overrides = ["learning.structures=mine.extxyz", "learning.test_data=sub/test.extxyz"]
    learning = load_config(project / "learn.toml", overrides).learning
    assert learning.structures == str(work / "mine.extxyz")
    assert learning.test_data == str(work / "sub" / "test.extxyz")
    assert load_config(project / "run.toml").learning is None  # train's files need no [learning]


def test_a_missing_file_names_both_rules(layout):
    project, _ = layout
    with pytest.raises(ValueError, match="starts at its folder, one given with --set at the working directory"):
        load_config(project / "run.toml", ["data.source=missing.xyz"])


def test_the_reference_states_the_rule():
    text = " ".join(config_reference().split())
    assert "written in the config file starts at the file's folder" in text
    assert "one given with `--set` starts at the working directory" in text
    assert "Relative paths start at the config file." not in text
