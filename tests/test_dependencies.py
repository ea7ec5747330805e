"""Every third-party package that physml_md/ imports is declared in pyproject.toml.

An import at module level (run whenever the module is imported) needs a core dependency; an import inside a
function, or guarded by ``try: ... except ImportError`` (an optional engine or tool, loaded on first use, whose
absence is said kindly) needs a core dependency or an extra. The import name is
mapped to the distribution that installed its files (``yaml`` -> PyYAML, ``metatensor.torch`` -> metatensor-torch);
a package not installed here is taken to be spelled as it is imported.
"""

import ast
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

try:
    import tomllib
except ModuleNotFoundError:  # python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "physml_md"
FIRST_PARTY = "physml_md"
# Modules loaded only by a third-party program that brings its package: the import may be at module level there,
# and the extra that declares the package is named.
PLUGIN_MODULES = {
    "physml_md/integrations/openmmml.py": "openmmml",  # openmm-ml's entry point loads it
    # imported only inside export_potential(format="metatomic") and `physml-md export --format metatomic`; its
    # TorchScript module needs metatomic's types at module level (they are resolved from the module's globals)
    "physml_md/export/metatomic.py": "metatomic",
}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


def declared() -> Tuple[Set[str], Dict[str, Set[str]]]:
    """The normalised distribution names of the core dependencies and of each extra (self-references left out)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    own = _normalise(project["name"])
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {
        extra: {_requirement_name(r) for r in requirements} - {own}
        for extra, requirements in project.get("optional-dependencies", {}).items()
    }
    return core, extras


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(c, ast.Name) and c.id in ("ImportError", "ModuleNotFoundError") for c in caught)


def third_party_imports(path: Path) -> Iterator[Tuple[str, int, bool]]:
    """``(top-level name, line, optional)`` of each absolute import of a package outside the standard library and
    physml_md; optional: inside a function, or in a ``try`` whose ``except`` catches ImportError."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(inner) for inner in ast.walk(node) if inner is not node)
        elif isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            in_function.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top != FIRST_PARTY:
                yield name, node.lineno, id(node) in in_function


def module_distributions() -> Dict[str, List[str]]:
    """Installed distributions by the package (``yaml``) and sub-package (``metatensor.torch``) they hold files of
    (several may share a top-level name: metatensor-core and metatensor-torch), read from their RECORD files."""
    found: Dict[str, Set[str]] = {}
    for distribution in metadata.distributions():
        record = distribution.read_text("RECORD") or ""
        names = set()
        for line in record.splitlines():
            parts = line.partition(",")[0].split("/")
            if parts[0].endswith((".dist-info", ".egg-info", ".data")) or parts[0] in ("..", ""):
                continue
            names.add(parts[0].removesuffix(".py"))
            if len(parts) > 2 or (len(parts) == 2 and parts[1].endswith(".py")):
                names.add(f"{parts[0]}.{parts[1].removesuffix('.py')}")
        owner = distribution.metadata["Name"]
        for name in names:
            found.setdefault(name, set()).add(owner)
    for name, owners in metadata.packages_distributions().items():  # editable installs, top_level.txt
        found.setdefault(name, set()).update(owners)
    return {name: sorted(owners) for name, owners in found.items()}


def distributions(module: str, mapping: Dict[str, List[str]]) -> Set[str]:
    """The normalised names of the distributions that provide ``module`` (its sub-package when one provides that,
    else its top-level package); a package not installed here is taken to be spelled as it is imported."""
    top, _, rest = module.partition(".")
    sub = f"{top}.{rest.split('.')[0]}" if rest else None
    names = mapping.get(sub) or mapping.get(top) or [top]
    return {_normalise(d) for d in names}


def undeclared_imports() -> List[str]:
    """One line per import that pyproject.toml does not cover: where, what, and which list it belongs in."""
    core, extras = declared()
    in_any_extra = set().union(*extras.values())
    mapping = module_distributions()
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        for module, line, in_function in third_party_imports(path):
            name, names = module.split(".")[0], distributions(module, mapping)
            where = f"{relative}:{line} imports {name} ({', '.join(sorted(names))})"
            if names & core:
                continue
            plugin_extra = PLUGIN_MODULES.get(relative)
            if in_function or plugin_extra is not None:
                if names & (extras.get(plugin_extra, set()) if plugin_extra else in_any_extra):
                    continue
                problems.append(f"{where}: declare it in [project.dependencies] or an extra")
            else:
                problems.append(f"{where} at module level: declare it in [project.dependencies]")
    return problems


def test_every_third_party_import_is_declared():
    problems = undeclared_imports()
    assert not problems, "pyproject.toml misses packages physml_md imports:\n" + "\n".join(problems)


def test_the_scan_sees_module_level_function_level_and_nested_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import os\nimport numpy as np\nfrom yaml import safe_load\nfrom . import sibling\nimport physml_md.units\n"
        "def f():\n    import tqdm\n    class C:\n        def g(self):\n            from scipy import stats\n"
        "try:\n    import metatomic.torch\nexcept ImportError:\n    pass\n"
        "try:\n    import pint\nexcept ValueError:\n    pass\n"
    )
    found = sorted(third_party_imports(source))
    assert found == [
        ("metatomic.torch", 12, True),
        ("numpy", 2, False),
        ("pint", 16, False),
        ("scipy", 10, True),
        ("tqdm", 7, True),
        ("yaml", 3, False),
    ]


def test_import_names_map_to_distribution_names():
    mapping = module_distributions()
    assert distributions("yaml", mapping) == {"pyyaml"}
    assert distributions("vesin_torch", mapping) == {"vesin-torch"}
    assert distributions("lightning.pytorch.loggers", mapping) == {"lightning"}
    assert distributions("not_installed_here.sub", mapping) == {"not-installed-here"}


def test_the_license_file_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert project["license"] == {"text": "MIT"}
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 physml-md developers" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
