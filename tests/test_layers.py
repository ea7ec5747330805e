"""Imports point down the layers of DESIGN.md, and tests/ mirrors the package."""

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
        "physml_md.cli.main",
    ),
    "data": (
        "physml_md.models",
        "physml_md.training",
        "physml_md.integrations",
        "physml_md.md",
        "physml_md.export",
        "physml_md.cli.main",
        "lightning",
        "openmm",
    ),
    "units.py": ("physml_md.",),
    "export.py": ("physml_md.training", "physml_md.integrations", "physml_md.md", "physml_md.cli.main", "lightning"),
    "export_agreement.py": (
        "physml_md.training",
        "physml_md.integrations",
        "physml_md.md",
        "physml_md.cli.main",
        "lightning",
    ),
    "checkpoint.py": (
        "physml_md.training",
        "physml_md.integrations",
        "physml_md.md",
        "physml_md.cli.main",
        "lightning",
    ),
    # training reaches the engines only through md/ (the MD validation callback)
    "training": ("physml_md.integrations", "physml_md.cli.main", "openmm", "openmmtorch"),
    "integrations": ("physml_md.training", "physml_md.md", "physml_md.cli.main", "lightning"),
    "md": ("physml_md.training", "physml_md.cli.main", "lightning"),
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


TESTS = PACKAGE.parent / "tests"

# Modules tested through the test file of their user instead of one of their own (module -> that file, why).
# Each covering file says so at its top. Keep this short: a module that grows tests of its own gets its file.
TESTED_THROUGH = {
    "data/keys.py": ("tests/data/test_structures.py", "key names and mask_key only; every data test uses them"),
    "md/arrays.py": (
        "tests/validation/test_metrics.py",
        "the input checks and JSON form of md/ results, seen in their users",
    ),
    "md/criterion.py": ("tests/validation/test_suite.py", "a dataclass whose messages the validation report shows"),
}


def mirror_test_file(module: Path) -> Path:
    """tests/data/test_neighbors.py for physml_md/data/neighbors.py."""
    relative = module.relative_to(PACKAGE)
    return TESTS / relative.parent / f"test_{relative.name}"


def test_every_module_has_a_test_file_by_its_name():
    modules = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    assert len(modules) > 40
    missing = []
    for module in modules:
        name = module.relative_to(PACKAGE).as_posix()
        if not mirror_test_file(module).is_file() and name not in TESTED_THROUGH:
            missing.append(f"{name}: no {mirror_test_file(module).relative_to(PACKAGE.parent)}")
    assert not missing, "tests/ mirrors physml_md/; write the test file or add to TESTED_THROUGH:\n" + "\n".join(
        missing
    )


@pytest.mark.parametrize("name", list(TESTED_THROUGH))
def test_tested_through_lists_only_what_it_must(name):
    module = PACKAGE / name
    covering, _ = TESTED_THROUGH[name]
    assert module.is_file(), f"TESTED_THROUGH names {name}, which is not a module of physml_md"
    assert not mirror_test_file(module).is_file(), f"{name} has its own test file now: drop it from TESTED_THROUGH"
    assert (PACKAGE.parent / covering).is_file(), f"{name}: {covering} does not exist"
    assert f"physml_md/{name}" in (PACKAGE.parent / covering).read_text(), f"{covering} does not say it tests {name}"
