"""The layout of DESIGN.md (docs/design.md), held: one folder per concern, imports pointing down the layers, no
import circle, few imports inside functions, small folders and functions, one name per module, and tests/
mirroring the package."""

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "physml_md"
TESTS = PACKAGE.parent / "tests"

# bottom to top: a folder imports only folders before it (and the modules at the package root)
LAYERS = ("data", "models", "export", "config", "integrations", "md", "validation", "training", "learning", "cli")
ROOT_MODULES = ("units", "atomic_write", "threads", "_version")
# third-party packages a layer must not import (the integrations read exported files; models stay pure torch)
FORBIDDEN_LIBRARIES = {
    "data": ("lightning", "openmm"),
    "models": ("lightning", "pytorch_lightning", "ase", "openmm", "openmmtorch"),
    "export": ("lightning", "openmm"),
    "config": ("openmm",),  # [trainer] is checked against Lightning's Trainer
    "integrations": ("lightning",),
    "md": ("lightning",),
    "validation": ("lightning",),
}
MAX_INNER_IMPORTS = 15  # imports of our own modules inside functions (only to defer heavy optional dependencies)
MAX_MODULES_PER_FOLDER = 10  # not counting __init__.py
MAX_ROOT_MODULES = 6
MAX_FUNCTION_LINES = 100
MAX_LONG_FUNCTIONS = 10  # functions over LONG_FUNCTION lines
LONG_FUNCTION = 60
MAX_PACKAGE_LINES = 15_000


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> str | None:
    """'physml_md.md.io.writing' -> 'md'; a root module -> None."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def imports(path: Path):
    """(module imported, inside a function?) for every import of the file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]

    def visit(node, inside):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, inside
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package[: len(package) - child.level + 1] + ([base] if base else []))
                for alias in child.names:  # `from physml_md.md import runner` imports physml_md.md.runner
                    candidate = f"{base}.{alias.name}"
                    is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").is_file()
                    yield (candidate if is_module else base), inside
            deeper = inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from visit(child, deeper)

    yield from visit(tree, False)


def own_imports(path: Path):
    return [(m, inside) for m, inside in imports(path) if m == "physml_md" or m.startswith("physml_md.")]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    here = layer_of(module_name(path))
    for module, _ in own_imports(path):
        there = layer_of(module)
        if path == PACKAGE / "__init__.py" or (here is None and there is None):
            continue  # the package's lazy public names; root modules among themselves
        assert here is not None, f"{path.relative_to(PACKAGE.parent)} (package root) imports {module}"
        assert there is None or LAYERS.index(there) <= LAYERS.index(here), (
            f"{path.relative_to(PACKAGE.parent)} imports {module}, above it in the layers ({' < '.join(LAYERS)})"
        )
    for library in FORBIDDEN_LIBRARIES.get(here, ()):
        for module, _ in imports(path):
            assert module.split(".")[0] != library, f"{path.relative_to(PACKAGE.parent)} imports {library}"


def test_no_import_circle():
    graph = {module_name(p): {m for m, _ in own_imports(p) if m != module_name(p)} for p in modules()}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == "open":
                circle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_few_imports_inside_functions():
    inner = [f"{p.relative_to(PACKAGE.parent)}: {m}" for p in modules() for m, inside in own_imports(p) if inside]
    assert len(inner) <= MAX_INNER_IMPORTS, f"{len(inner)} imports of our modules inside functions:\n" + "\n".join(
        inner
    )


