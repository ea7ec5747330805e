"""``MDSettings``: how an MD run goes, once for ``run_md``, ``validate``, ``[training.md_validation]``,
``[learning]`` and the md / validate options. Quantities may carry units ("0.5 fs", "1/ps"); bare numbers are
internal units (fs, K, 1/fs, angstrom, eV/angstrom). Blow-up limits' reasons: ``physml_md.md.blowups``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from physml_md.config.types import Force, Frequency, Length, Section, Temperature, Time, validate

__all__ = ["DEFAULT_MAX_FORCE", "DEFAULT_MIN_DISTANCE", "MDSettings", "md_settings", "settings_from_args"]

DEFAULT_MIN_DISTANCE: float = 0.5  # angstrom
DEFAULT_MAX_FORCE: float = 100.0  # eV/angstrom


class MDSettings(Section):
    """The engine, thermostat, time step, reporting, blow-up limits and OpenMM options of an MD run."""

    engine: Literal["ase", "openmm"] = Field("ase", description="MD engine")
    ensemble: Literal["nve", "nvt"] = Field(
        "nvt", description='"nve" (velocity Verlet) or "nvt" (Langevin thermostat at the temperature)'
    )
    temperature: Temperature = Field(
        "300 K", validate_default=True, description="temperature of the initial velocities and of the thermostat"
    )
    timestep: Time = Field("0.5 fs", validate_default=True, gt=0.0, description="MD time step")
    friction: Frequency = Field("1 / ps", validate_default=True, description="Langevin friction of the thermostat")
    report_every: int = Field(10, ge=1, description="steps between recorded frames (and blow-up checks)")
    seed: int = Field(0, ge=0, description="seed of the initial velocities and of the thermostat")
    min_distance: Length = Field(
        DEFAULT_MIN_DISTANCE, description="blow-up when two atoms come closer than this (angstrom)"
    )
    max_force: Force = Field(DEFAULT_MAX_FORCE, description="blow-up when a force exceeds this (eV/angstrom)")
    device: str | None = Field(None, description='where the model runs: "cpu" or "cuda"; unset: cpu')
    platform: str | None = Field(None, description="OpenMM platform; unset: CPU, or CUDA with device cuda")
    backend: str = Field(
        "auto",
        description="OpenMM backend: torchforce, pythonforce, pythontorchforce or auto (torchforce where openmm-torch "
        "loads, else pythonforce)",
    )
    periodic: bool | None = Field(
        None,
        description="OpenMM: evaluate the model in the periodic box (true) or as an isolated system (false); unset: "
        "from the model and the structure (the ASE engine follows the structure's pbc)",
    )


def md_settings(base: MDSettings | None = None, **options: Any) -> MDSettings:
    """``MDSettings`` from ``base`` (any section that extends it; only its MD keys are taken) with ``options``
    given on top, validated: one ``ConfigError`` (a ``ValueError``) naming each wrong key. An option of None
    keeps the base's value (or the default)."""
    given = {} if base is None else base.model_dump(include=set(MDSettings.model_fields), exclude_none=True)
    given.update({key: value for key, value in options.items() if value is not None})
    return validate(MDSettings, given)


def settings_from_args(args: Any) -> MDSettings:
    """``MDSettings`` from a command line's parsed arguments (those named as its keys; unset ones: defaults)."""
    return md_settings(**{name: getattr(args, name, None) for name in MDSettings.model_fields})
