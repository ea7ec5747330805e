import re
from pathlib import Path

import physml_md


def test_changelog_matches_the_version():
    text = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text()
    newest = re.search(r"^## (\S+)", text, re.MULTILINE)
    assert newest and newest.group(1) == physml_md.__version__
