"""Bad input through the ASE calculator (PhysMLCalculator): the model's own ValueError sentence, damaged files named."""

import re

import pytest

from physml_md.export import ExportFormatError
from physml_md.export.checkpoint import CheckpointError
from physml_md.integrations.ase import PhysMLCalculator
from tests.bad_input.cases import CASES, assert_plain_sentence, truncated


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
@pytest.mark.parametrize("case", sorted(set(CASES) - {"unknown element"}))  # the calculator checks elements itself
def test_the_ase_calculator_raises_the_models_own_value_error(files, case, suffix):
    make, start, fix = CASES[case]
    atoms = make()
    atoms.calc = PhysMLCalculator(files[suffix])
    with pytest.raises(ValueError) as error:
        atoms.get_potential_energy()
    assert type(error.value) is ValueError
    assert_plain_sentence(str(error.value), start, fix)


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_an_unknown_element_is_named_by_the_calculator(files, suffix):
    make, _, _ = CASES["unknown element"]
    atoms = make()
    atoms.calc = PhysMLCalculator(files[suffix])
    with pytest.raises(ValueError) as error:
        atoms.get_potential_energy()
    message = str(error.value)
    assert re.search(r"\bN\b", message) and "Traceback" not in message and "\n" not in message, message
    assert "H, C, O, Cu" in message or "['H', 'C', 'O', 'Cu']" in message, message


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.999], ids=["start", "half", "last_bytes"])
def test_a_truncated_checkpoint_is_named_as_such(good_checkpoint, tmp_path, fraction):
    path = truncated(good_checkpoint, tmp_path / "cut.ckpt", fraction)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + r".*damaged or truncated.*copy it again"):
        PhysMLCalculator(path)


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_a_truncated_export_is_named_as_such(files, tmp_path, suffix):
    path = truncated(files[suffix], tmp_path / f"cut{suffix}", 0.5)
    with pytest.raises(ExportFormatError, match=r"damaged or truncated"):
        PhysMLCalculator(path)