def test_folders_are_small():
    counts = Counter(p.parent for p in modules() if p.name != "__init__.py")
    crowded = {str(d.relative_to(PACKAGE.parent)): n for d, n in counts.items() if n > MAX_MODULES_PER_FOLDER}
    assert not crowded, f"folders with more than {MAX_MODULES_PER_FOLDER} modules: {crowded}"
    assert counts[PACKAGE] <= MAX_ROOT_MODULES
    assert {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"} == set(ROOT_MODULES)
    assert {d.name for d in PACKAGE.iterdir() if d.is_dir() and d.name != "__pycache__"} == set(LAYERS)


def test_no_module_name_twice():
    names = Counter(p.stem for p in modules() if p.name != "__init__.py")
    assert not [n for n, k in names.items() if k > 1], sorted(n for n, k in names.items() if k > 1)


def test_functions_are_short():
    lengths = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(PACKAGE)}:{node.name}"))
    too_long = sorted(x for x in lengths if x[0] > MAX_FUNCTION_LINES)
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"
    long = sorted(x for x in lengths if x[0] > LONG_FUNCTION)
    assert len(long) <= MAX_LONG_FUNCTIONS, f"{len(long)} functions over {LONG_FUNCTION} lines: {long}"


def test_package_size():
    lines = sum(len(p.read_text().splitlines()) for p in modules())
    assert lines <= MAX_PACKAGE_LINES, f"physml_md/ has {lines} lines (at most {MAX_PACKAGE_LINES})"


def test_models_load_without_ase_lightning_or_openmm():
    code = (
        "import sys, physml_md.models; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ase', 'lightning', 'openmm', 'pytorch_lightning'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_command_line_answers_without_torch():
    code = "import sys, physml_md.cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# Modules tested through the test file of their user instead of one of their own (module -> that file, why).
# Each covering file says so at its top. Keep this short: a module that grows tests of its own gets its file.
TESTED_THROUGH = {
    "data/keys.py": ("tests/data/test_structures.py", "key names and mask_key only; every data test uses them"),
    "md/arrays.py": ("tests/validation/test_metrics.py", "input checks and JSON form of md/ results, seen in users"),
    "_version.py": ("tests/test_changelog.py", "one string, checked against the CHANGELOG's newest entry"),
    "cli/commands.py": ("tests/cli/test_main.py", "the command handlers, run through the parser as users run them"),
    "export/metadata.py": ("tests/export/test_save.py", "the document is written by export_potential, read back here"),
    "export/loading.py": ("tests/export/test_save.py", "every export test loads the file it wrote"),
}


def mirror_test_file(module: Path) -> Path:
    """tests/data/test_neighbors.py for physml_md/data/neighbors.py."""
    relative = module.relative_to(PACKAGE)
    return TESTS / relative.parent / f"test_{relative.name}"


def test_every_module_has_a_test_file_by_its_name():
    modules_ = [p for p in modules() if p.name != "__init__.py"]
    assert len(modules_) > 40
    missing = []
    for module in modules_:
        name = module.relative_to(PACKAGE).as_posix()
        if not mirror_test_file(module).is_file() and name not in TESTED_THROUGH:
            missing.append(f"{name}: no {mirror_test_file(module).relative_to(PACKAGE.parent)}")
    assert not missing, "tests/ mirrors physml_md/; write the test file or add to TESTED_THROUGH:\n" + "\n".join(
        missing
    )


def test_every_test_folder_mirrors_a_package_folder():
    for folder in TESTS.rglob("test_*.py"):
        relative = folder.parent.relative_to(TESTS)
        if relative.parts and relative.parts[0] not in ("bad_input",):
            assert (PACKAGE / relative).is_dir(), f"tests/{relative} has no physml_md/{relative} to mirror"


@pytest.mark.parametrize("name", list(TESTED_THROUGH))
def test_tested_through_lists_only_what_it_must(name):
    module = PACKAGE / name
    covering, _ = TESTED_THROUGH[name]
    assert module.is_file(), f"TESTED_THROUGH names {name}, which is not a module of physml_md"
    assert not mirror_test_file(module).is_file(), f"{name} has its own test file now: drop it from TESTED_THROUGH"
    assert (PACKAGE.parent / covering).is_file(), f"{name}: {covering} does not exist"
    assert f"physml_md/{name}" in (PACKAGE.parent / covering).read_text(), f"{covering} does not say it tests {name}"
