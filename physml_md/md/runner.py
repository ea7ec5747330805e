"""``run_md``: molecular dynamics with a physml-md potential in ASE or OpenMM, watched for blow-ups.

    result = run_md("model.pt", atoms, engine="openmm", ensemble="nvt", temperature="300 K", time="10 ps")

Every ``report_every`` steps a ``Frame`` is recorded, written (trajectory, CSV log) and checked
(``blowups.check_frame``, then ``check_progress``). A failed check or an engine failure stops the run early
(``result.blow_up``: step, quantity, atoms, likely cause); SIGINT/SIGTERM stop it at the last whole frame
(``result.interruption``). The files hold every frame up to the stop. Quantities may carry units (``"0.5 fs"``,
``"300 K"``, ``"1/ps"``); bare numbers are fs, K and 1/fs.
"""

from __future__ import annotations

import contextlib
import time as clock
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from ase import Atoms
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

from physml_md.config.md import MDSettings, md_settings
from physml_md.data.elements import check_known_elements
from physml_md.data.neighbors import MAX_COORDINATE
from physml_md.export import load_model
from physml_md.md.arrays import non_finite_atoms, short_list
from physml_md.md.blowups import BlowUp, check_frame, check_progress, minimum_distance
from physml_md.md.blowups import max_force as metrics_max_force
from physml_md.md.control import Interrupted, Interrupts, Progress
from physml_md.md.engines import make_engine
from physml_md.md.frame import Frame
from physml_md.md.io.writing import EnergyLog, TrajectoryWriter
from physml_md.md.uncertainty import watch_for
from physml_md.units import DAY_TO_SECONDS, NS_TO_FS, PS_TO_FS, parse_quantity

__all__ = ["MDResult", "run_md"]


@dataclass
class MDResult:
    """What a run produced: per-frame series (eV, K, fs), positions [F, N, 3] in angstrom, and its verdict.

    Each series holds one quantity of the recorded ``Frame``s, named in the plural (``Frame.potential_energy``
    -> ``potential_energies``); ``target_temperature_k`` is the thermostat's setting (and the velocities' draw).
    """

    engine: str
    ensemble: str
    n_atoms: int
    timestep_fs: float
    target_temperature_k: float
    steps_requested: int
    steps_done: int = 0
    times_fs: List[float] = field(default_factory=list)
    potential_energies: List[float] = field(default_factory=list)
    kinetic_energies: List[float] = field(default_factory=list)
    temperatures_k: List[float] = field(default_factory=list)
    positions: List[np.ndarray] = field(default_factory=list)
    cells: List[np.ndarray | None] = field(default_factory=list)
    min_distance: float = float("inf")
    min_distance_atoms: tuple = ()
    max_force: float = 0.0
    blow_up: BlowUp | None = None
    blow_up_step: int | None = None
    wall_seconds: float = 0.0
    files: Dict[str, str] = field(default_factory=dict)
    final_atoms: Atoms | None = None
    interrupted: str | None = None  # "SIGINT" or "SIGTERM" when a signal stopped the run (at steps_done)
    max_forces_std: List[float] = field(default_factory=list)  # per frame, eV/angstrom (committees only)
    uncertainty: Dict[str, Any] | None = None  # UncertaintyWatch.summary() when a threshold was set

    @property
    def stable(self) -> bool:
        return self.blow_up is None

    @property
    def total_energies(self) -> np.ndarray:
        return np.asarray(self.potential_energies) + np.asarray(self.kinetic_energies)

    @property
    def ns_per_day(self) -> float:
        if self.wall_seconds <= 0:
            return float("nan")
        return self.steps_done * self.timestep_fs / NS_TO_FS / (self.wall_seconds / DAY_TO_SECONDS)

    def summary(self) -> Dict[str, Any]:
        """JSON-ready numbers of the run (no per-frame arrays)."""
        return {
            "engine": self.engine,
            "ensemble": self.ensemble,
            "n_atoms": self.n_atoms,
            "timestep_fs": self.timestep_fs,
            "temperature_k": self.target_temperature_k,
            "steps_requested": self.steps_requested,
            "steps_done": self.steps_done,
            "simulated_ps": self.steps_done * self.timestep_fs / PS_TO_FS,
            "stable": self.stable,
            "blow_up": None if self.blow_up is None else {"step": self.blow_up_step, **self.blow_up.to_dict()},
            "min_distance_angstrom": self.min_distance,
            "min_distance_atoms": list(self.min_distance_atoms),
            "max_force_ev_per_angstrom": self.max_force,
            "wall_seconds": self.wall_seconds,
            "ns_per_day": self.ns_per_day,
            "files": dict(self.files),
            "interrupted": None if self.interrupted is None else {"signal": self.interrupted, "step": self.steps_done},
            "max_forces_std_ev_per_angstrom": max(self.max_forces_std) if self.max_forces_std else None,
            "uncertainty": self.uncertainty,
        }

    @property
    def interruption(self) -> str | None:
        """One sentence when a signal stopped the run, else None."""
        if self.interrupted is None:
            return None
        if not self.times_fs:
            return f"interrupted by {self.interrupted} before the first frame; no file was written"
        kept = (
            f"the {' and '.join(self.files)} hold"
            if len(self.files) > 1
            else f"the {''.join(self.files) or 'result'} holds"
        )
        return (
            f"interrupted by {self.interrupted} at step {self.steps_done} of {self.steps_requested}; {kept} the "
            f"{len(self.times_fs)} frames up to it"
        )


