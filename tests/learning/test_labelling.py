"""physml_md/learning/labelling.py: frames labelled by an ASE calculator named by its import path."""

import ctypes

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.emt import EMT

from physml_md.data.structures import LabelKeys, atoms_to_dict
from physml_md.learning.labelling import LabellingError, calculator_class, label_frames, openmp_threads
from tests.helpers import rattled_cu


def test_labels_are_the_calculators_numbers_and_training_reads_them():
    frames = [rattled_cu(seed) for seed in range(2)]
    frames[0].info["step"] = 40
    labelled = label_frames(frames, "ase.calculators.emt.EMT")
    for original, frame in zip(frames, labelled):
        reference = original.copy()
        reference.calc = EMT()
        data = atoms_to_dict(frame, LabelKeys())
        assert float(data["energy"][0]) == pytest.approx(reference.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(data["forces"].numpy(), reference.get_forces(), atol=1e-12)
        assert bool(data["stress_mask"][0])  # periodic in three directions: stress too
    assert labelled[0].info["step"] == 40 and frames[0].calc is None  # the input is left as it was


def test_other_label_names_go_where_the_data_set_reads_them():
    keys = LabelKeys(energy="REF_energy", forces="REF_forces", stress=None)
    (frame,) = label_frames([molecule("CH4")], "ase.calculators.emt.EMT", keys=keys)
    data = atoms_to_dict(frame, keys)
    reference = molecule("CH4")
    reference.calc = EMT()
    assert float(data["energy"][0]) == pytest.approx(reference.get_potential_energy())
    assert "stress" not in frame.info


class NeedsALicence:
    def __init__(self, licence):
        raise RuntimeError(f"licence {licence}")


def test_bad_calculators_are_one_sentence():
    with pytest.raises(LabellingError, match="not an import path"):
        calculator_class("EMT")
    with pytest.raises(LabellingError, match="has no NotThere"):
        calculator_class("ase.calculators.emt.NotThere")
    with pytest.raises(LabellingError, match="could not be made"):
        label_frames([molecule("CH4")], f"{__name__}.NeedsALicence", {"licence": "expired"})


def test_openmp_threads_are_restored():
    try:
        runtime = ctypes.CDLL("libgomp.so.1")
    except OSError:
        pytest.skip("no libgomp here")
    before = runtime.omp_get_max_threads()
    with openmp_threads(1):
        assert runtime.omp_get_max_threads() == 1
    assert runtime.omp_get_max_threads() == before


class NaNForces(EMT):
    """EMT whose forces on atom 3 are NaN (as a reference code that lost an atom's gradient would give)."""

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["forces"] = self.results["forces"].copy()
        self.results["forces"][3] = np.nan


class InfiniteEnergy(EMT):
    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["energy"] = self.results["free_energy"] = np.inf


def test_labels_that_are_not_numbers_are_an_error_naming_frame_label_and_atoms():
    """Before: NaN forces were stored, and read back as a missing label (the frame trained on its energy alone)."""
    frames = [rattled_cu(seed) for seed in range(2)]
    frames[1].info["step"] = 70
    with pytest.raises(LabellingError, match=r"NaNForces gave non-finite forces on frame 0: atom 3 \(nan\); nothing"):
        label_frames(frames, f"{__name__}.NaNForces")
    with pytest.raises(LabellingError, match=r"gave non-finite energy on frame 0 \(MD step 70\): inf;"):
        label_frames(frames[1:] + frames[:1], f"{__name__}.InfiniteEnergy")
