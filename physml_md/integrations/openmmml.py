"""ML/MM through openmm-ml: the plugin ``MLPotential("physml", modelPath="model.pt")`` and ``create_mixed_system``.

    from openmmml import MLPotential
    potential = MLPotential("physml", modelPath="model.pt")
    system = potential.createSystem(topology)                                 # the potential alone
    system = potential.createMixedSystem(topology, mm_system, ligand_atoms)   # ML/MM, mechanical embedding
    system = create_mixed_system(topology, mm_system, ligand_atoms, "model.pt")  # the same, checked first

Registered as the "openmmml.potentials" entry point "physml" (pyproject.toml); importing this module must stay
cheap and must not fail: openmm-ml loads it whenever it is imported. createSystem / createMixedSystem take
``backend``, ``periodic``, ``charge`` and ``device`` (``physml_md.integrations.openmm.create_force``).
"""

from __future__ import annotations

from typing import Iterable

try:
    from openmmml.mlpotential import MLPotential, MLPotentialImpl, MLPotentialImplFactory
except ImportError as error:  # openmm-ml is an optional dependency
    raise ImportError(
        "physml_md.integrations.openmmml (ML/MM, the openmm-ml plugin) needs openmm-ml: "
        "pip install 'physml-md[openmmml]'"
    ) from error

__all__ = ["PhysMLPotentialImpl", "PhysMLPotentialImplFactory", "create_mixed_system"]

# createMixedSystem options that openmm-ml's embeddings read themselves and pass on to addForces
_EMBEDDING_ARGS = ("linkAtomDistances",)
_OWN_ARGS = ("backend", "periodic", "charge", "device")

# Forces whose interactions inside the ML region cannot be switched off term by term (openmm-ml would keep them).
_UNSPLITTABLE_FORCES = frozenset(
    "GBSAOBCForce CustomGBForce CustomHbondForce CustomManyParticleForce AmoebaMultipoleForce AmoebaVdwForce "
    "AmoebaGeneralizedKirkwoodForce HippoNonbondedForce".split()
)


def _engine():
    """physml_md.integrations.openmm, imported on first use: ``import openmmml`` must not pay for torch."""
    from physml_md.integrations import openmm

    return openmm


def _copyable_backend(backend: str) -> str:
    """A backend whose force survives ``copy.deepcopy``: copying a TorchForce kills the process with openmm-torch
    1.5 (a segmentation fault in its deserialiser, seen beside torch 2.9.1, even for a one-line module)."""
    if _engine().resolve_backend(backend) != "torchforce":
        return backend
    if backend == "torchforce":
        raise ValueError(
            "createMixedSystem(interpolate=True) copies the ML force, and copying an openmm-torch TorchForce "
            "crashes the process (openmm-torch 1.5): use backend='pythonforce' (or 'auto', which takes it here)"
        )
    return next(name for name in _engine().available_backends() if name != "torchforce")


class PhysMLPotentialImplFactory(MLPotentialImplFactory):
    """Creates ``PhysMLPotentialImpl`` objects for ``MLPotential("physml", modelPath=...)``."""

    def createImpl(self, name: str, modelPath=None, **args) -> MLPotentialImpl:  # noqa: N802, N803 (openmm-ml API)
        if modelPath is None:
            raise ValueError(
                'MLPotential("physml") needs modelPath: the exported model file (physml-md export CKPT model.pt) '
                "or a training checkpoint"
            )
        if args:
            raise ValueError(f"unknown argument(s) {sorted(args)} for MLPotential('physml'); it takes modelPath")
        return PhysMLPotentialImpl(modelPath)


class PhysMLPotentialImpl(MLPotentialImpl):
    """Adds a physml-md force for a topology (all atoms, or the ML region of a mixed system)."""

    def __init__(self, model_path):
        self.model_path = model_path
        self.model = _engine().load_model(model_path)  # fail here, with the file's own message, not at createSystem

    def getMLLongRange(self) -> bool:  # noqa: N802 (openmm-ml API)
        """The potential is local: every term, the optional Coulomb one included, ends at the cut-off."""
        return False

    def addForces(self, topology, system, atoms: Iterable[int] | None, forceGroup: int, **args) -> None:  # noqa: N802, N803
        engine = _engine()
        unknown = sorted(set(args) - set(_OWN_ARGS) - set(_EMBEDDING_ARGS))
        if unknown:
            raise ValueError(f"unknown argument(s) {unknown} for the physml potential; it reads {', '.join(_OWN_ARGS)}")
        particles = None if atoms is None else [int(i) for i in atoms]
        indices = range(topology.getNumAtoms()) if particles is None else particles
        system_periodic = topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions()
        whole = atoms is None
        periodic, unwrap = engine.force_periodicity(self.model, system_periodic, args.get("periodic"), whole=whole)
        backend = args.get("backend", "auto")
        n_particles = system.getNumParticles()
        if n_particles == 0:
            # openmm-ml's interpolation (createMixedSystem(interpolate=True)) hands an empty System and copies its
            # forces (copy.deepcopy) into a CustomCVForce of the real one: the topology counts the particles
            n_particles = topology.getNumAtoms()
            backend = _copyable_backend(backend)
        force = engine.create_force(
            self.model,
            engine.topology_numbers(topology, indices),
            particles=particles,
            periodic=periodic,
            backend=backend,
            unwrap=unwrap,
            n_particles=n_particles,
            charge=args.get("charge", 0.0),
            device=args.get("device"),
            force_group=forceGroup,
        )
        system.addForce(force)


def _check_region(topology, mm_system, ml_atoms: Iterable[int]) -> list:
    """``ml_atoms`` as a list of ints, after one clear error for a region or an MM system ML/MM cannot use."""
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
    unsplittable = sorted({f.__class__.__name__ for f in mm_system.getForces()} & _UNSPLITTABLE_FORCES)
    if unsplittable:
        raise ValueError(
            f"the MM system has {', '.join(unsplittable)}, whose interactions inside the ML region cannot be "
            "removed term by term: build the MM system without it (explicit solvent, fixed-charge force field)"
        )
    return ml_atoms


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
    """Mechanical ML/MM: a copy of ``mm_system`` (not modified) in which the potential computes the ML region.

    openmm-ml's ``createMixedSystem`` after the region and the MM forces are checked: inside the region MM bonded
    terms are removed, nonbonded ones excluded and (remove_constraints) constraints dropped; a bond cut by the
    region gets openmm-ml's link atom. periodic: None evaluates a model trained on molecules as an isolated
    cluster (made whole across the box), one trained on bulk in the system's box.
    """
    ml_atoms = _check_region(topology, mm_system, ml_atoms)
    potential = MLPotential("physml", modelPath=model)
    options = {"backend": backend, "periodic": periodic, "charge": charge, "device": device}
    return potential.createMixedSystem(
        topology, mm_system, ml_atoms, removeConstraints=remove_constraints, forceGroup=force_group, **options
    )
