"""The MD progress bar (physml_md/md/progress.py): steps, simulated ns/day and temperature on stderr."""

import numpy as np

from physml_md.md.frame import Frame
from physml_md.md.progress import Progress


def test_progress_bar_counts_steps_and_shows_the_temperature(capsys):
    bar = Progress(total=20, timestep_fs=0.5, enabled=True)
    frame = Frame(step=10, time_fs=5.0, positions=np.zeros((2, 3)), temperature_k=312.4)
    bar.update(10, frame, 10)
    bar.close()
    err = capsys.readouterr().err
    assert "10/20" in err
    assert "T=312 K" in err and "ns/day" in err


def test_a_disabled_bar_prints_nothing(capsys):
    bar = Progress(total=5, timestep_fs=1.0, enabled=False)
    bar.update(5, Frame(step=5, time_fs=5.0, positions=np.zeros((1, 3)), temperature_k=300.0), 5)
    bar.close()
    assert capsys.readouterr().err == ""
