"""physml_md/config/md.py: the MD settings, defined once and shared by run_md, validate, [training.md_validation],
[learning] and the md / validate command-line options."""

import argparse

import pytest

from physml_md.cli.main import _add_md_options
from physml_md.config.learning import LearningConfig
from physml_md.config.load import config_from_dict
from physml_md.config.md import DEFAULT_MAX_FORCE, DEFAULT_MIN_DISTANCE, MDSettings, md_settings, settings_from_args
from physml_md.config.training import MDValidationConfig
from physml_md.config.types import LOSS_COMPONENTS, ConfigError
from physml_md.md import blowups
from physml_md.training.losses import COMPONENTS

LEARNING = {"structures": "start.xyz", "label": {"calculator": "ase.calculators.emt.EMT"}}


def test_units_defaults_and_options_on_top_of_a_base():
    settings = md_settings(temperature="25 degC", timestep="0.001 ps", friction="2 / ps", min_distance="0.06 nm")
    assert settings.temperature == pytest.approx(298.15)
    assert settings.timestep == pytest.approx(1.0) and settings.friction == pytest.approx(0.002)
    assert settings.min_distance == pytest.approx(0.6) and settings.max_force == DEFAULT_MAX_FORCE
    assert (md_settings().timestep, md_settings().temperature, md_settings().friction) == (0.5, 300.0, 0.001)
    on_top = md_settings(settings, engine="openmm", seed=None)  # None keeps the base's value
    assert (on_top.engine, on_top.seed, on_top.temperature) == ("openmm", 0, settings.temperature)


def test_sections_that_extend_it_give_only_the_md_keys():
    section = MDValidationConfig(steps=5, every_n_epochs=2, seed=3)
    settings = md_settings(section)
    assert type(settings) is MDSettings and (settings.ensemble, settings.seed) == ("nve", 3)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"engine": "lammps"}, "engine must be one of 'ase', 'openmm', got 'lammps'"),
        ({"timestep": "1 angstrom"}, "timestep needs a time"),
        ({"timestep": 0.0}, "timestep must be > 0"),
        ({"report_every": 0}, "report_every must be >= 1"),
        ({"tempreature": 300}, "unknown key 'tempreature'; did you mean 'temperature'"),
        ({"max_force": "-1 eV/angstrom"}, "max_force must be a positive force"),
    ],
)
def test_bad_settings_are_one_clear_error(options, match):
    with pytest.raises(ConfigError, match=match):
        md_settings(**options)


def test_md_validation_and_learning_take_every_md_key():
    raw = {
        "data": {"source": "x.xyz"},
        "training": {"seed": 7, "md_validation": {"friction": "5 / ps", "engine": "openmm", "backend": "pythonforce"}},
        "learning": {**LEARNING, "ensemble": "nve", "min_distance": 0.4, "temperature": "500 K"},
    }
    config = config_from_dict(raw, require_files=False)
    md = config.training.md_validation
    assert (md.friction, md.engine, md.backend, md.seed) == (pytest.approx(0.005), "openmm", "pythonforce", 7)
    assert isinstance(config.learning, LearningConfig)
    assert (config.learning.ensemble, config.learning.min_distance, config.learning.temperature) == ("nve", 0.4, 500.0)
    assert (
        config_from_dict(
            {**raw, "training": {"md_validation": {"seed": 1}}}, require_files=False
        ).training.md_validation.seed
        == 1
    )


def test_learning_is_validated_with_the_configuration():
    """[learning] was validated in a second pass after the rest; now one pass names its keys like any other."""
    with pytest.raises(ConfigError, match="did you mean 'learning.rounds'"):
        config_from_dict({"learning": {**LEARNING, "roudns": 3}}, require_files=False)
    with pytest.raises(ConfigError, match="learning.label.calculator is required"):
        config_from_dict({"learning": {**LEARNING, "label": {}}}, require_files=False)


def test_defaults_and_loss_names_are_defined_once():
    assert (blowups.DEFAULT_MIN_DISTANCE, blowups.DEFAULT_MAX_FORCE) == (DEFAULT_MIN_DISTANCE, DEFAULT_MAX_FORCE)
    assert tuple(COMPONENTS) == LOSS_COMPONENTS


def test_command_line_options_come_from_the_settings():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ensemble", default="nvt")
    parser.add_argument("--friction", default="5/ps")
    _add_md_options(parser)
    flags = {action.dest for action in parser._actions}
    assert set(MDSettings.model_fields) <= flags
    help_text = parser.format_help()
    assert MDSettings.model_fields["periodic"].description.split(" (")[0] in " ".join(help_text.split())
    args = parser.parse_args(["--engine", "openmm", "--temperature", "10 K", "--no-periodic", "--report-every", "5"])
    settings = settings_from_args(args)
    assert (settings.engine, settings.temperature, settings.periodic, settings.report_every) == ("openmm", 10, False, 5)
    assert settings.friction == pytest.approx(0.005) and settings.timestep == 0.5  # the command's own, the default
    with pytest.raises(SystemExit):
        parser.parse_args(["--engine", "lammps"])
