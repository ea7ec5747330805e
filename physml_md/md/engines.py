"""The MD engines behind ``run_md``: ASE (PhysMLCalculator) and OpenMM (create_system), one interface.

An engine is built from a structure whose momenta are already set, advances ``step(n)`` steps and reports a
``Frame`` (``physml_md.md.frame``) in the package's units (angstrom, eV, fs, kelvin) and in the structure's own
orientation: OpenMM wants its periodic box in a reduced, rotated form (``openmm_box``), so positions and forces are
rotated back.

Integrators. NVE: velocity Verlet in ASE; OpenMM's ``VerletIntegrator`` is leap-frog, whose velocities live
half a step behind the positions, so the OpenMM engine starts from v(-dt/2) = v(0) - a(0) dt/2: both engines
then follow the same trajectory up to rounding. NVT: Langevin (ASE's ``Langevin`` without centre-of-mass
fixing, OpenMM's ``LangevinMiddleIntegrator``), same temperature and friction; their random streams differ.
Temperatures count 3N degrees of freedom in both (ASE's convention; nothing removes the centre-of-mass motion).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import openmm
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet
from openmm import unit

from physml_md.export.torchscript import plain_error
from physml_md.integrations.ase import PhysMLCalculator
from physml_md.integrations.openmm import create_system
from physml_md.integrations.openmm_topology import openmm_box, topology_from_atoms
from physml_md.md.frame import Frame
from physml_md.md.uncertainty import forces_std_of, is_committee
from physml_md.units import ANGSTROM_PER_FS_TO_NM_PER_PS, KJ_PER_MOL_TO_EV, NM_TO_ANGSTROM, PS_TO_FS

__all__ = ["ENGINES", "make_engine"]

ENGINES = ("ase", "openmm")
# angstrom per ASE time unit -> angstrom/fs -> nm/ps
_ASE_VELOCITY_TO_NM_PER_PS = units.fs * ANGSTROM_PER_FS_TO_NM_PER_PS


def _temperature(kinetic_ev: float, n_atoms: int) -> float:
    return 2.0 * kinetic_ev / (3.0 * n_atoms * units.kB)


class ASEEngine:
    """ASE dynamics with PhysMLCalculator."""

    def __init__(self, atoms: Atoms, model, ensemble, timestep_fs, temperature_k, friction_per_fs, seed, device):
        self.atoms = atoms.copy()
        self.atoms.calc = PhysMLCalculator(model, device=device)
        self.timestep_fs = timestep_fs
        self.step_count = 0
        if ensemble == "nve":
            self.dynamics = VelocityVerlet(self.atoms, timestep=timestep_fs * units.fs)
        else:
            self.dynamics = Langevin(
                self.atoms,
                timestep=timestep_fs * units.fs,
                temperature_K=temperature_k,
                friction=friction_per_fs / units.fs,
                fixcm=False,
                rng=np.random.default_rng(seed),
            )

    def step(self, n: int) -> None:
        self.dynamics.run(n)
        self.step_count += n

    def frame(self) -> Frame:
        atoms = self.atoms
        kinetic = float(atoms.get_kinetic_energy())
        return Frame(
            step=self.step_count,
            time_fs=self.step_count * self.timestep_fs,
            positions=atoms.positions.copy(),
            cell=atoms.cell.array.copy() if atoms.pbc.any() else None,
            forces=atoms.get_forces().copy(),
            velocities=atoms.get_velocities() * units.fs,  # angstrom per ASE time unit -> angstrom/fs
            potential_energy=float(atoms.get_potential_energy()),
            kinetic_energy=kinetic,
            temperature_k=_temperature(kinetic, len(atoms)),
            forces_std=atoms.calc.results.get("forces_std"),
        )


class OpenMMEngine:
    """OpenMM dynamics with the potential's force (create_system)."""

    def __init__(
        self,
        atoms: Atoms,
        model,
        ensemble,
        timestep_fs,
        temperature_k,
        friction_per_fs,
        seed,
        device,
        platform,
        backend,
        periodic=None,
    ):
        self.n_atoms = len(atoms)
        self.periodic = bool(atoms.pbc.all())
        self.numbers = atoms.numbers.copy()
        self.committee = model if is_committee(model) else None  # its uncertainty is evaluated per frame
        self.model_periodic = self.periodic if periodic is None else bool(periodic) and self.periodic
        self.rotation = openmm_box(atoms.cell.array)[1] if self.periodic else np.eye(3)
        self.cell = atoms.cell.array.copy() if self.periodic else None
        self.timestep_fs = timestep_fs
        self.step_count = 0
        topology, positions = topology_from_atoms(atoms)
        system = create_system(
            topology, model, backend=backend, remove_cm_motion=False, device=device, periodic=periodic
        )
        self.masses = atoms.get_masses()  # the structure's masses (OpenMM's element table differs by ~1e-5)
        for i, mass in enumerate(self.masses):
            system.setParticleMass(i, float(mass))
        self.leapfrog = ensemble == "nve"
        timestep = timestep_fs * unit.femtosecond
        if ensemble == "nve":
            self.integrator = openmm.VerletIntegrator(timestep)
        else:
            friction = friction_per_fs * PS_TO_FS / unit.picosecond  # 1/fs * fs/ps = 1/ps
            self.integrator = openmm.LangevinMiddleIntegrator(temperature_k * unit.kelvin, friction, timestep)
            self.integrator.setRandomNumberSeed(int(seed) % 2**31 or 1)
        if platform is None:
            platform = "CUDA" if device is not None and str(device).startswith("cuda") else "CPU"
        self.context = openmm.Context(system, self.integrator, openmm.Platform.getPlatformByName(platform))
        self.context.setPositions(positions * unit.nanometer)
        velocities = atoms.get_velocities() * _ASE_VELOCITY_TO_NM_PER_PS @ self.rotation.T
        if ensemble == "nve":  # leap-frog: velocities half a step behind the positions
            with _plain_model_errors(start=True):
                forces = self.context.getState(getForces=True).getForces(asNumpy=True)
            forces = np.asarray(forces.value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
            accelerations = forces / self.masses[:, None]  # kJ/mol/nm/dalton = nm/ps^2
            velocities = velocities - accelerations * (timestep_fs / PS_TO_FS) / 2.0
        self.context.setVelocities(velocities * unit.nanometer / unit.picosecond)

    def step(self, n: int) -> None:
        with _plain_model_errors():
            self.integrator.step(n)
        self.step_count += n

    def frame(self) -> Frame:
        with _plain_model_errors(start=self.step_count == 0):
            state = self.context.getState(getPositions=True, getVelocities=True, getForces=True, getEnergy=True)
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * NM_TO_ANGSTROM
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom)
        velocities = np.asarray(state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
        if self.leapfrog:  # kinetic energy at the positions' time: v(t) = v(t - dt/2) + a(t) dt/2
            accelerations = np.asarray(forces) * NM_TO_ANGSTROM / self.masses[:, None]  # kJ/mol/nm/dalton = nm/ps^2
            velocities = velocities + accelerations * (self.timestep_fs / PS_TO_FS) / 2.0
            kinetic = 0.5 * float(np.sum(self.masses[:, None] * velocities**2)) * KJ_PER_MOL_TO_EV
        else:
            kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL_TO_EV
        positions = np.asarray(positions) @ self.rotation
        forces_std = None
        if self.committee is not None:  # OpenMM moves with the mean force; the spread comes from one more call
            cell = self.cell if self.model_periodic else None
            forces_std = forces_std_of(self.committee, positions, self.numbers, cell, [self.model_periodic] * 3)
        return Frame(
            step=self.step_count,
            time_fs=self.step_count * self.timestep_fs,
            positions=positions,
            cell=None if self.cell is None else self.cell.copy(),
            forces=np.asarray(forces) * KJ_PER_MOL_TO_EV @ self.rotation,
            velocities=velocities / ANGSTROM_PER_FS_TO_NM_PER_PS @ self.rotation,
            potential_energy=state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL_TO_EV,
            kinetic_energy=kinetic,
            temperature_k=_temperature(kinetic, self.n_atoms),
            forces_std=forces_std,
        )


@contextlib.contextmanager
def _plain_model_errors(start: bool = False) -> Iterator[None]:
    """An error the model raised inside OpenMM arrives as an OpenMMException carrying the model's TorchScript trace
    (or, from OpenMM's PythonForce, the model's sentence alone): raise the model's own ValueError instead.

    ``start``: the starting structure is being evaluated (the first forces, before any step), so OpenMM's error is
    about the structure the user gave: a ValueError with OpenMM's message, whatever its form."""
    try:
        yield
    except openmm.OpenMMException as exc:
        plain = plain_error(exc)
        if plain is not None:
            raise plain from None
        if start:
            raise ValueError(str(exc).strip()) from None
        raise


def make_engine(
    engine: str,
    atoms: Atoms,
    model,
    ensemble: str,
    timestep_fs: float,
    temperature_k: float,
    friction_per_fs: float,
    seed: int,
    device: str | None = None,
    platform: str | None = None,
    backend: str = "auto",
    periodic: bool | None = None,
):
    """An engine ("ase" or "openmm") running ``ensemble`` ("nve" or "nvt") from the atoms' positions and momenta.
    ``periodic`` (OpenMM only; ASE follows ``atoms.pbc``): evaluate the model periodic or not, None from the model
    and the box (see ``create_system``)."""
    if engine == "ase":
        return ASEEngine(atoms, model, ensemble, timestep_fs, temperature_k, friction_per_fs, seed, device or "cpu")
    if engine == "openmm":
        return OpenMMEngine(
            atoms, model, ensemble, timestep_fs, temperature_k, friction_per_fs, seed, device, platform, backend,
            periodic,
        )  # fmt: skip
    raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
