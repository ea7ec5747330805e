"""Units: the one pint registry of physml-md and the named factors used at engine boundaries (OpenMM: nm, kJ/mol).

Inside the package every quantity is a float in the internal units: angstrom, eV, e, amu, fs, K. ASE's time unit
is ~10.18 fs: a time handed to an ASE integrator is multiplied by ``ase.units.fs``. A quantity a user types
("0.5 fs", "300 K") is parsed here; a bare number means the internal unit.
"""

from __future__ import annotations

import functools
import numbers
from typing import Union

import pint

ureg = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)  # "25 degC" works

# The internal unit of each kind of quantity, and how to name the kind in an error message.
INTERNAL_UNITS = {
    "length": "angstrom",
    "energy": "eV",
    "time": "fs",
    "temperature": "K",
    "mass": "dalton",
    "charge": "elementary_charge",
    "force": "eV / angstrom",
    "stress": "eV / angstrom ** 3",
    "frequency": "1 / fs",
}

_ARTICLE = {kind: ("an " if kind[0] in "aeiou" else "a ") + kind for kind in INTERNAL_UNITS}

QuantityLike = Union[str, float, int, "pint.Quantity"]


@functools.cache
def _dimensionality(kind: str):
    return ureg.Quantity(1.0, INTERNAL_UNITS[kind]).dimensionality


def parse_quantity(value: QuantityLike, kind: str, name: str = "value") -> float:
    """Return ``value`` as a float in the internal unit of ``kind`` (see ``INTERNAL_UNITS``).

    ``value`` may be a number (taken to be in the internal unit), a string such as ``"0.5 fs"`` or
    ``"5 angstrom"``, or a pint quantity. Molar quantities are taken per particle: ``"96.485 kJ/mol"`` is
    an energy of 1 eV, ``"1 kcal/mol/angstrom"`` a force. ``name`` is used in error messages (for example ``cut_off``).
    """
    if kind not in INTERNAL_UNITS:
        raise ValueError(f"unknown kind of quantity {kind!r}; known kinds: {', '.join(INTERNAL_UNITS)}")
    if isinstance(value, numbers.Real) and not isinstance(value, bool):  # int, float and numpy scalars
        return float(value)
    if isinstance(value, str):
        try:
            quantity = ureg.Quantity(value)
        except (pint.errors.PintError, ValueError, AttributeError, TypeError, SyntaxError) as exc:
            raise ValueError(
                f"{name}: cannot read {value!r} as a quantity ({exc}); write a number and a unit, "
                f"for example '1 {INTERNAL_UNITS[kind]}'"
            ) from None
    elif isinstance(value, pint.Quantity):
        quantity = value
    else:
        raise TypeError(
            f"{name} must be a number or a quantity string such as '1 {INTERNAL_UNITS[kind]}', got {value!r}"
        )
    if not isinstance(quantity, pint.Quantity):  # "5" parses to a plain number
        return float(quantity)
    if quantity.dimensionless and _dimensionality(kind) != quantity.dimensionality:
        return float(quantity.to("dimensionless").magnitude)
    if quantity.dimensionality == _dimensionality(kind) / ureg.mol.dimensionality:
        quantity = quantity / ureg.Quantity(1.0, "avogadro_constant")  # per mole -> per particle (kJ/mol)
    if quantity.dimensionality != _dimensionality(kind):
        found = next((k for k in INTERNAL_UNITS if quantity.dimensionality == _dimensionality(k)), None)
        what = _ARTICLE[found] if found else f"a quantity of dimension {quantity.dimensionality}"
        raise ValueError(f"{value!r} is {what}; {name} needs {_ARTICLE[kind]} (for example '1 {INTERNAL_UNITS[kind]}')")
    return float(quantity.to(INTERNAL_UNITS[kind]).magnitude)


# Named factors for the engine boundaries (multiply a value in the first unit to get the second).
# Exact SI prefixes are written out (pint's conversion leaves them one rounding step off).
ANGSTROM_TO_NM: float = 0.1
NM_TO_ANGSTROM: float = 10.0
EV_TO_KJ_PER_MOL: float = float(
    (ureg.Quantity(1.0, "eV") * ureg.Quantity(1.0, "avogadro_constant")).to("kJ/mol").magnitude
)
KJ_PER_MOL_TO_EV: float = 1.0 / EV_TO_KJ_PER_MOL
# forces: eV/angstrom -> kJ/mol/nm
EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM: float = EV_TO_KJ_PER_MOL / ANGSTROM_TO_NM
PS_TO_FS: float = 1000.0
FS_TO_PS: float = 0.001
# velocities: angstrom/fs -> nm/ps (ANGSTROM_TO_NM / FS_TO_PS, written out exactly)
ANGSTROM_PER_FS_TO_NM_PER_PS: float = 100.0
NS_TO_FS: float = 1e6
DAY_TO_SECONDS: float = 86400.0
# reports print energies in meV (and eV/angstrom in meV/angstrom, e in me: the same prefix)
EV_TO_MEV: float = 1000.0
