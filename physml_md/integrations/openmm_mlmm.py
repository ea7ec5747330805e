"""Mechanical ML/MM in OpenMM: the exported potential computes the ML region of an MM system.

    system = create_mixed_system(topology, mm_system, ligand_atoms, "model.pt")

Inside the region the MM bonded terms are removed and the MM nonbonded interactions excluded; the potential's
force (``physml_md.integrations.openmm.create_force``, any backend) computes it, and the MM force field still
couples the region to the rest. A model trained on molecules computes its region as an isolated cluster (made
whole across the box boundary), so a molecule in a box of water gets exactly its gas-phase ML energy.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Iterable, List

import torch

from physml_md.export import load_model
from physml_md.integrations.openmm import create_force, force_periodicity, topology_numbers

__all__ = ["create_mixed_system"]


# Bonded force types whose terms are dropped when all their particles lie in the ML region (XML tag names).
_BONDED_FORCES = (
    "HarmonicBondForce",
    "HarmonicAngleForce",
    "PeriodicTorsionForce",
    "RBTorsionForce",
    "CMAPTorsionForce",
    "CustomBondForce",
    "CustomAngleForce",
    "CustomTorsionForce",
    "CustomCompoundBondForce",
)

# Forces whose interactions inside the ML region cannot be switched off term by term.
_UNSPLITTABLE_FORCES = (
    "GBSAOBCForce",
    "CustomGBForce",
    "CustomHbondForce",
    "CustomManyParticleForce",
    "AmoebaMultipoleForce",
    "AmoebaVdwForce",
    "AmoebaGeneralizedKirkwoodForce",
    "HippoNonbondedForce",
)


def _remove_bonded_terms(system, region: set):
    """A copy of ``system`` without the bonded terms whose particles all lie in ``region``."""
    import openmm

    root = ET.fromstring(openmm.XmlSerializer.serialize(system))
    for force in root.iter("Force"):
        if force.get("type") not in _BONDED_FORCES:
            continue
        index_keys = re.compile(r"[ab][1-4]" if force.get("type") == "CMAPTorsionForce" else r"p\d+")
        for terms in force:
            doomed = []
            for term in terms:
                indices = [int(v) for k, v in term.attrib.items() if index_keys.fullmatch(k)]
                if indices and all(i in region for i in indices):
                    doomed.append(term)
            for term in doomed:
                terms.remove(term)
    return openmm.XmlSerializer.deserialize(ET.tostring(root, encoding="unicode"))


def _exclude_region(system, ml_atoms: List[int]) -> None:
    """No MM nonbonded interaction between two ML particles (the potential computes them)."""
    import openmm

    pairs = [(a, b) for i, a in enumerate(ml_atoms) for b in ml_atoms[:i]]
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            for a, b in pairs:
                force.addException(a, b, 0.0, 1.0, 0.0, True)
        elif isinstance(force, openmm.CustomNonbondedForce):
            existing = {tuple(sorted(force.getExclusionParticles(i))) for i in range(force.getNumExclusions())}
            for a, b in pairs:
                if tuple(sorted((a, b))) not in existing:
                    force.addExclusion(a, b)


def create_mixed_system(
    topology,
    mm_system,
    ml_atoms: Iterable[int],
    model,
    periodic: bool | None = None,
    backend: str = "auto",
    *,
    remove_constraints: bool = True,
    charge: float = 0.0,
    device: str | None = None,
    force_group: int = 0,
):
    """Mechanical ML/MM: a copy of ``mm_system`` in which the potential computes the ML region.

    Inside the region the MM bonded terms (bonds, angles, torsions, CMAP and their custom forms) are removed,
    the MM nonbonded interactions are excluded and (remove_constraints) constraints are dropped; the MM force
    field still couples the region to the rest. periodic: None evaluates a model trained on molecules as an
    isolated cluster (made whole across the box), a model trained on bulk in the system's box.
    ``mm_system`` is not modified.
    """
    ml_atoms = [int(i) for i in ml_atoms]
    if not ml_atoms:
        raise ValueError("ml_atoms is empty: give the indices of the atoms the potential should compute")
    if len(set(ml_atoms)) != len(ml_atoms):
        raise ValueError("ml_atoms holds duplicate indices")
    n = mm_system.getNumParticles()
    if topology.getNumAtoms() != n:
        raise ValueError(f"the topology has {topology.getNumAtoms()} atoms but the system {n} particles")
    if min(ml_atoms) < 0 or max(ml_atoms) >= n:
        raise ValueError(f"ml_atoms must be particle indices in 0..{n - 1}")
    unsplittable = sorted({f.__class__.__name__ for f in mm_system.getForces()} & set(_UNSPLITTABLE_FORCES))
    if unsplittable:
        raise ValueError(
            f"the MM system has {', '.join(unsplittable)}, whose interactions inside the ML region cannot be "
            "removed term by term: build the MM system without it (explicit solvent, fixed-charge force field)"
        )
    exported = load_model(model, torch.device(device or "cpu"))
    numbers = topology_numbers(topology, ml_atoms)
    periodic, unwrap = force_periodicity(exported, mm_system.usesPeriodicBoundaryConditions(), periodic, whole=False)
    region = set(ml_atoms)
    system = _remove_bonded_terms(mm_system, region)
    _exclude_region(system, ml_atoms)
    if remove_constraints:
        doomed = [i for i in range(system.getNumConstraints()) if set(system.getConstraintParameters(i)[:2]) <= region]
        for i in reversed(doomed):
            system.removeConstraint(i)
    system.addForce(
        create_force(
            exported,
            numbers,
            particles=ml_atoms,
            periodic=periodic,
            backend=backend,
            unwrap=unwrap,
            n_particles=n,
            charge=charge,
            device=device,
            force_group=force_group,
        )
    )
    return system
