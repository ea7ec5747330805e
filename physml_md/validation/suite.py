"""Does the potential survive MD? ``validate`` runs NVT then NVE and judges the runs, criterion by criterion.

    report = validate("model.pt", "structures.extxyz", reference="reference_md.extxyz", out="validation/")
    report.passed, report.criteria

The suite, on one structure of ``structures``:
1. NVT (Langevin) for ``nvt_steps``: no blow-up (``runner``), and a mean temperature after the first 20 % within
   ``temperature_relative`` of the target (the potential does not heat or freeze the system by itself).
2. NVE (velocity Verlet) for ``nve_steps`` from the last NVT positions, fresh velocities: stable, and the total
   energy drifts (linear fit) by at most ``drift`` meV/atom/ps.
3. With a ``reference`` (trajectory or dataset ``read_trajectory`` reads), the NVT frames after the first 20 %:
   g(r) for periodic systems (``rdf_difference``), else bond-length and dihedral distributions over the starting
   structure's bonds (``jensen_shannon``, 30 bins: two runs of one potential stay near 0.005 bits).

Default thresholds (``DEFAULT_THRESHOLDS``): drift 1 meV/atom/ps (what well-trained potentials reach in float64 with
0.5 fs steps; a rough energy surface drifts by tens), temperature 10 % (mean) and a factor 2 (spread); the others
are explained where they are defined (``blowups.check_frame``, ``structure.compare_distributions``, ``criteria``).

``out`` receives report.json (written last), nvt.csv, nve.csv, nvt.extxyz, energy.png and structure.png, each
atomically; with ``model`` an exported file, ``<model>.validation.json`` beside it receives the report's summary.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from ase import Atoms

from physml_md.atomic_write import PathLike, atomic_write_text
from physml_md.config.md import DEFAULT_MAX_FORCE, DEFAULT_MIN_DISTANCE, MDSettings, md_settings
from physml_md.export import load_model
from physml_md.md.geometry import half_width
from physml_md.md.io.writing import read_trajectory
from physml_md.md.runner import MDResult, run_md
from physml_md.md.uncertainty import watch_for
from physml_md.validation import metrics, plots, structure
from physml_md.validation.criteria import (
    CLOSEST_CONTACT,
    Criterion,
    extrapolation_criterion,
    training_distances,
    uncertainty_criterion,
)

__all__ = ["DEFAULT_THRESHOLDS", "Criterion", "ValidationReport", "validate"]

DEFAULT_THRESHOLDS: Dict[str, float] = {
    "drift": 1.0,  # |NVE drift| in meV/atom/ps
    "temperature_relative": 0.1,  # |<T> - T_target| / T_target
    "temperature_spread": 1.0,  # |log2(std(T) / canonical std)|: within a factor of 2
    "min_distance": DEFAULT_MIN_DISTANCE,  # angstrom, also the blow-up criterion of the runs
    "max_force": DEFAULT_MAX_FORCE,  # eV/angstrom, also the blow-up criterion of the runs
    "rdf_difference": structure.DEFAULT_THRESHOLDS["rdf_difference"],
    "jensen_shannon": structure.DEFAULT_THRESHOLDS["jensen_shannon"],
    "max_forces_std": 0.2,  # eV/angstrom, committees only: the largest per-atom force std along the runs
    "closest_contact": CLOSEST_CONTACT,  # closest contact / the training data's (criteria.extrapolation_criterion)
}
SKIP_FRACTION = 0.2  # of the NVT frames, discarded as equilibration
VALIDATION_FRICTION = "5 / ps"  # the NVT run's Langevin friction unless the settings give one
DISTRIBUTION_BINS = 30


@dataclass
class ValidationReport:
    criteria: List[Criterion]
    runs: Dict[str, Dict[str, Any]]
    settings: Dict[str, Any]
    notes: List[str] = field(default_factory=list)
    files: Dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    def summary(self) -> Dict[str, Any]:
        """Pass/fail and the value of each criterion (what is stored beside the model)."""
        return {
            "passed": self.passed,
            "criteria": {
                c.name: {"value": c.value, "threshold": c.threshold, "passed": c.passed} for c in self.criteria
            },
            "settings": self.settings,
        }

    def to_dict(self) -> Dict[str, Any]:
        return {"passed": self.passed, **dataclasses.asdict(self), "criteria": [c.to_dict() for c in self.criteria]}

    def format(self) -> str:
        lines = [f"MD validation: {'PASSED' if self.passed else 'FAILED'}"]
        lines += ["  " + c.message for c in self.criteria]
        lines += ["  note: " + note for note in self.notes]
        return "\n".join(lines)


def _structure(structures, index: int) -> Atoms:
    if isinstance(structures, Atoms):
        return structures
    if isinstance(structures, (str, Path)):
        from ase.io import read

        return read(structures, index=index)
    structures = list(structures)
    if not structures:
        raise ValueError("no structures to start MD from")
    return structures[index]


def _stability(name: str, run: MDResult) -> Criterion:
    if run.stable:
        return Criterion(f"{name} stable", 1.0, 1.0, True, relation=">=", detail=f"{run.steps_done} steps")
    detail = f"blew up at step {run.blow_up_step} of {run.steps_requested}: {run.blow_up.message}"
    return Criterion(f"{name} stable", 0.0, 1.0, False, relation=">=", detail=detail)


def _production(run: MDResult) -> slice:
    return slice(int(len(run.times_fs) * SKIP_FRACTION), None)


def _structure_criteria(nvt: MDResult, atoms: Atoms, reference, thresholds, out: Path | None, files):
    """Criteria (and a plot) comparing the NVT frames with the reference trajectory or dataset."""
    reference_data = read_trajectory(reference)
    if list(reference_data.symbols) != atoms.get_chemical_symbols():
        raise ValueError(
            f"the reference {reference} holds {len(reference_data.symbols)} atoms "
            f"({''.join(sorted(set(reference_data.symbols)))}), not the validated structure's {len(atoms)} "
            f"({atoms.get_chemical_formula()}): give a reference trajectory of the same system, atoms in the same order"
        )
    frames = np.asarray(nvt.positions[_production(nvt)])
    symbols = atoms.get_chemical_symbols()
    criteria = []
    if atoms.pbc.all():
        cell = atoms.cell.array
        ref_cells = reference_data.cells if reference_data.cells is not None else None
        if ref_cells is None:
            raise ValueError(f"the reference {reference} has no cell; a periodic structure needs a periodic reference")
        r_max = min(half_width(np.asarray([cell])), half_width(np.asarray(ref_cells)))
        sample = structure.radial_distribution(frames, cell, symbols, r_range=(0.0, r_max))
        ref = structure.radial_distribution(reference_data.positions, ref_cells, symbols, r_range=(0.0, r_max))
        result = structure.compare_distributions(ref, sample, threshold=thresholds["rdf_difference"], name="g(r)")
        criteria.append(Criterion("rdf_difference", result.value, result.threshold, result.passed, "", "<="))
        if out is not None:
            plot = plots.rdf_plot(out / "structure.png", ref.r, ref.g, sample.g, "g(r), all pairs")
            files["structure_plot"] = str(plot)
        return criteria
    bonds = structure.bonds_from_positions(symbols, atoms.positions)  # the bonds of the starting structure
    if len(bonds) == 0:
        return [Criterion("bond lengths", None, thresholds["jensen_shannon"], False, detail="no bonds found")]
    panels = []
    comparisons = [("bond lengths", structure.bond_length_distribution, bonds, "angstrom")]
    dihedrals = structure.dihedrals_from_bonds(len(atoms), bonds)
    if len(dihedrals):
        comparisons.append(("dihedrals", structure.dihedral_distribution, dihedrals, "degree"))
    for name, distribution, terms, unit in comparisons:
        ref = distribution(reference_data.positions, terms, bins=DISTRIBUTION_BINS)
        sample = distribution(frames, terms, bins=ref.edges)
        result = structure.compare_distributions(ref, sample, threshold=thresholds["jensen_shannon"], name=name)
        criteria.append(
            Criterion(f"{name} (jensen_shannon)", result.value, result.threshold, result.passed, "bits", "<=")
        )
        panels.append((name, unit, ref.edges, ref.probabilities, sample.probabilities))
    if out is not None:
        files["structure_plot"] = str(plots.distributions_plot(out / "structure.png", panels))
    return criteria


def validate(
    model,
    structures,
    reference=None,
    settings: MDSettings | None = None,
    *,
    nvt_steps: int = 2000,
    nve_steps: int = 1000,
    index: int = 0,
    out: PathLike | None = None,
    thresholds: Dict[str, float] | None = None,
    progress: bool = False,
    **options,
) -> ValidationReport:
    """Run the MD validation suite (see the module docstring) and, with ``out``, write the report directory.

    ``settings`` (``physml_md.config.md.MDSettings``; its friction defaults to ``VALIDATION_FRICTION`` here) with
    ``options`` (its keys, e.g. ``engine="openmm"``) on top are the runs' settings; ``thresholds`` may set the blow-up
    limits min_distance and max_force too. For molecules, give long runs: the dihedral distributions of a 1 ps run
    differ from a reference by more than the 0.02-bit threshold even for the reference potential itself (see
    examples/ethanol_xtb/run.py).
    """
    settings, limits = _settings(settings, thresholds or {}, options)
    atoms = _structure(structures, index)
    model_given, model = model, load_model(model, settings.device or "cpu")  # once for both runs
    if "max_forces_std" in (thresholds or {}):  # md's check: a threshold on a single potential could never fail
        watch_for(model, atoms, limits["max_forces_std"], False, None)
    out = None if out is None else Path(out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    nvt = run_md(model, atoms, settings, ensemble="nvt", steps=nvt_steps, log=_in(out, "nvt.csv"),
                 trajectory=_in(out, "nvt.extxyz"), progress=progress)  # fmt: skip
    criteria, runs, notes = [_stability("NVT", nvt)], {"nvt": nvt.summary()}, []
    report = ValidationReport(criteria, runs, {}, notes, {f"nvt_{k}": v for k, v in nvt.files.items()})
    nve, drift = None, None
    if nvt.stable:
        criteria += _temperature_criteria(nvt, runs["nvt"], limits, len(atoms))
        nve = run_md(model, nvt.final_atoms, settings, ensemble="nve", steps=nve_steps, seed=settings.seed + 1,
                     log=_in(out, "nve.csv"), progress=progress)  # fmt: skip
        drift = _nve_criteria(nve, report, limits, len(atoms))
    else:
        notes.append("NVE was not run: the NVT run blew up")
    criteria += _run_criteria([run for run in (nvt, nve) if run is not None], model_given, atoms, limits)
    if reference is None:
        notes.append("no reference trajectory given: structure (g(r) or bond/dihedral distributions) not compared")
    elif not nvt.stable or len(nvt.positions[_production(nvt)]) < 2:
        notes.append("structure not compared: the NVT run has too few frames")
    else:
        criteria += _structure_criteria(nvt, atoms, reference, limits, out, report.files)
    report.settings = {
        **settings.model_dump(include={"engine", "friction", "seed"}),
        **{"temperature_k": settings.temperature, "timestep_fs": settings.timestep},
        **{"nvt_steps": nvt_steps, "nve_steps": nve_steps, "structure_index": index, "thresholds": limits},
        "reference": None if reference is None else str(reference),
        "model": str(model_given) if isinstance(model_given, (str, Path)) else type(model_given).__name__,
    }
    if out is not None:
        _write(report, out, model_given, nvt, nve, drift, atoms, settings.temperature)
    return report


def _in(out: Path | None, name: str) -> Path | None:
    return None if out is None else out / name


def _settings(settings: MDSettings | None, thresholds: Dict[str, float], options) -> tuple:
    """The runs' settings (the blow-up limits from ``thresholds`` when set there) and every criterion's limit."""
    unknown = sorted(set(thresholds) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ValueError(f"unknown threshold(s) {unknown}; known: {', '.join(DEFAULT_THRESHOLDS)}")
    blowup = {key: thresholds[key] for key in ("min_distance", "max_force") if key in thresholds}
    given = settings is not None and "friction" in settings.model_fields_set
    friction = {} if given else {"friction": VALIDATION_FRICTION}
    settings = md_settings(settings, **{**friction, **options, **blowup})
    limits = {**DEFAULT_THRESHOLDS, **thresholds}
    limits.update(min_distance=settings.min_distance, max_force=settings.max_force)
    if not 0.0 < limits["closest_contact"] < float("inf"):
        raise ValueError(
            f"the closest_contact threshold is a positive fraction of the training data's shortest distance (default "
            f"{CLOSEST_CONTACT:g}), got {limits['closest_contact']}"
        )
    return settings, limits


def _temperature_criteria(nvt: MDResult, summary: Dict[str, Any], limits, n_atoms: int) -> List[Criterion]:
    """The NVT run's mean temperature and its spread against the canonical one."""
    target = nvt.target_temperature_k
    stats = metrics.temperature_statistics(nvt.temperatures_k, target, SKIP_FRACTION, n_atoms=n_atoms)
    summary["temperature"] = stats.to_dict()
    relative = abs(stats.relative_deviation) if target > 0 else abs(stats.mean_k)
    tolerance = limits["temperature_relative"]
    criteria = [
        Criterion("NVT mean temperature (relative deviation)", relative, tolerance, relative <= tolerance,
                  detail=f"mean {stats.mean_k:.1f} K, std {stats.std_k:.1f} K, target {target:g} K")
    ]  # fmt: skip
    if stats.std_ratio is not None and stats.std_ratio > 0:
        spread = abs(float(np.log2(stats.std_ratio)))
        criteria.append(
            Criterion("NVT temperature spread |log2(std / canonical std)|", spread, limits["temperature_spread"],
                      spread <= limits["temperature_spread"],
                      detail=f"std {stats.std_k:.1f} K, canonical sqrt(2/(3N)) T = {stats.expected_std_k:.1f} K")
        )  # fmt: skip
    return criteria