def _steps(steps: int | None, duration, timestep_fs: float) -> int:
    if (steps is None) == (duration is None):
        raise ValueError("give either steps (a number of steps) or time (a duration such as '10 ps'), not both")
    if steps is None:
        steps = int(round(parse_quantity(duration, "time", "time") / timestep_fs))
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"the run needs at least one step, got steps={steps!r} (time / timestep rounds to it)")
    return int(steps)


def initial_velocities(atoms: Atoms, temperature_k: float, seed: int, keep: bool = False) -> Atoms:
    """A copy of ``atoms`` with Maxwell-Boltzmann momenta at ``temperature_k`` (seeded), no centre-of-mass
    motion (and no rotation for a molecule); ``keep`` leaves momenta the structure already has."""
    atoms = atoms.copy()
    if keep and np.any(atoms.get_momenta()):
        return atoms
    thermalize_momenta(atoms, temperature_K=temperature_k, rng=np.random.default_rng(seed))
    Stationary(atoms)
    if not atoms.pbc.any() and len(atoms) > 2:
        with np.errstate(divide="ignore", invalid="ignore"):  # a linear molecule has a zero moment of inertia
            ZeroRotation(atoms)
    return atoms


def _check_positions(atoms: Atoms) -> None:
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms")
    bad = non_finite_atoms(atoms.positions)
    if bad.size:
        which = f"atom {bad[0]}" if bad.size == 1 else f"atoms {short_list(bad)}"
        raise ValueError(f"positions contain NaN or infinite values ({which}): check the structure file")
    largest = np.abs(atoms.positions).max(axis=1)  # checked before the velocity draw computes with them
    if largest.max() > MAX_COORDINATE:
        raise ValueError(
            f"positions reach {largest.max():.1e} angstrom (atom {int(largest.argmax())}), beyond the "
            f"{MAX_COORDINATE:.0e} angstrom no structure needs: the structure is broken, or the MD run that made it "
            "blew up"
        )


