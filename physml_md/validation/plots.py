"""PNG plots of an MD validation: energy and temperature traces, NVE drift, structure overlays.

Each function draws one figure from plain arrays and writes it atomically (temporary name, then rename).
matplotlib draws on its file-only canvas (Agg) without pyplot: no display, no global state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from physml_md.atomic_write import PathLike, atomic_path
from physml_md.units import EV_TO_MEV, FS_TO_PS

__all__ = ["distributions_plot", "energy_plot", "rdf_plot"]


def _figure(n_panels: int, width: float = 4.2) -> Tuple[Figure, list]:
    figure = Figure(figsize=(width * n_panels, 3.4))
    FigureCanvasAgg(figure)  # no pyplot: no global state, no display
    return figure, list(figure.subplots(1, n_panels, squeeze=False)[0])


def _save(figure: Figure, path: PathLike) -> Path:
    path = Path(path)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    return path


def energy_plot(
    path: PathLike,
    nvt_time_fs: Sequence[float],
    nvt_potential: Sequence[float],
    nvt_temperature: Sequence[float],
    target_k: float,
    nve_time_fs: Sequence[float],
    nve_total: Sequence[float],
    drift_mev_per_atom_per_ps: float,
    n_atoms: int,
) -> Path:
    """Three panels: NVT potential energy, NVT temperature against the target, NVE total energy with its fit."""
    figure, (potential_ax, temperature_ax, total_ax) = _figure(3)
    t = np.asarray(nvt_time_fs) * FS_TO_PS
    potential_ax.plot(t, np.asarray(nvt_potential) / n_atoms, lw=1)
    potential_ax.set(xlabel="time / ps", ylabel="potential energy / eV per atom", title="NVT")
    temperature_ax.plot(t, nvt_temperature, lw=1, label="run")
    temperature_ax.axhline(target_k, color="k", ls="--", lw=1, label=f"target {target_k:g} K")
    temperature_ax.set(xlabel="time / ps", ylabel="temperature / K", title="NVT temperature")
    temperature_ax.legend(frameon=False)
    if len(nve_time_fs):
        t = np.asarray(nve_time_fs) * FS_TO_PS
        total = EV_TO_MEV * (np.asarray(nve_total) - nve_total[0]) / n_atoms
        total_ax.plot(t, total, lw=1, label="E_total - E_total(0)")
        total_ax.plot(t, drift_mev_per_atom_per_ps * t, "k--", lw=1, label=f"drift {drift_mev_per_atom_per_ps:.3g}")
        total_ax.legend(frameon=False)
    total_ax.set(xlabel="time / ps", ylabel="meV per atom", title="NVE energy (drift: meV/atom/ps)")
    return _save(figure, path)


def rdf_plot(path: PathLike, r: Sequence[float], reference: Sequence[float], sample: Sequence[float], title: str):
    """g(r) of the reference and of the model's run, overlaid."""
    figure, (ax,) = _figure(1, width=5.0)
    ax.plot(r, reference, lw=1.5, label="reference")
    ax.plot(r, sample, lw=1.2, ls="--", label="model")
    ax.set(xlabel="r / Å", ylabel="g(r)", title=title)
    ax.legend(frameon=False)
    return _save(figure, path)


def distributions_plot(path: PathLike, panels: Sequence[tuple]) -> Path:
    """One panel per (title, unit, edges, reference probabilities, sample probabilities)."""
    figure, axes = _figure(len(panels))
    for ax, (title, unit, edges, reference, sample) in zip(axes, panels):
        centres = 0.5 * (np.asarray(edges[1:]) + np.asarray(edges[:-1]))
        ax.step(centres, reference, where="mid", lw=1.5, label="reference")
        ax.step(centres, sample, where="mid", lw=1.2, ls="--", label="model")
        ax.set(xlabel=f"{title} / {unit}", ylabel="probability", title=title)
        ax.legend(frameon=False)
    return _save(figure, path)
