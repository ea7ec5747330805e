"""physml_md.models.zbl: the ZBL prior on a dimer against the published formula."""

import numpy as np
import pytest
from ase import Atoms

from tests.helpers import CUTOFF, inputs, small_model


def test_zbl_adds_the_screened_coulomb_pair_energy():
    """Independent check of the ZBL prior on a dimer against the published formula."""
    with_zbl = small_model(features=16, n_interactions=2, zbl=True)
    without = small_model(features=16, n_interactions=2, zbl=False)
    r = 1.0
    dimer = Atoms("CuAl", positions=[[0, 0, 0], [r, 0, 0]])
    difference = float(with_zbl(inputs(dimer))["energy"][0]) - float(without(inputs(dimer))["energy"][0])
    z1, z2 = 29, 13
    a = 0.8854 * 0.529177210903 / (z1**0.23 + z2**0.23)
    x = r / a
    phi = (
        0.18175 * np.exp(-3.1998 * x)
        + 0.50986 * np.exp(-0.94229 * x)
        + 0.28022 * np.exp(-0.4029 * x)
        + 0.02817 * np.exp(-0.20162 * x)
    )
    coulomb = 14.399645 * z1 * z2 / r
    fcut = 0.5 * (np.cos(np.pi * r / CUTOFF) + 1)
    assert difference == pytest.approx(coulomb * phi * fcut, rel=1e-7)  # 1e-7: k_e above is rounded to 7 digits
    assert difference > 10.0  # strongly repulsive at 1 angstrom
