"""physml_md.md.frame: a bad Frame is named and rejected before anything is written."""

import dataclasses

import numpy as np
import pytest

from physml_md.md.io.reading import read_trajectory
from physml_md.md.io.writing import TrajectoryWriter
from tests.md.helpers import ethanol_frames, make_frame


@pytest.mark.parametrize(
    "change, message",
    [
        ({"step": 1.5}, "step must be an integer, got 1.5"),
        ({"time_fs": float("nan")}, "time_fs must be finite"),
        ({"cell": np.eye(2)}, r"cell must be a finite \[3, 3\] matrix"),
        ({"forces": np.zeros((2, 3))}, r"forces must have shape \[9, 3\]"),
        ({"positions": None}, r"a frame needs positions"),
    ],
)
def test_a_bad_frame_is_named_and_rejected(tmp_path, change, message):
    rng = np.random.default_rng(12)
    symbols, positions, _ = ethanol_frames(rng)
    path = tmp_path / "run.extxyz"
    with TrajectoryWriter(path, symbols, pbc=False) as writer:
        good = make_frame(positions[0], None, 0.0, 0)
        with pytest.raises(ValueError, match=message):
            writer.write(dataclasses.replace(good, **change))
        writer.write(good)
    assert read_trajectory(path).n_frames == 1
