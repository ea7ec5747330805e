"""physml_md/config/learning.py: the [learning] table, validated once, with units."""

import pytest

from physml_md.config.learning import LearningConfig
from physml_md.config.types import ConfigError, validate

MINIMAL = {"structures": "start.xyz", "label": {"calculator": "ase.calculators.emt.EMT"}}


def test_defaults_and_units():
    learning = validate(
        LearningConfig, {**MINIMAL, "md_time": "2 ps", "uncertainty_threshold": "2.306 kcal/mol/angstrom"}
    )
    assert learning.md_time == pytest.approx(2000.0)
    assert learning.uncertainty_threshold == pytest.approx(0.1, rel=1e-3)
    assert learning.rounds == 5 and learning.restart == "previous" and learning.label.threads == 1


@pytest.mark.parametrize(
    "change, match",
    [
        ({"roudns": 3}, "did you mean 'learning.rounds'"),
        ({"restart": "warm"}, "restart"),
        ({"uncertainty_threshold": "-0.1 eV/angstrom"}, "uncertainty_threshold"),
        ({"label": {}}, "label.calculator"),
        ({"max_new_frames": 0}, "max_new_frames"),
    ],
)
def test_bad_values_name_their_key(change, match):
    with pytest.raises(ConfigError, match=match):
        validate(LearningConfig, {**MINIMAL, **change}, "learning")
