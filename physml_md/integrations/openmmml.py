"""openmm-ml plugin: ``MLPotential("physml", modelPath="model.pt")``.

    from openmmml import MLPotential
    potential = MLPotential("physml", modelPath="model.pt")
    system = potential.createSystem(topology)                                 # the potential alone
    system = potential.createMixedSystem(topology, mm_system, ligand_atoms)   # ML/MM, mechanical embedding

Registered through the entry point group "openmmml.potentials" (name "physml", see pyproject.toml), which
openmm-ml reads when it is imported. Keyword arguments of createSystem / createMixedSystem that this plugin
reads: ``backend`` ("auto", the default, "torchforce", "pythonforce", "pythontorchforce"), ``periodic``, ``charge`` and
``device``; see ``physml_md.integrations.openmm.create_force``.

Importing this module must stay cheap and must not fail: openmm-ml loads it whenever it is imported.
"""

from __future__ import annotations

from typing import Iterable

from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

__all__ = ["PhysMLPotentialImpl", "PhysMLPotentialImplFactory"]

# createMixedSystem options that openmm-ml's embeddings read themselves and pass on to addForces
_EMBEDDING_ARGS = ("linkAtomDistances",)
_OWN_ARGS = ("backend", "periodic", "charge", "device")


def _copyable_backend(backend: str) -> str:
    """A backend whose force survives ``copy.deepcopy``: copying a TorchForce kills the process with openmm-torch
    1.5 (a segmentation fault in its deserialiser, seen beside torch 2.9.1, even for a one-line module)."""
    from physml_md.integrations.openmm import available_backends, resolve_backend

    if resolve_backend(backend) != "torchforce":
        return backend
    if backend == "torchforce":
        raise ValueError(
            "createMixedSystem(interpolate=True) copies the ML force, and copying an openmm-torch TorchForce "
            "crashes the process (openmm-torch 1.5): use backend='pythonforce' (or 'auto', which takes it here)"
        )
    return next(name for name in available_backends() if name != "torchforce")


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
        from physml_md.export import load_model

        self.model_path = model_path
        self.model = load_model(model_path)  # fail here, with the file's own message, not at createSystem

    def getMLLongRange(self) -> bool:  # noqa: N802 (openmm-ml API)
        """The potential is local: every term, the optional Coulomb one included, ends at the cut-off."""
        return False

    def addForces(  # noqa: N802 (openmm-ml API)
        self,
        topology,
        system,
        atoms: Iterable[int] | None,
        forceGroup: int,
        **args,  # noqa: N803
    ) -> None:
        from physml_md.integrations.openmm import create_force, force_periodicity, topology_numbers

        unknown = sorted(set(args) - set(_OWN_ARGS) - set(_EMBEDDING_ARGS))
        if unknown:
            raise ValueError(f"unknown argument(s) {unknown} for the physml potential; it reads {', '.join(_OWN_ARGS)}")
        particles = None if atoms is None else [int(i) for i in atoms]
        indices = range(topology.getNumAtoms()) if particles is None else particles
        system_periodic = topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions()
        periodic, unwrap = force_periodicity(self.model, system_periodic, args.get("periodic"), whole=atoms is None)
        backend = args.get("backend", "auto")
        n_particles = system.getNumParticles()
        if n_particles == 0:
            # openmm-ml's interpolation (createMixedSystem(interpolate=True)) hands an empty System and copies its
            # forces (copy.deepcopy) into a CustomCVForce of the real one: the topology counts the particles
            n_particles = topology.getNumAtoms()
            backend = _copyable_backend(backend)
        force = create_force(
            self.model,
            topology_numbers(topology, indices),
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
