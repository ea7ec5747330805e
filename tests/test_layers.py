"""Imports point down the layers of DESIGN.md."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "physml_md"

# folder or module -> module prefixes it must never import
FORBIDDEN = {
    "models": (
        "lightning",
        "pytorch_lightning",
        "ase",
        "openmm",
        "openmmtorch",
        "physml_md.training",
        "physml_md.integrations",
        "physml_md.md",
        "physml_md.export",
        "physml_md.cli",
    ),
    "data": (
        "physml_md.models",
        "physml_md.training",
        "physml_md.integrations",
        "physml_md.md",
        "physml_md.export",
        "physml_md.cli",
        "lightning",
        "openmm",
    ),
    "units.py": ("physml_md.",),
    "export.py": ("physml_md.training", "physml_md.integrations", "physml_md.md", "physml_md.cli", "lightning"),
    "checkpoint.py": ("physml_md.training", "physml_md.integrations", "physml_md.md", "physml_md.cli", "lightning"),
    # training reaches the engines only through md/ (the MD validation callback)
    "training": ("physml_md.integrations", "physml_md.cli", "openmm", "openmmtorch"),
    "integrations": ("physml_md.training", "physml_md.md", "physml_md.cli", "lightning"),
    "md": ("physml_md.training", "physml_md.cli", "lightning"),
}


def imported_modules(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("part", list(FORBIDDEN))
def test_imports_point_down(part):
    target = PACKAGE / part
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert files
    for path in files:
        for module in imported_modules(path):
            for prefix in FORBIDDEN[part]:
                assert not (module == prefix.rstrip(".") or module.startswith(prefix.rstrip(".") + ".")), (
                    f"{path.relative_to(PACKAGE.parent)} imports {module}, which is above it in the layers"
                )


def test_models_load_without_ase_lightning_or_openmm():
    code = (
        "import sys, physml_md.models; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ase', 'lightning', 'openmm', 'pytorch_lightning'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