def _nve_criteria(nve: MDResult, report: ValidationReport, limits, n_atoms: int):
    """The NVE run's stability and energy drift, added to ``report``; the drift (None when not measured)."""
    report.runs["nve"] = nve.summary()
    report.files.update({f"nve_{k}": v for k, v in nve.files.items()})
    report.criteria.append(_stability("NVE", nve))
    if not (nve.stable and len(nve.times_fs) >= 3):
        return None
    drift = metrics.energy_drift(nve.times_fs, nve.total_energies, n_atoms)
    report.runs["nve"]["drift"] = drift.to_dict()
    value = abs(drift.drift_mev_per_atom_per_ps)
    report.criteria.append(
        Criterion("NVE energy drift", value, limits["drift"], value <= limits["drift"], "meV/atom/ps")
    )
    return drift


def _run_criteria(runs: List[MDResult], model, atoms: Atoms, limits) -> List[Criterion]:
    """Closest distance and largest force over the runs; the extrapolation and uncertainty criteria when they
    apply (training distances in the model, a committee)."""
    closest = min(run.min_distance for run in runs)
    largest = max(run.max_force for run in runs)
    criteria = [
        Criterion("minimum interatomic distance", closest, limits["min_distance"], closest >= limits["min_distance"],
                  "angstrom", ">="),
        Criterion("maximum force", largest, limits["max_force"], largest <= limits["max_force"], "eV/angstrom"),
    ]  # fmt: skip
    shortest = training_distances(model)
    if shortest:
        criteria.append(extrapolation_criterion(shortest, runs, atoms, limits["closest_contact"]))
    uncertain = uncertainty_criterion(runs, limits["max_forces_std"])
    if uncertain is not None:
        criteria.append(uncertain)
    return criteria


def _write(report: ValidationReport, out: Path, model, nvt: MDResult, nve, drift, atoms: Atoms, target: float):
    report.files["energy_plot"] = str(
        plots.energy_plot(
            out / "energy.png",
            nvt.times_fs,
            nvt.potential_energies,
            nvt.temperatures_k,
            target,
            [] if nve is None else nve.times_fs,
            [] if nve is None else nve.total_energies,
            0.0 if drift is None else drift.drift_mev_per_atom_per_ps,
            len(atoms),
        )
    )
    report.files["report"] = str(out / "report.json")
    if isinstance(model, (str, Path)) and Path(model).suffix in (".pt", ".pt2"):
        beside = Path(model).with_suffix(".validation.json")
        report.files["model_summary"] = str(beside)
        atomic_write_text(beside, json.dumps(report.summary(), indent=2))
    atomic_write_text(out / "report.json", json.dumps(report.to_dict(), indent=2))