def run_md(
    model,
    atoms: Atoms,
    settings: MDSettings | None = None,
    *,
    steps: int | None = None,
    time=None,
    trajectory: str | Path | None = None,
    log: str | Path | None = None,
    keep_velocities: bool = False,
    keep_positions: bool = True,
    progress: bool = False,
    uncertainty_threshold=None,
    stop_on_uncertainty: bool = False,
    uncertain_frames: str | Path | None = None,
    **options,
) -> MDResult:
    """Run MD with ``model`` (exported file, checkpoint, Potential or ExportedPotential) from ``atoms``.

    ``settings`` (``physml_md.config.md.MDSettings``: engine, ensemble, temperature, timestep, friction, seed, ...;
    the blow-up limits min_distance, max_force), ``options`` (its keys, e.g. ``engine="openmm"``) given on top.
    ``steps`` or ``time``; ``trajectory`` (.dcd, .xtc, .traj, .extxyz) and ``log`` (CSV) are written atomically,
    every ``report_every`` steps; ``keep_positions`` keeps the frames' positions in the result (for analysis).

    A committee model's largest per-atom force disagreement is recorded per frame (``result.max_forces_std``).
    ``uncertainty_threshold`` (eV/angstrom, or a quantity such as "0.1 eV/angstrom"; committees only) flags the
    frames above it; ``stop_on_uncertainty`` stops at the first; ``uncertain_frames`` (.extxyz) receives the
    flagged frames when the run ends (``physml_md.md.uncertainty``); ``result.uncertainty`` sums it up.
    """
    settings = md_settings(settings, **options)
    n_steps = _steps(steps, time, settings.timestep)
    _check_positions(atoms)
    potential = load_model(model, settings.device or "cpu")
    species = ", ".join(potential.metadata["species"])
    check_known_elements(atoms.numbers, potential.metadata["atomic_numbers"], species, "in the structure are")
    watch = watch_for(potential, atoms, uncertainty_threshold, stop_on_uncertainty, uncertain_frames)
    start_atoms = initial_velocities(atoms, settings.temperature, settings.seed, keep_velocities)
    runner = make_engine(settings.engine, start_atoms, potential, settings.ensemble, settings.timestep,
                         settings.temperature, settings.friction, settings.seed, settings.device, settings.platform,
                         settings.backend, settings.periodic)  # fmt: skip
    result = MDResult(settings.engine, settings.ensemble, len(atoms), settings.timestep, settings.temperature, n_steps)
    with Interrupts() as interrupts, contextlib.ExitStack() as stack:
        outputs = _Outputs.open(stack, result, atoms, trajectory, log, keep_positions)
        bar = Progress(n_steps, settings.timestep, progress)
        stack.callback(bar.close)
        start = clock.perf_counter()
        last = _steps_and_frames(runner, result, outputs, settings, interrupts, watch, bar)
        if interrupts.signal_name is not None:
            result.interrupted = interrupts.signal_name
            if last is None:  # nothing recorded: no file is better than an empty one
                outputs.abort(result)
        result.wall_seconds = clock.perf_counter() - start
    if watch is not None:
        if watch.write() is not None:
            result.files["uncertain_frames"] = str(watch.path)
        result.uncertainty = watch.summary()
    result.final_atoms = atoms.copy()
    if last is not None:
        result.final_atoms.positions = last.positions
    return result


@dataclass
class _Outputs:
    """Where a run's frames go besides the result: the trajectory writer and the energy log (each optional), the
    structure's own pbc (a slab is periodic along two axes only; its cell may lack a third vector)."""

    pbc: np.ndarray
    keep_positions: bool
    writer: Any = None
    energy_log: Any = None

    @classmethod
    def open(cls, stack: contextlib.ExitStack, result: MDResult, atoms: Atoms, trajectory, log, keep_positions: bool):
        outputs = cls(atoms.pbc, keep_positions)
        if trajectory is not None:
            outputs.writer = stack.enter_context(TrajectoryWriter(trajectory, atoms.get_chemical_symbols(), atoms.pbc))
            result.files["trajectory"] = str(trajectory)
        if log is not None:
            outputs.energy_log = stack.enter_context(EnergyLog(log))
            result.files["log"] = str(log)
        return outputs

    def abort(self, result: MDResult) -> None:
        """Leave no file (a run interrupted before its first frame)."""
        for name, target in (("trajectory", self.writer), ("log", self.energy_log)):
            if target is not None:
                target.abort()
                del result.files[name]


