from ase.data import chemical_symbols

from physml_md.data.elements import ATOMIC_NUMBERS, CHEMICAL_SYMBOLS, MAX_ATOMIC_NUMBER


def test_symbols_match_ase():
    assert CHEMICAL_SYMBOLS[1:] == chemical_symbols[1:]
    assert MAX_ATOMIC_NUMBER == 118
    assert ATOMIC_NUMBERS["Cu"] == 29 and ATOMIC_NUMBERS["Og"] == 118
