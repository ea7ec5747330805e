"""Shared pieces of the OpenMM tests: backends, contexts, energies in ASE units, methanol in water."""

from pathlib import Path

import numpy as np
import openmm
import pytest
from ase.build import molecule
from openmm import app, unit

from physml_md.integrations.openmm import BACKENDS, available_backends
from physml_md.integrations.openmm_topology import topology_from_atoms
from physml_md.units import EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL

PLATFORMS = ("Reference", "CPU")
METHANOL_XML = Path(__file__).parent / "data" / "methanol.xml"

# every concrete backend; those the installed packages lack are skipped, not silently dropped
BACKEND_PARAMS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(name not in available_backends(), reason=f"{name} is not in the installed packages"),
    )
    for name in BACKENDS
    if name != "auto"
]


def make_context(system, positions_nm, platform="Reference", integrator=None):
    context = openmm.Context(
        system, integrator or openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName(platform)
    )
    context.setPositions(positions_nm * unit.nanometer if isinstance(positions_nm, np.ndarray) else positions_nm)
    return context


def energy_forces(context, groups=-1):
    """(energy in eV, forces in eV/angstrom) of the context's current state."""
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_TO_KJ_PER_MOL
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy, np.asarray(forces) / EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM


def bonds_by_distance(atoms, scale=1.25):
    """Covalent bonds of a small molecule (H 0.31, C 0.76, N 0.71, O 0.66 angstrom radii)."""
    radii = {1: 0.31, 6: 0.76, 7: 0.71, 8: 0.66}
    distances = atoms.get_all_distances()
    n = len(atoms)
    return [
        (i, j)
        for i in range(n)
        for j in range(i)
        if distances[i, j] < scale * (radii[atoms.numbers[i]] + radii[atoms.numbers[j]])
    ]


def methanol(seed=0):
    atoms = molecule("CH3OH")
    atoms.positions += np.random.default_rng(seed).normal(scale=0.03, size=atoms.positions.shape)
    return atoms


def methanol_in_water(padding_nm=0.9, seed=0):
    """(topology, positions, forcefield, methanol atom indices): methanol solvated in TIP3P by Modeller."""
    atoms = methanol(seed)
    topology, positions = topology_from_atoms(atoms, residue_name="MOH", bonds=bonds_by_distance(atoms))
    forcefield = app.ForceField("amber14/tip3p.xml", str(METHANOL_XML))
    modeller = app.Modeller(topology, positions * unit.nanometer)
    modeller.addSolvent(forcefield, model="tip3p", padding=padding_nm * unit.nanometer)
    ml_atoms = [atom.index for atom in modeller.topology.atoms() if atom.residue.name == "MOH"]
    return modeller.topology, modeller.positions, forcefield, ml_atoms
