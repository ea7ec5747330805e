"""Units are converted only through physml_md/units.py (and inside the two engine adapters), never by bare literals.

The scan reads the source of physml_md/ (as tests/test_layers.py does for imports) and names file:line of each
number that converts a unit in place: a conversion magnitude (1000, 1e-3, 1e6, ...) multiplying or dividing, an
ambiguous one (10, 0.1, 100, 0.01) multiplying or dividing something named like a length, time or velocity, a
physical constant written out (96.485 kJ/mol per eV, ...), a factor beside a unit name in a tuple
(``("meV/atom", 1e3)``), or a module constant named ``A_TO_B`` / ``A_PER_B`` given a number outside units.py.
"""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "physml_md"
# where conversions live: the named factors, and the two engine boundaries (ASE, OpenMM)
ALLOWED = ("units.py", "integrations/ase.py", "integrations/openmm*.py")

SI_PREFIX_FACTORS = {1e3, 1e-3, 1e6, 1e-6, 1e9, 1e-9, 1e12, 1e-12, 1e15, 1e-15}
# factors of ten that are as often plain numbers as conversions: flagged only beside a unit-like name
AMBIGUOUS_FACTORS = {10.0, 0.1, 100.0, 0.01}
UNIT_LIKE = re.compile(r"(nm|angstrom|ang|_a\b|fs|ps|ns|time|position|velocit|box|cell|length)", re.IGNORECASE)
# constants that only ever appear to convert units (eV <-> kJ/mol, kcal/mol, hartree; N_A; e in coulomb), to the
# digits written. Physical constants used in a formula in the package's units (the Bohr radius in angstrom of
# models/zbl.py, k_B in eV/K, e^2/(4 pi eps0) in eV*angstrom) are not conversions and are not listed.
CONSTANTS = (96.485, 0.0103642, 4.184, 0.239006, 23.0605, 0.0433641, 27.2114, 0.0367493, 6.02214e23, 1.602176e-19)
UNIT_STRING = re.compile(r"^m?(eV|e|angstrom|Å)\b|^me\b|meV|kJ|kcal|nm|ps\b|fs\b")
FACTOR_NAME = re.compile(r"^_?[A-Z][A-Z0-9]*_(TO|PER)_[A-Z0-9_]+$")


def _number(node) -> float | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _number(node.operand)
        return None if value is None else -value
    return None


def _is_constant(value: float) -> bool:
    return any(abs(abs(value) / c - 1.0) < 1e-4 for c in CONSTANTS)


def bare_conversions(source: str):
    """(line, text) of each bare conversion literal in ``source``."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        value = _number(node)
        if isinstance(node, ast.Constant) and value is not None and _is_constant(value):
            found.append((node.lineno, f"{node.value!r} (a physical constant written out)"))
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, (ast.Mult, ast.Div)):
            operands = (node.left, node.right) if isinstance(node, ast.BinOp) else (node.target, node.value)
            for this, other in (operands, operands[::-1]):
                value = _number(this)
                if value is None:
                    continue
                beside = ast.unparse(other)
                if abs(value) in SI_PREFIX_FACTORS or (abs(value) in AMBIGUOUS_FACTORS and UNIT_LIKE.search(beside)):
                    found.append((node.lineno, ast.unparse(node)))
        if isinstance(node, ast.Tuple):
            strings = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            numbers = [_number(e) for e in node.elts]
            if any(UNIT_STRING.search(s) for s in strings) and any(
                n is not None and abs(n) in SI_PREFIX_FACTORS for n in numbers
            ):
                found.append((node.lineno, ast.unparse(node)))
    for node in tree.body:  # module constants named as factors
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        value = getattr(node, "value", None)
        for target in targets:
            if isinstance(target, ast.Name) and FACTOR_NAME.match(target.id) and _number(value) is not None:
                found.append((node.lineno, f"{target.id} = {ast.unparse(value)} (a named factor outside units.py)"))
    return sorted(set(found))


def _allowed(path: Path) -> bool:
    relative = path.relative_to(PACKAGE)
    return any(relative.match(pattern) for pattern in ALLOWED)


# Files still converting with literals, each with the number of offences it had when this test was written; they
# were being edited by others at the time (issue 14). The count may only go down, and an entry whose file is
# clean must be removed: the list can only shrink.
PENDING: dict = {}


def _offences():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if not _allowed(path):
            relative = path.relative_to(PACKAGE).as_posix()
            found[relative] = [
                f"physml_md/{relative}:{line}: {text}" for line, text in bare_conversions(path.read_text())
            ]
    return found


def test_no_bare_conversion_literals_outside_units():
    found = _offences()
    offences = [o for relative, listed in found.items() if relative not in PENDING for o in listed]
    assert not offences, "convert units with the named factors of physml_md/units.py:\n" + "\n".join(offences)
    for relative, allowed in PENDING.items():
        count = len(found.get(relative, []))
        assert count <= allowed, f"new bare conversions in physml_md/{relative}:\n" + "\n".join(found[relative])
        assert count > 0, f"physml_md/{relative} converts through units.py now: remove it from PENDING"


def test_allowed_files_exist():
    """The exemptions name real files (a renamed adapter must not silently widen or void them)."""
    for pattern in ALLOWED:
        assert list(PACKAGE.glob(pattern)), pattern


@pytest.mark.parametrize(
    "source",
    [
        "t_ps = time_fs / 1000.0",
        "t_ps = time_fs * 1e-3",
        "rate = friction_per_fs * 1000.0 / unit.picosecond",
        "mev = 1000 * energy_errors[-1]",
        "x *= 0.001",
        "v = velocities * units.fs * 100.0",
        "nm = positions * 0.1",
        "box = cell / 10",
        "e = energy_kj / 96.485",
        "e_kcal = e_ev * 23.0605",
        "n = 6.02214076e23",
        "table = {'per_atom_energy': ('meV/atom', 1e3)}",
        "MEV_PER_EV: float = 1000.0",
        "FS_PER_NS = 1e6",
    ],
)
def test_scan_finds_conversions(source):
    assert bare_conversions(source), source


@pytest.mark.parametrize(
    "source",
    [
        "max_lr = 10.0 * lr",
        "pad = 0.05 * (hi - lo)",
        "y = 1.0 - x3 * (10.0 - 15.0 * x)",
        "ok = abs(total - 1.0) > 1e-6",
        "text = f'{value:.0f}' if abs(value) >= 1000 else ''",
        "DEFAULT_MAX_FORCE: float = 100.0",
        "split = (0.8, 0.1, 0.1)",
        "t_ps = time_fs * FS_TO_PS",
        "small = 1e-10 * scale",
        "_ZBL_LENGTH = 0.8854 * 0.529177210903",
    ],
)
def test_scan_leaves_plain_numbers(source):
    assert bare_conversions(source) == [], source
