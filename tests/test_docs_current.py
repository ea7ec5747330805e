"""The docs describe the code as it is: the README's module table ("What is here") has a row for every module of
physml_md/ and names only files that exist, its command-line row names every ``physml-md`` command; docs/mapping.md
names every architecture; the README and docs/configuration.md recommend the same TensorNet depth."""

import re
from pathlib import Path
from typing import Dict, List

from docs.config_reference import config_reference
from physml_md.cli.main import build_parser
from physml_md.config.data import MODEL_NAMES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "physml_md"


def module_rows() -> Dict[str, List[Path]]:
    """Each table row's text -> the files its first cell names. A cell starts with a path under physml_md/; the
    names after it are in the same folder, or under physml_md/ when they hold a slash."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## What is here\n(.*?)^#", text, flags=re.S | re.M)
    assert section, "README.md has no '## What is here' section"
    rows = {}
    for line in section.group(1).splitlines():
        if not line.startswith("| `physml_md/"):
            continue
        first_cell = re.split(r"(?<!\\)\|", line)[1]
        names = re.findall(r"`([^`]+)`", first_cell)
        base = ROOT / names[0] if names[0].endswith("/") else (ROOT / names[0]).parent
        files = [] if names[0].endswith("/") else [ROOT / names[0]]
        files += [(PACKAGE / name) if "/" in name else (base / name) for name in names[1:]]
        rows[line] = files
    assert rows, "no module rows found in README.md's 'What is here'"
    return rows


def test_every_file_the_table_names_exists():
    missing = [f"{p.relative_to(ROOT)}" for files in module_rows().values() for p in files if not p.is_file()]
    assert not missing, f"README 'What is here' names files that do not exist: {missing}"


def test_every_module_has_a_row():
    named = {p.resolve() for files in module_rows().values() for p in files}
    modules = {p.resolve() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    unnamed = sorted(str(p.relative_to(ROOT)) for p in modules - named)
    assert not unnamed, f"README 'What is here' has no row for: {unnamed}; add one (module | what it does)"


def test_the_command_line_row_names_every_command():
    (row,) = [line for line, files in module_rows().items() if PACKAGE / "cli" / "main.py" in files]
    description = re.split(r"(?<!\\)\|", row)[2]
    subcommands = next(a for a in build_parser()._actions if a.choices and "train" in a.choices).choices
    missing = [name for name in subcommands if not re.search(rf"`(physml-md )?{name}`", description)]
    assert not missing, f"README 'What is here': the cli/main.py row does not name {missing}"


def test_mapping_names_every_architecture():
    (row,) = [line for line in (ROOT / "docs" / "mapping.md").read_text().splitlines() if "| `model.name` |" in line]
    missing = [name for name in MODEL_NAMES if f'`"{name}"`' not in row]
    assert not missing, f"docs/mapping.md's model.name row does not name {missing}"


def test_readme_and_configuration_recommend_the_same_tensornet_depth():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith('| `"tensornet"` |')]
    (depth,) = re.findall(r"n_interactions = (\d+)", row)
    (name_row,) = [line for line in config_reference().splitlines() if line.startswith('| `name` | one of `"painn"`')]
    assert re.findall(r"n_interactions = (\d+)", name_row) == [depth], (row, name_row)
