"""physml_md.units: parsing user quantities, and the named factors against ASE and OpenMM."""

import ase.units
import numpy as np
import openmm.unit as omm
import pytest

from physml_md import units
from physml_md.units import parse_quantity

# pint (0.25) uses CODATA 2018 and OpenMM the exact 2019 SI values of N_A and e, so they agree to rounding.
EXACT = 1e-14
# ASE defaults to CODATA 2014: its eV -> kJ/mol is 96.48533288 against pint's 96.48533212, a relative
# difference of 7.9e-9 measured here. 2e-8 passes that difference and fails anything larger, such as using
# CODATA 2006 (relative 8e-8 from 2018) or a wrong constant.
ASE_CODATA_2014 = 2e-8


@pytest.mark.parametrize(
    "text, kind, expected",
    [
        ("0.5 fs", "time", 0.5),
        ("1 ps", "time", 1000.0),
        ("5 nm", "length", 50.0),
        ("5 angstrom", "length", 5.0),
        ("5 Å", "length", 5.0),
        ("1/ps", "frequency", 0.001),
        ("300 K", "temperature", 300.0),
        ("300 kelvin", "temperature", 300.0),
        ("1 eV", "energy", 1.0),
        ("1 kJ", "energy", ase.units.create_units("2018")["kJ"]),
        ("1 eV/Å", "force", 1.0),
        ("1 GPa", "stress", ase.units.create_units("2018")["GPa"]),
        ("12 amu", "mass", 12.0),
        ("-1 e", "charge", -1.0),
    ],
)
def test_parse_quantity_with_units(text, kind, expected):
    assert parse_quantity(text, kind) == pytest.approx(expected, rel=EXACT, abs=0)


@pytest.mark.parametrize("value", [2.5, 3, "2.5"])
def test_bare_number_is_the_internal_unit(value):
    for kind in units.INTERNAL_UNITS:
        assert parse_quantity(value, kind) == float(value)


def test_pint_quantity_is_accepted():
    assert parse_quantity(units.ureg.Quantity(2.0, "nm"), "length") == pytest.approx(20.0, rel=EXACT)
    assert parse_quantity(units.ureg.Quantity(25.0, "degC"), "temperature") == pytest.approx(298.15, rel=EXACT)


def test_wrong_dimension_names_both_kinds():
    with pytest.raises(ValueError) as info:
        parse_quantity("300 K", "length", name="cut_off")
    assert str(info.value) == "'300 K' is a temperature; cut_off needs a length (for example '1 angstrom')"
    with pytest.raises(ValueError, match=r"^'0.5 fs' is a time; timestep needs an energy"):
        parse_quantity("0.5 fs", "energy", name="timestep")
    with pytest.raises(ValueError, match=r"'5 m/s' is a quantity of dimension \[length\] / \[time\]; v needs a length"):
        parse_quantity("5 m/s", "length", name="v")


@pytest.mark.parametrize("text", ["garbage!!", "5 furlongz", ""])
def test_unreadable_string_is_an_error(text):
    with pytest.raises(ValueError, match=r"^cut_off: cannot read .* as a quantity .*write a number and a unit"):
        parse_quantity(text, "length", name="cut_off")


def test_other_bad_inputs():
    with pytest.raises(TypeError, match="cut_off must be a number"):
        parse_quantity(True, "length", name="cut_off")
    with pytest.raises(TypeError, match="must be a number"):
        parse_quantity([5.0], "length")
    with pytest.raises(ValueError, match="unknown kind of quantity 'lenght'; known kinds: length"):
        parse_quantity("5 nm", "lenght")


def test_celsius_string():
    assert parse_quantity("25 degC", "temperature") == pytest.approx(298.15)


@pytest.mark.parametrize("value", [np.float32(1.5), np.int64(2)])
def test_numpy_scalars(value):
    assert parse_quantity(value, "length") == float(value)


