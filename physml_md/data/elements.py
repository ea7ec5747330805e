"""Chemical symbols by atomic number (index 0 is a placeholder), so that models/ need not import ASE."""

from typing import Dict, Iterable, List

CHEMICAL_SYMBOLS: List[str] = (
    ["X"]
    + """
H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb Sr Y Zr
Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt
Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc
Lv Ts Og
""".split()
)

MAX_ATOMIC_NUMBER: int = len(CHEMICAL_SYMBOLS) - 1
ATOMIC_NUMBERS: Dict[str, int] = {symbol: z for z, symbol in enumerate(CHEMICAL_SYMBOLS) if z > 0}


def check_known_elements(numbers: Iterable[int], known: Iterable[int], trained_on: str, where="", other="") -> None:
    """One ValueError naming the elements of ``numbers`` that a model trained on ``known`` (atomic numbers, named
    ``trained_on`` in the message) does not know; ``where`` follows the names ("in the system are"), ``other``
    offers another fix ("leave those atoms out")."""
    unknown = sorted({int(z) for z in numbers} - {int(z) for z in known})
    if unknown:
        names = ", ".join(CHEMICAL_SYMBOLS[z] if 0 < z < len(CHEMICAL_SYMBOLS) else str(z) for z in unknown)
        raise ValueError(
            f"element(s) {' '.join(filter(None, (names, where)))} not known to this model, which was trained on "
            f"{trained_on}: use a model trained on data containing {names}" + (f", or {other}" if other else "")
        )
