"""The CHANGELOG's newest entry is the package version (physml_md/_version.py, read without importing torch)."""

import re
from pathlib import Path

import physml_md


def test_changelog_matches_the_version():
    text = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text()
    newest = re.search(r"^## (\S+)", text, re.MULTILINE)
    assert newest and newest.group(1) == physml_md.__version__


def test_the_version_is_read_from_version_py_by_the_build():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'version = { attr = "physml_md._version.__version__" }' in pyproject