def test_factors_against_ase():
    assert ase.units.mol == ase.units.create_units("2014")["mol"]  # ASE's default is CODATA 2014
    for version, tol in (("2014", ASE_CODATA_2014), ("2018", EXACT)):
        u = ase.units.create_units(version)
        ev_to_kj_per_mol = u["mol"] / u["kJ"]
        assert units.EV_TO_KJ_PER_MOL == pytest.approx(ev_to_kj_per_mol, rel=tol, abs=0), version
        assert units.KJ_PER_MOL_TO_EV == pytest.approx(1.0 / ev_to_kj_per_mol, rel=tol, abs=0), version
        assert units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM == pytest.approx(
            ev_to_kj_per_mol * u["nm"] / u["Ang"], rel=tol, abs=0
        ), version
    # the tolerance is meaningful: CODATA 2014 and 2018 differ by more than EXACT
    u14, u18 = ase.units.create_units("2014"), ase.units.create_units("2018")
    assert abs((u14["mol"] / u14["kJ"]) / (u18["mol"] / u18["kJ"]) - 1) > 1e-9
    assert units.ANGSTROM_TO_NM == pytest.approx(ase.units.Ang / ase.units.nm, rel=EXACT, abs=0)
    assert units.NM_TO_ANGSTROM == pytest.approx(ase.units.nm / ase.units.Ang, rel=EXACT, abs=0)
    assert units.PS_TO_FS == pytest.approx(1000.0, rel=EXACT, abs=0)
    assert units.FS_TO_PS == pytest.approx(1e-3, rel=EXACT, abs=0)


def test_factors_against_openmm():
    ev_per_particle = 1.0 * omm.elementary_charge * omm.volt * omm.AVOGADRO_CONSTANT_NA
    assert units.EV_TO_KJ_PER_MOL == pytest.approx(ev_per_particle.value_in_unit(omm.kilojoule_per_mole), rel=EXACT)
    assert units.KJ_PER_MOL_TO_EV == pytest.approx(
        1.0 / ev_per_particle.value_in_unit(omm.kilojoule_per_mole), rel=EXACT
    )
    force = ev_per_particle / omm.angstrom
    assert units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM == pytest.approx(
        force.value_in_unit(omm.kilojoule_per_mole / omm.nanometer), rel=EXACT
    )
    assert units.ANGSTROM_TO_NM == pytest.approx((1.0 * omm.angstrom).value_in_unit(omm.nanometer), rel=EXACT)
    assert units.NM_TO_ANGSTROM == pytest.approx((1.0 * omm.nanometer).value_in_unit(omm.angstrom), rel=EXACT)
    assert units.PS_TO_FS == pytest.approx((1.0 * omm.picosecond).value_in_unit(omm.femtosecond), rel=EXACT)
    # the round trip at the engine boundary
    assert units.EV_TO_KJ_PER_MOL * units.KJ_PER_MOL_TO_EV == pytest.approx(1.0, rel=EXACT)


def test_molar_quantities_are_per_particle():
    """OpenMM users type kJ/mol and kcal/mol: they are energies (and forces) per particle."""
    kj_per_mol_in_ev = ase.units.kJ / ase.units.mol
    assert parse_quantity("1 kJ/mol", "energy") == pytest.approx(kj_per_mol_in_ev, rel=2e-8)
    assert parse_quantity("1 kcal/mol/angstrom", "force") == pytest.approx(ase.units.kcal / ase.units.mol, rel=2e-8)
    assert parse_quantity("1 kJ/mol/nm", "force") == pytest.approx(kj_per_mol_in_ev / 10, rel=2e-8)
    with pytest.raises(ValueError, match="needs a length"):
        parse_quantity("1 kJ/mol", "length", "cut_off")


def test_time_velocity_and_report_factors():
    """The factors the MD engines and reports use, against OpenMM's and pint's unit systems."""
    velocity = 1.0 * omm.angstrom / omm.femtosecond
    assert units.ANGSTROM_PER_FS_TO_NM_PER_PS == pytest.approx(
        velocity.value_in_unit(omm.nanometer / omm.picosecond), rel=EXACT, abs=0
    )
    assert units.ANGSTROM_PER_FS_TO_NM_PER_PS == pytest.approx(units.ANGSTROM_TO_NM / units.FS_TO_PS, rel=EXACT)
    assert units.NS_TO_FS == pytest.approx((1.0 * omm.nanosecond).value_in_unit(omm.femtosecond), rel=EXACT, abs=0)
    assert units.DAY_TO_SECONDS == units.ureg.Quantity(1.0, "day").to("s").magnitude
    assert units.EV_TO_MEV == units.ureg.Quantity(1.0, "eV").to("meV").magnitude
    assert units.PS_TO_FS * units.FS_TO_PS == pytest.approx(1.0, rel=EXACT)
