"""MD run metrics: the numbers that say whether a run was sound, from the plain series of any trajectory (ASE,
OpenMM, a file): ``energy_drift`` (NVE energy conservation, meV/atom/ps) and ``temperature_statistics`` (NVT
thermostat, with the canonical spread). Blow-ups are ``physml_md.md.blowups``; structure is ``structure``.
Units: angstrom, eV, fs, kelvin; float64. Imports numpy and ``physml_md.units`` / ``md.arrays`` only.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from physml_md.md.arrays import ArrayLike, ToDict, count, positive, short_list
from physml_md.units import EV_TO_MEV, PS_TO_FS

# ---------------------------------------------------------------------------------------------------------
# results


@dataclasses.dataclass(frozen=True)
class DriftResult(ToDict):
    """Linear fit of the total energy against time (see ``energy_drift``)."""

    drift_mev_per_atom_per_ps: float  # slope of the fit
    intercept_ev: float  # fitted total energy at time_fs = 0
    residual_rms_mev_per_atom: float  # RMS distance of the energies from the fitted line
    max_deviation_mev_per_atom: float  # max |E(t) - E(t_0)|
    n_atoms: int
    n_points: int
    duration_ps: float


@dataclasses.dataclass(frozen=True)
class TemperatureResult(ToDict):
    """Mean and spread of the temperature after equilibration (see ``temperature_statistics``)."""

    mean_k: float
    std_k: float  # population standard deviation (ddof=0) of the kept samples
    target_k: float
    deviation_k: float  # mean_k - target_k
    relative_deviation: float  # deviation_k / target_k
    n_samples: int  # samples used
    n_skipped: int  # samples discarded as equilibration
    n_atoms: int | None = None
    expected_std_k: float | None = None  # canonical spread sqrt(2 / (3 N)) * target_k, when n_atoms is given
    std_ratio: float | None = None  # std_k / expected_std_k


# ---------------------------------------------------------------------------------------------------------
# input checks


def _series(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a 1-D float64 array of finite numbers."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per frame), got shape {array.shape}")
    bad = np.nonzero(~np.isfinite(array))[0]
    if bad.size:
        raise ValueError(
            f"{name} is not finite (nan or inf) at indices {short_list(bad)}; cut the series before the "
            "first bad frame (check_frame finds where a run blew up)"
        )
    return array


# ---------------------------------------------------------------------------------------------------------
# energy and temperature


def energy_drift(time_fs: ArrayLike, total_energy_ev: ArrayLike, n_atoms: int) -> DriftResult:
    """Least-squares line through the total energy of an NVE run, per atom.

    ``time_fs`` [n] (strictly increasing) and ``total_energy_ev`` [n] (potential + kinetic, eV, the whole
    system), n >= 3. The drift is the slope in meV/atom/ps; ``intercept_ev`` is the fitted energy at
    time 0; ``residual_rms_mev_per_atom`` measures the scatter about the line (integration noise) and
    ``max_deviation_mev_per_atom`` the largest |E(t) - E(t_0)|. A usable NVE run with a smooth potential
    drifts by well under 1 meV/atom/ps.
    """
    time = _series(time_fs, "time_fs")
    energy = _series(total_energy_ev, "total_energy_ev")
    if len(time) != len(energy):
        raise ValueError(
            f"time_fs has {len(time)} values but total_energy_ev has {len(energy)}; pass one time per energy"
        )
    if len(time) < 3:
        raise ValueError(f"energy_drift needs at least 3 points (a line through 2 has no residual), got {len(time)}")
    n_atoms = count(n_atoms, "n_atoms")
    steps = np.nonzero(np.diff(time) <= 0)[0]
    if steps.size:
        i = int(steps[0])
        raise ValueError(
            f"time_fs must increase strictly, but time_fs[{i + 1}] = {time[i + 1]} follows time_fs[{i}] = {time[i]}; "
            "pass the simulation time of each frame (not a step counter that restarts)"
        )
    centred = time - time.mean()
    slope = float(centred @ (energy - energy.mean()) / (centred @ centred))  # eV/fs
    intercept = float(energy.mean() - slope * time.mean())
    residual = energy - (intercept + slope * time)
    per_atom = EV_TO_MEV / n_atoms
    return DriftResult(
        drift_mev_per_atom_per_ps=slope * PS_TO_FS * per_atom,
        intercept_ev=intercept,
        residual_rms_mev_per_atom=float(np.sqrt(np.mean(residual**2))) * per_atom,
        max_deviation_mev_per_atom=float(np.max(np.abs(energy - energy[0]))) * per_atom,
        n_atoms=n_atoms,
        n_points=len(time),
        duration_ps=float(time[-1] - time[0]) / PS_TO_FS,
    )


def temperature_statistics(
    temperature_k: ArrayLike, target_k: float, skip_fraction: float = 0.2, n_atoms: int | None = None
) -> TemperatureResult:
    """Mean and standard deviation of the temperature after the first ``skip_fraction`` of the samples.

    The first ``floor(skip_fraction * n)`` samples are treated as equilibration and dropped; at least 2
    must remain. ``std_k`` is the population standard deviation (ddof=0). When ``n_atoms`` is given,
    ``expected_std_k`` = sqrt(2 / (3 N)) * target_k is the spread of the instantaneous kinetic temperature
    in the canonical ensemble (3N degrees of freedom; with the centre of mass fixed it is 3N - 3, 5 % more
    spread for N = 30 and less above), and ``std_ratio`` = std_k / expected_std_k: near 1 for a thermostat
    that samples the canonical ensemble (Langevin, Nosé-Hoover chains), well below 1 for one that
    suppresses fluctuations (Berendsen). The ratio is only meaningful for samples further apart than the
    kinetic-energy correlation time.
    """
    temperature = _series(temperature_k, "temperature_k")
    negative = np.nonzero(temperature < 0)[0]
    if negative.size:
        raise ValueError(f"temperature_k is negative at indices {short_list(negative)}; temperatures are in kelvin")
    target = positive(target_k, "target_k")
    if not 0.0 <= skip_fraction < 1.0:
        raise ValueError(
            f"skip_fraction must be in [0, 1) (the fraction discarded as equilibration), got {skip_fraction}"
        )
    n_skipped = int(math.floor(skip_fraction * len(temperature)))
    kept = temperature[n_skipped:]
    if len(kept) < 2:
        raise ValueError(
            f"only {len(kept)} temperature sample(s) left after skipping {n_skipped} of {len(temperature)}; "
            "need at least 2 (record more samples or lower skip_fraction)"
        )
    mean, std = float(kept.mean()), float(kept.std())
    expected = None
    if n_atoms is not None:
        n_atoms = count(n_atoms, "n_atoms")
        expected = math.sqrt(2.0 / (3.0 * n_atoms)) * target
    return TemperatureResult(
        mean_k=mean,
        std_k=std,
        target_k=target,
        deviation_k=mean - target,
        relative_deviation=(mean - target) / target,
        n_samples=len(kept),
        n_skipped=n_skipped,
        n_atoms=n_atoms,
        expected_std_k=expected,
        std_ratio=None if expected is None else std / expected,
    )
