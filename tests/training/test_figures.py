"""Training plots: valid image files, NaN (masked) rows dropped, sparse Lightning metrics.csv, clear errors."""

import csv
import inspect
import sys

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.image import imread

from physml_md.training import figures as plots
from physml_md.training.figures import learning_curves, parity_plot, read_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI = 150


def read_png(path):
    """The image as an array, after checking the PNG signature and a non-trivial size."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000
    return imread(path)


def expected_shape(nrows, ncols):
    width, height = plots._PANEL_SIZE
    return (round(nrows * height * DPI), round(ncols * width * DPI))


@pytest.fixture
def parity_data():
    rng = np.random.default_rng(0)
    n_atoms = np.array([4, 8, 6, 5, 7])
    e_ref = rng.normal(-3.5, 0.1, size=5) * n_atoms
    e_pred = e_ref + rng.normal(0, 0.05, size=5)
    f_ref = rng.normal(size=(30, 3))
    f_pred = f_ref + rng.normal(0, 0.1, size=(30, 3))
    return n_atoms, e_ref, e_pred, f_ref, f_pred


def test_parity_plot_drops_nan_rows(tmp_path, parity_data):
    n_atoms, e_ref, e_pred, f_ref, f_pred = parity_data
    e_ref, e_pred = e_ref / n_atoms, e_pred / n_atoms
    clean = parity_plot(tmp_path / "clean.png", e_ref[1:], e_pred[1:], f_ref[2:], f_pred[2:], title="Cu")
    # masked labels: one energy, two atoms' forces (a whole row, and a row with one NaN component)
    e_masked = e_ref.copy()
    e_masked[0] = np.nan
    f_masked = f_ref.copy()
    f_masked[0] = np.nan
    f_pred_nan = f_pred.copy()
    f_pred_nan[1, 2] = np.nan
    masked = parity_plot(tmp_path / "masked.png", e_masked, e_pred, f_masked, f_pred_nan, title="Cu")
    image = read_png(masked)
    assert image.shape[:2] == expected_shape(1, 2)  # energy and force panels
    np.testing.assert_array_equal(image, read_png(clean))  # same points, same MAE/RMSE/n in the legends


def test_parity_plot_divides_by_n_atoms_and_accepts_tensors(tmp_path, parity_data):
    n_atoms, e_ref, e_pred, _, _ = parity_data
    divided = parity_plot(tmp_path / "divided.png", e_ref / n_atoms, e_pred / n_atoms)
    prediction = torch.tensor(e_pred, requires_grad=True)
    totals = parity_plot(tmp_path / "totals.png", torch.tensor(e_ref), prediction, n_atoms=torch.tensor(n_atoms))
    image = read_png(totals)
    assert image.shape[:2] == expected_shape(1, 1)  # energy panel only
    np.testing.assert_array_equal(image, read_png(divided))
    per_system = parity_plot(tmp_path / "per_system.png", e_ref, e_pred, per_atom=False)
    assert not np.array_equal(read_png(per_system), image)  # other values and units


def test_parity_plot_other_format_and_overwrite(tmp_path, parity_data):
    _, e_ref, e_pred, _, _ = parity_data
    target = tmp_path / "parity.svg"
    target.write_text("old")
    assert parity_plot(target, e_ref, e_pred, per_atom=False) == target
    assert target.read_text().lstrip().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parity.svg"]  # no temporary file left


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"energy_pred": np.zeros(3)}, ValueError, "one energy per structure"),
        ({"forces_ref": np.zeros((2, 3))}, ValueError, "both forces_ref and forces_pred"),
        ({"forces_ref": np.zeros((2, 3)), "forces_pred": np.zeros((3, 3))}, ValueError, r"shape \[N, 3\]"),
        ({"forces_ref": np.full((2, 3), np.nan), "forces_pred": np.zeros((2, 3))}, ValueError, "no force to plot"),
        ({"energy_ref": [np.nan, 1.0], "energy_pred": [0.0, np.nan]}, ValueError, "no energy to plot"),
        ({"n_atoms": [2, 3], "per_atom": False}, ValueError, "per_atom=False"),
        ({"n_atoms": [2, 0]}, ValueError, "n_atoms must be positive"),
        ({"n_atoms": [2, 3, 4]}, ValueError, "one count per structure"),
        ({"energy_ref": ["a", "b"]}, TypeError, "energy_ref must be an array of numbers"),
    ],
)
def test_parity_plot_errors(tmp_path, kwargs, error, match):
    arguments = {"energy_ref": np.zeros(2), "energy_pred": np.ones(2), **kwargs}
    with pytest.raises(error, match=match):
        parity_plot(tmp_path / "p.png", **arguments)
    assert not any(tmp_path.iterdir())


def test_bad_suffix_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not an image format.*for example .png"):
        parity_plot(tmp_path / "parity.txt", [1.0], [1.0])


def test_no_global_matplotlib_state(tmp_path, monkeypatch):
    source = inspect.getsource(plots)
    assert "import pyplot" not in source and "matplotlib.pyplot" not in source
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # any import of pyplot now fails
    before = rc_params()
    parity_plot(tmp_path / "p.png", [1.0, 2.0], [1.1, 2.0])
    assert rc_params() == before


def rc_params():
    """matplotlib's settings, without resolving the backend (which would import pyplot)."""
    rc = matplotlib.rcParams
    return {key: rc[key] for key in rc if key != "backend"} | {"backend": rc._get_backend_or_none()}