def _steps_and_frames(runner, result: MDResult, outputs: _Outputs, settings: MDSettings, interrupts, watch, bar):
    """Record a frame every ``report_every`` steps until the run is done, blows up, the uncertainty watch stops it
    or a signal arrives (``interrupts.signal_name``); the last frame recorded (None: none)."""
    last = None
    try:
        with interrupts.armed():
            frame = runner.frame()
        while frame is not None:
            problem = _record(result, frame, last, outputs, settings)
            last = frame
            if problem is not None:
                result.blow_up, result.blow_up_step = problem, frame.step
                break
            if (watch is not None and watch.observe(frame)) or result.steps_done >= result.steps_requested:
                break
            n = min(settings.report_every, result.steps_requested - result.steps_done)
            frame = _advance(runner, n, result, interrupts)
            if frame is not None:
                bar.update(n, frame, result.steps_done)
    except (KeyboardInterrupt, Interrupted):
        interrupts.signal_name = interrupts.signal_name or "SIGINT"
    return last


def _advance(runner, n: int, result: MDResult, interrupts) -> Frame | None:
    """``n`` steps and the frame after them; None when the engine failed (recorded as the run's blow-up)."""
    try:
        with interrupts.armed():
            runner.step(n)
            frame = runner.frame()
    except Exception as exc:  # NaN coordinates in OpenMM, non-finite positions in the model, ...
        if interrupts.signal_name is not None:  # the signal arrived inside OpenMM's Python callback
            raise Interrupted(interrupts.signal_name) from None
        result.steps_done += n
        detail = f"{type(exc).__name__}: {exc}".strip()
        cause = "the timestep may be too long, or the model met a structure it cannot evaluate"
        result.blow_up = BlowUp("engine_error", (), detail=detail, cause=cause)
        result.blow_up_step = result.steps_done
        return None
    result.steps_done += n
    return frame


def _record(
    result: MDResult, frame: Frame, previous: Frame | None, outputs: _Outputs, settings: MDSettings
) -> BlowUp | None:
    """Store and write the frame; the first problem check_frame (its minimum distance computed once), then
    check_progress (against the ``previous`` frame and the first energy) finds in it.

    A blown-up frame is written where the format can store it (XTC holds no coordinate beyond 1e7 angstrom).
    """
    problem = _check(result, frame, previous, outputs.pbc, settings)
    result.times_fs.append(frame.time_fs)
    result.potential_energies.append(frame.potential_energy)
    result.kinetic_energies.append(frame.kinetic_energy)
    result.temperatures_k.append(frame.temperature_k)
    if frame.forces_std is not None:
        result.max_forces_std.append(frame.max_forces_std)
    if outputs.keep_positions:
        result.positions.append(frame.positions)
        result.cells.append(frame.cell)
    if outputs.writer is not None and np.all(np.isfinite(frame.positions)):  # a non-finite frame: reported only
        try:
            outputs.writer.write(frame)
        except ValueError:
            if problem is None:
                raise
    if outputs.energy_log is not None:
        outputs.energy_log.write(frame)
    return problem


def _check(
    result: MDResult, frame: Frame, previous: Frame | None, pbc: np.ndarray, settings: MDSettings
) -> BlowUp | None:
    """The first problem of the frame; the run's closest distance and largest force updated on the way."""
    problem = check_frame(frame.positions, frame.forces, frame.cell, pbc, None, settings.max_force)
    if problem is not None and problem.reason.startswith("non_finite"):
        return problem
    if problem is None:
        reference = result.potential_energies[0] if result.potential_energies else None
        problem = check_progress(
            previous, frame, settings.timestep, settings.temperature, len(frame.positions), reference
        )
    if len(frame.positions) < 2 or (problem is not None and problem.reason == "large_displacement"):
        return problem  # (positions 1e12 angstrom apart have no meaningful closest pair)
    distance, pair = minimum_distance(frame.positions, frame.cell, pbc)
    if distance < result.min_distance:
        result.min_distance, result.min_distance_atoms = distance, tuple(int(i) for i in pair)
    result.max_force = max(result.max_force, metrics_max_force(frame.forces)[0])
    if distance < settings.min_distance:
        return BlowUp("close_contact", tuple(int(i) for i in pair), distance, settings.min_distance)
    return problem
