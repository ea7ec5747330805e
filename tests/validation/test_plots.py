"""physml_md.validation.plots: the PNGs of an MD validation, drawn from plain arrays and written atomically.

(validate() draws them from real runs in tests/validation/test_suite.py.)
"""

import numpy as np
import pytest
from matplotlib.image import imread

from physml_md.validation.plots import distributions_plot, energy_plot, rdf_plot

PNG = b"\x89PNG\r\n\x1a\n"
DPI, HEIGHT = 110, 3.4  # the resolution and panel height (inches) of every plot here


def read_image(path, n_panels, panel_width):
    """The pixels of a PNG, after checking its signature and its size (panels side by side)."""
    assert path.read_bytes()[:8] == PNG
    image = imread(path)
    assert image.shape[:2] == (round(HEIGHT * DPI), round(n_panels * panel_width * DPI))
    return image


def ink_per_panel(image, n_panels):
    """How many pixels of each panel are not white."""
    dark = image[..., :3].min(axis=-1) < 0.9
    return [int(part.sum()) for part in np.array_split(dark, n_panels, axis=1)]


def energy_arrays(n_nve):
    rng = np.random.default_rng(0)
    nvt_time = np.arange(50) * 10.0
    nve_time = np.arange(n_nve) * 10.0
    return dict(
        nvt_time_fs=nvt_time,
        nvt_potential=-100.0 + rng.normal(scale=0.1, size=50),
        nvt_temperature=300.0 + rng.normal(scale=20.0, size=50),
        target_k=300.0,
        nve_time_fs=nve_time,
        nve_total=-99.0 + 1e-4 * nve_time + rng.normal(scale=1e-4, size=n_nve),
        drift_mev_per_atom_per_ps=3.1,
        n_atoms=32,
    )


def test_energy_plot_has_three_panels_and_leaves_no_temporary_file(tmp_path):
    path = energy_plot(tmp_path / "energy.png", **energy_arrays(20))
    assert path == tmp_path / "energy.png"
    with_nve = ink_per_panel(read_image(path, 3, 4.2), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["energy.png"]
    assert all(ink > 0 for ink in with_nve)
    # without an NVE run the third panel keeps only its axes and labels: less ink there
    without_nve = ink_per_panel(read_image(energy_plot(tmp_path / "nvt.png", **energy_arrays(0)), 3, 4.2), 3)
    assert without_nve[2] < 0.9 * with_nve[2]


def test_rdf_plot_overlays_two_curves(tmp_path):
    r = np.linspace(0.0, 6.0, 120)
    reference = np.exp(-((r - 2.55) ** 2) / 0.02)
    one = ink_per_panel(read_image(rdf_plot(tmp_path / "one.png", r, reference, reference, "Cu-Cu"), 1, 5.0), 1)
    other = rdf_plot(tmp_path / "two.png", r, reference, np.roll(reference, 20), "Cu-Cu")
    assert ink_per_panel(read_image(other, 1, 5.0), 1)[0] > one[0]  # a second, separate peak adds ink


@pytest.mark.parametrize("n_panels", [1, 2])
def test_distributions_plot_has_one_panel_per_distribution(tmp_path, n_panels):
    edges = np.linspace(0.9, 1.6, 15)
    probabilities = np.full(14, 1 / 14)
    panels = [("C-H bond length", "Å", edges, probabilities, probabilities)] * n_panels
    path = distributions_plot(tmp_path / "structure.png", panels)
    assert all(ink > 0 for ink in ink_per_panel(read_image(path, n_panels, 4.2), n_panels))


def test_a_failed_plot_keeps_the_previous_file(tmp_path):
    path = tmp_path / "energy.png"
    energy_plot(path, **energy_arrays(20))
    before = path.read_bytes()
    arrays = energy_arrays(20)
    arrays["nvt_potential"] = arrays["nvt_potential"][:10]  # matplotlib refuses x and y of other lengths
    with pytest.raises(ValueError):
        energy_plot(path, **arrays)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["energy.png"]


def test_plots_leave_no_global_matplotlib_state(tmp_path, monkeypatch):
    """No pyplot (its figure registry and backend are global): the plots draw on their own canvas."""
    import sys

    import matplotlib

    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # any import of pyplot now fails
    backend = matplotlib.rcParams._get_backend_or_none()
    energy_plot(tmp_path / "energy.png", **energy_arrays(5))
    assert matplotlib.rcParams._get_backend_or_none() == backend