# ------------------------------------------------------------------------------------------ learning curves

COLUMNS = [
    "epoch",
    "lr-Adam",
    "step",
    "train/loss_epoch",
    "train/loss_step",
    "train/per_atom_force/rmse",
    "val/loss",
    "val/per_atom_force/rmse",
    "val/per_system_energy/rmse",
    "val/per_system_stress/rmse",
    "weight/per_atom_force",
    "weight/per_system_energy",
]


def lightning_rows(n_epochs=4, steps_per_epoch=3):
    """Rows as Lightning's CSVLogger logs them: each row has only the metrics of one logging call."""
    rows, step = [], 0
    for epoch in range(n_epochs):
        for _ in range(steps_per_epoch):
            rows.append({"epoch": epoch, "step": step, "lr-Adam": 1e-3 * 0.9**epoch})
            rows.append({"epoch": epoch, "step": step, "train/loss_step": 2.0 / (1 + step)})
            step += 1
        rows.append(
            {
                "epoch": epoch,
                "step": step - 1,
                "val/loss": 1.5 / (1 + epoch),
                "val/per_atom_force/rmse": 0.3 / (1 + epoch),
                "val/per_system_energy/rmse": 0.05 / (1 + epoch),
                "val/per_system_stress/rmse": 0.01 / (1 + epoch),
            }
        )
        rows.append(
            {
                "epoch": epoch,
                "step": step - 1,
                "train/loss_epoch": 1.8 / (1 + epoch),
                "train/per_atom_force/rmse": 0.35 / (1 + epoch),
                "weight/per_atom_force": 100 - 10 * epoch,
                "weight/per_system_energy": 1 + epoch,
            }
        )
    return rows


def write_metrics(path, columns, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: value for key, value in row.items() if key in columns})
    return path


def test_read_metrics_sparse_rows(tmp_path):
    rows = lightning_rows()
    rows.append({"epoch": 4, "step": 12, "val/loss": "nan"})  # a NaN is dropped
    rows.append({"epoch": "", "step": 13, "val/loss": 7.0})  # a row without an epoch is dropped
    series = read_metrics(write_metrics(tmp_path / "metrics.csv", COLUMNS, rows))
    assert "epoch" not in series and "step" not in series
    epochs, values = series["val/loss"]
    np.testing.assert_array_equal(epochs, [0, 1, 2, 3])
    np.testing.assert_allclose(values, [1.5 / (1 + e) for e in range(4)])
    # several values in one epoch are averaged (brute force over the rows written)
    epochs, values = series["train/loss_step"]
    for epoch, value in zip(epochs, values):
        logged = [r["train/loss_step"] for r in rows if r["epoch"] == epoch and "train/loss_step" in r]
        assert value == pytest.approx(np.mean(logged))


def test_learning_curves_all_panels(tmp_path):
    metrics = write_metrics(tmp_path / "metrics.csv", COLUMNS, lightning_rows())
    out = learning_curves(tmp_path / "curves.png", metrics)
    # loss, three val/<component>/rmse panels, loss weights: 5 panels on a 2 x 3 grid
    assert read_png(out).shape[:2] == expected_shape(2, 3)


