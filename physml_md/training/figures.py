"""Training plots: parity (predicted vs reference) and learning curves from Lightning's CSVLogger.

Drawn on ``matplotlib.figure.Figure`` with the Agg canvas (never pyplot: no global matplotlib state changes), in the
format of the path's suffix (``.png``, ``.svg``, ``.pdf``...), written atomically.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from physml_md.atomic_write import PathLike, atomic_path
from physml_md.units import EV_TO_MEV

__all__ = ["METRIC_UNITS", "parity_plot", "learning_curves", "learning_curve_panels", "read_metrics", "Panel"]

# metric component -> (unit of its MAE and RMSE once multiplied by the factor, factor from the internal unit)
METRIC_UNITS: Dict[str, Tuple[str, float]] = {
    "per_system_energy": ("meV/structure", EV_TO_MEV),
    "per_atom_energy": ("meV/atom", EV_TO_MEV),
    "per_atom_force": ("meV/angstrom", EV_TO_MEV),
    "per_system_stress": ("meV/angstrom^3", EV_TO_MEV),
    "per_system_dipole_moment": ("me*angstrom", EV_TO_MEV),
    "per_system_total_charge": ("me", EV_TO_MEV),
    "per_atom_charge": ("me", EV_TO_MEV),
}

_PANEL_SIZE = (4.2, 3.6)  # inches per panel


def _as_array(values, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor, possibly requiring grad or on a GPU
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of numbers, got {type(values).__name__} ({exc})") from None


def _format_of(path: Path) -> str:
    supported = FigureCanvasAgg.get_supported_filetypes()
    fmt = path.suffix[1:].lower()
    if fmt not in supported:
        raise ValueError(
            f"cannot write a figure to {path}: the suffix {path.suffix!r} is not an image format; "
            f"use one of {', '.join('.' + s for s in sorted(supported))} (for example .png)"
        )
    return fmt


def _save(fig: Figure, path: Path, fmt: str) -> Path:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=150)
    return path


def _grid(n_panels: int, title: str | None) -> Tuple[Figure, list]:
    ncols = min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(_PANEL_SIZE[0] * ncols, _PANEL_SIZE[1] * nrows), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel())
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig, axes[:n_panels]


# ---------------------------------------------------------------------------------------------- parity


def _parity_panel(ax, ref: np.ndarray, pred: np.ndarray, quantity: str, unit: str, milli_unit: str) -> None:
    error = pred - ref
    mae = float(np.mean(np.abs(error)))
    rmse = float(np.sqrt(np.mean(error**2)))
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], color="0.4", linewidth=1, linestyle="--", label="y = x")
    label = f"MAE {EV_TO_MEV * mae:.3g} {milli_unit}\nRMSE {EV_TO_MEV * rmse:.3g} {milli_unit}\nn = {ref.size}"
    ax.scatter(ref, pred, s=6, alpha=0.5 if ref.size > 200 else 0.8, linewidths=0, label=label)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal")
    ax.set(xlabel=f"reference {quantity} ({unit})", ylabel=f"predicted {quantity} ({unit})")
    ax.legend(loc="upper left", fontsize="small")


def _parity_energies(energy_ref, energy_pred, n_atoms, per_atom: bool) -> Tuple[np.ndarray, np.ndarray]:
    """The energies to plot: per atom when ``n_atoms`` is given, rows with a NaN dropped."""
    e_ref = _as_array(energy_ref, "energy_ref").reshape(-1)
    e_pred = _as_array(energy_pred, "energy_pred").reshape(-1)
    if e_ref.shape != e_pred.shape:
        raise ValueError(
            f"energy_ref has {e_ref.size} values but energy_pred has {e_pred.size}: pass one energy per structure"
        )
    if n_atoms is not None:
        if not per_atom:
            raise ValueError("n_atoms is given but per_atom=False: n_atoms divides energies to per-atom values")
        counts = _as_array(n_atoms, "n_atoms").reshape(-1)
        if counts.shape != e_ref.shape:
            raise ValueError(
                f"n_atoms has {counts.size} values but there are {e_ref.size} energies: pass one count per structure"
            )
        if np.any(counts <= 0):
            raise ValueError("n_atoms must be positive for every structure")
        e_ref, e_pred = e_ref / counts, e_pred / counts
    keep = np.isfinite(e_ref) & np.isfinite(e_pred)
    if not keep.any():
        raise ValueError("no energy to plot: every reference or predicted energy is NaN (masked)")
    return e_ref[keep], e_pred[keep]


def _parity_forces(forces_ref, forces_pred) -> Tuple[np.ndarray, np.ndarray] | None:
    """The force components to plot (rows with a NaN dropped), None without forces."""
    if (forces_ref is None) != (forces_pred is None):
        raise ValueError("pass both forces_ref and forces_pred, or neither")
    if forces_ref is None:
        return None
    f_ref = _as_array(forces_ref, "forces_ref")
    f_pred = _as_array(forces_pred, "forces_pred")
    if f_ref.shape != f_pred.shape or f_ref.ndim != 2 or f_ref.shape[1] != 3:
        shapes = f"{f_ref.shape} and {f_pred.shape}"
        raise ValueError(f"forces_ref and forces_pred must both have shape [N, 3], got {shapes}")
    rows = np.isfinite(f_ref).all(axis=1) & np.isfinite(f_pred).all(axis=1)
    if not rows.any():
        raise ValueError("no force to plot: every reference or predicted force row is NaN (masked)")
    return f_ref[rows].reshape(-1), f_pred[rows].reshape(-1)


def parity_plot(
    path: PathLike,
    energy_ref,
    energy_pred,
    forces_ref=None,
    forces_pred=None,
    *,
    n_atoms=None,
    per_atom: bool = True,
    title: str | None = None,
) -> Path:
    """Write a parity plot of predicted against reference energies (and force components) to ``path``.

    energy_ref, energy_pred: one energy per structure [B], in eV. With ``n_atoms`` [B] they are totals and are
    divided by it; without it they are plotted as given (already per atom when ``per_atom``, else per structure).
    forces_ref, forces_pred: [N, 3] in eV/angstrom (both or neither); adds a panel of all force components.
    Rows with a NaN (masked labels) are dropped. MAE and RMSE appear in each panel's legend. Arrays may be
    numpy arrays, lists or torch tensors. Returns ``path``.
    """
    path = Path(path)
    fmt = _format_of(path)
    e_ref, e_pred = _parity_energies(energy_ref, energy_pred, n_atoms, per_atom)
    forces = _parity_forces(forces_ref, forces_pred)
    fig, axes = _grid(1 if forces is None else 2, title)
    per = "/atom" if per_atom else ""
    _parity_panel(axes[0], e_ref, e_pred, "energy", "eV" + per, "meV" + per)
    if forces is not None:
        _parity_panel(axes[1], forces[0], forces[1], "force component", "eV/Å", "meV/Å")
    return _save(fig, path, fmt)


# ------------------------------------------------------------------------------------- learning curves


def read_metrics(metrics_csv: PathLike) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Read a Lightning CSVLogger ``metrics.csv``: per column with values, (epochs, mean value in each epoch).

    Empty cells (Lightning's rows are sparse) and non-finite values are skipped; so are rows without an epoch.
    A missing, empty or header-only file, or one without an ``epoch`` column, is an error.
    """
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        raise FileNotFoundError(
            f"metrics file not found: {metrics_csv}; Lightning's CSVLogger writes "
            "<save_dir>/<name>/version_<n>/metrics.csv"
        )
    with open(metrics_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames
        if not columns:
            raise ValueError(f"{metrics_csv} is empty: it has no header row (has training logged anything yet?)")
        if "epoch" not in columns:
            raise ValueError(
                f"{metrics_csv} has no 'epoch' column (columns: {', '.join(columns)}); "
                "pass the metrics.csv written by Lightning's CSVLogger"
            )
        values: Dict[str, Dict[int, List[float]]] = {name: {} for name in columns if name not in ("epoch", "step")}
        n_rows = 0
        for line, row in enumerate(reader, start=2):
            n_rows += 1
            epoch = row.get("epoch")
            if not epoch:
                continue
            try:
                epoch_number = int(float(epoch))
            except ValueError:
                raise ValueError(f"{metrics_csv}, line {line}: epoch {epoch!r} is not a number") from None
            for name, per_epoch in values.items():
                cell = row.get(name)
                if not cell:
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    raise ValueError(f"{metrics_csv}, line {line}: {name} = {cell!r} is not a number") from None
                if math.isfinite(value):
                    per_epoch.setdefault(epoch_number, []).append(value)
    if n_rows == 0:
        raise ValueError(f"{metrics_csv} has a header but no rows: nothing has been logged yet")
    series = {}
    for name, per_epoch in values.items():
        if per_epoch:
            epochs = sorted(per_epoch)
            series[name] = (np.array(epochs), np.array([np.mean(per_epoch[e]) for e in epochs]))
    return series


class Panel(NamedTuple):
    """One panel of the learning curves: its columns of ``metrics.csv``, their legend labels, and the factor from
    the logged unit to the one of ``ylabel``."""

    title: str
    ylabel: str
    columns: List[str]
    labels: List[str]
    log: bool
    factor: float = 1.0


_SPLIT_COLORS = {"train": "C0", "val": "C1"}


def _plot_series(ax, series, panel: Panel) -> None:
    positive = True
    for name, label in zip(panel.columns, panel.labels):
        epochs, values = series[name]
        values = values * panel.factor
        positive &= bool(np.all(values > 0))
        style = "--" if name.endswith(("/rmse", "/rmse_epoch")) else "-"
        color = _SPLIT_COLORS.get(name.split("/", 1)[0])  # one colour per split, MAE solid and RMSE dashed
        ax.plot(epochs, values, style, color=color, marker="o", markersize=3, label=label)
    if panel.log and positive:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", title=panel.title, ylabel=panel.ylabel)
    ax.legend(fontsize="small")


def _first_present(series, candidates: List[str]) -> str | None:
    return next((name for name in candidates if name in series), None)


def _axis_unit(unit: str) -> str:
    return unit.replace("angstrom^3", "Å³").replace("angstrom", "Å")


def learning_curve_panels(series: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> List[Panel]:
    """The panels ``learning_curves`` draws from ``read_metrics``' series: train and val loss (log y); per
    component with a ``val/`` or ``train/<component>/{mae,rmse}`` column, its MAE (solid) and RMSE (dashed) in meV
    units (log y); the loss weights (columns ``weight/<component>``, also ``weights/<component>``)."""
    panels = []
    losses = [
        (name, split)
        for split in ("train", "val")
        if (name := _first_present(series, [f"{split}/loss", f"{split}/loss_epoch", f"{split}/loss_step"]))
    ]
    if losses:
        ylabel = "Σ weight × MSE (eV, Å units)"
        panels.append(Panel("loss", ylabel, [n for n, _ in losses], [s for _, s in losses], True))
    components = sorted(
        {m.group(2) for name in series if (m := re.fullmatch(r"(train|val)/(.+)/(mae|rmse)(_epoch)?", name))}
    )
    for component in components:
        columns, labels = [], []
        for kind in ("mae", "rmse"):
            for split in ("train", "val"):
                name = _first_present(series, [f"{split}/{component}/{kind}", f"{split}/{component}/{kind}_epoch"])
                if name:
                    columns.append(name)
                    labels.append(f"{split} {kind.upper()}")
        unit, factor = METRIC_UNITS.get(component, ("logged unit", 1.0))
        panels.append(Panel(component, f"error ({_axis_unit(unit)})", columns, labels, True, factor))
    weights = sorted(name for name in series if name.startswith(("weight/", "weights/")))
    if weights:
        panels.append(Panel("loss weights", "weight", weights, [w.split("/", 1)[1] for w in weights], False))
    return panels


def learning_curves(path: PathLike, metrics_csv: PathLike) -> Path:
    """Plot a Lightning CSVLogger ``metrics.csv`` against epoch and write the figure to ``path`` (atomically).

    The panels are ``learning_curve_panels``'; values logged several times in one epoch are averaged. A missing,
    empty or header-only file, or one with nothing to plot, is an error.
    """
    path = Path(path)
    fmt = _format_of(path)
    series = read_metrics(metrics_csv)
    panels = learning_curve_panels(series)
    if not panels:
        raise ValueError(
            f"{metrics_csv} has nothing to plot: no train/loss, val/loss, <split>/<component>/mae or rmse, or "
            f"weight/<component> values (columns with values: {', '.join(sorted(series)) or 'none'})"
        )
    fig, axes = _grid(len(panels), None)
    for ax, panel in zip(axes, panels):
        _plot_series(ax, series, panel)
    return _save(fig, path, fmt)
