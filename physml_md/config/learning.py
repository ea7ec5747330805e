"""``[learning]``: the active-learning loop of ``physml-md learn`` (``physml_md.learning.loop``).

The file that holds it is a training configuration (``[model]``, ``[data]``, ``[training]`` with ``committee``
of 2 or more, ``[trainer]``) plus this table; ``data.source`` (or ``data.train.path``) is the starting data set (a
packed folder is left alone: the loop appends the labelled frames to its own copy, ``data.packed/``). Each round's MD
takes the keys of every MD run (``physml_md.config.md.MDSettings``: engine, temperature, timestep, ...).
"""

from __future__ import annotations

from typing import Any, Dict, Literal

from pydantic import Field

from physml_md.config.md import MDSettings
from physml_md.config.types import Force, Name, Path, Section, Time

__all__ = ["LabelConfig", "LearningConfig"]


class LabelConfig(Section):
    """``[learning.label]``: the reference method that labels the selected frames."""

    calculator: Name = Field(
        description='import path of an ASE calculator class, e.g. "tblite.ase.TBLite" or '
        '"ase.calculators.emt.EMT" (for DFT: your own calculator class)'
    )
    kwargs: Dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the calculator class")
    threads: int = Field(1, ge=1, description="OpenMP threads of the calculator while it labels (tblite)")


class LearningConfig(MDSettings):
    """``[learning]``: rounds of train -> MD -> select uncertain frames -> label -> add to the data."""

    rounds: int = Field(5, ge=1, description="the most rounds to run")
    structures: Path = Field(description="structure file to start each round's MD from")
    index: int = Field(0, ge=0, description="which structure of that file")
    md_time: Time = Field(1000.0, gt=0.0, description="simulated time of each round's MD")
    uncertainty_threshold: Force = Field(
        0.1, description="frames whose largest per-atom force std exceeds this are selected for labelling"
    )
    min_spacing: Time = Field(50.0, description="selected frames lie at least this far apart in time")
    max_new_frames: int = Field(20, ge=1, description="at most this many frames are labelled per round")
    restart: Literal["previous", "scratch"] = Field(
        "previous", description="each round trains from the previous round's weights, or from random ones"
    )
    test_data: Path | None = Field(
        None, description="labelled frames (extxyz) for the per-round test error, e.g. from the target conditions"
    )
    seed: int = Field(0, ge=0, description="seed of the MD velocities and thermostat (round k uses seed + k)")
    label: LabelConfig