def test_learning_curves_skips_absent_columns(tmp_path):
    columns = ["epoch", "step", "train/loss", "val/loss", "lr-Adam"]
    rows = [{"epoch": e, "step": e, "train/loss": 1.0 / (1 + e), "val/loss": 1.2 / (1 + e)} for e in range(3)]
    out = learning_curves(tmp_path / "curves.png", write_metrics(tmp_path / "metrics.csv", columns, rows))
    assert read_png(out).shape[:2] == expected_shape(1, 1)  # the loss panel only
    # a column in the header whose cells are all empty is absent too
    columns = ["epoch", "step", "val/loss", "val/per_atom_force/rmse", "weight/per_atom_force"]
    rows = [{"epoch": e, "step": e, "val/loss": 0.0, "val/per_atom_force/rmse": 0.1} for e in range(3)]
    out = learning_curves(tmp_path / "curves2.png", write_metrics(tmp_path / "metrics2.csv", columns, rows))
    assert read_png(out).shape[:2] == expected_shape(1, 2)  # a zero loss: linear y instead of log


def test_learning_curves_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics file not found.*CSVLogger"):
        learning_curves(tmp_path / "c.png", tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        learning_curves(tmp_path / "c.png", tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("epoch,step,val/loss\n")
    with pytest.raises(ValueError, match="no rows"):
        learning_curves(tmp_path / "c.png", tmp_path / "header.csv")
    (tmp_path / "noepoch.csv").write_text("step,val/loss\n0,1.0\n")
    with pytest.raises(ValueError, match="no 'epoch' column"):
        learning_curves(tmp_path / "c.png", tmp_path / "noepoch.csv")
    (tmp_path / "lr.csv").write_text("epoch,step,lr-Adam\n0,0,0.001\n")
    with pytest.raises(ValueError, match="nothing to plot.*lr-Adam"):
        learning_curves(tmp_path / "c.png", tmp_path / "lr.csv")
    (tmp_path / "text.csv").write_text("epoch,step,val/loss\n0,0,abc\n")
    with pytest.raises(ValueError, match="line 2: val/loss = 'abc' is not a number"):
        learning_curves(tmp_path / "c.png", tmp_path / "text.csv")
    assert not (tmp_path / "c.png").exists()


def test_learning_curves_label_the_axes_with_units(tmp_path, monkeypatch):
    """Errors are drawn in meV units named on the y axis (the logged values are in eV); x is the epoch."""
    columns = [*COLUMNS, "train/per_atom_energy/mae", "val/per_atom_energy/mae"]
    rows = lightning_rows()
    for row in rows:
        if "val/loss" in row:
            row["val/per_atom_energy/mae"] = 0.004 / (1 + row["epoch"])  # eV/atom
        if "train/loss_epoch" in row:
            row["train/per_atom_energy/mae"] = 0.005
    metrics = write_metrics(tmp_path / "metrics.csv", columns, rows)
    panels = {panel.title: panel for panel in plots.learning_curve_panels(read_metrics(metrics))}
    assert panels["per_atom_energy"].ylabel == "error (meV/atom)"
    assert panels["per_atom_energy"].labels == ["train MAE", "val MAE"]
    assert panels["per_atom_force"].ylabel == "error (meV/Å)"
    assert panels["per_system_energy"].ylabel == "error (meV/structure)"
    assert panels["per_system_stress"].ylabel == "error (meV/Å³)"

    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path, fmt: drawn.setdefault("fig", fig) and path)
    learning_curves(tmp_path / "curves.png", metrics)
    axes = {ax.get_title(): ax for ax in drawn["fig"].axes if ax.get_visible()}
    assert set(axes) == set(panels)
    assert all(ax.get_xlabel() == "epoch" for ax in axes.values())
    assert axes["per_atom_energy"].get_ylabel() == "error (meV/atom)"
    assert "MSE" in axes["loss"].get_ylabel() and axes["loss weights"].get_ylabel() == "weight"
    # the values drawn are the logged ones in meV
    (val_mae,) = [line for line in axes["per_atom_energy"].get_lines() if line.get_label() == "val MAE"]
    np.testing.assert_allclose(val_mae.get_ydata(), [4.0 / (1 + e) for e in range(4)], rtol=1e-12)
