"""Run an exported potential in OpenMM: ``create_force`` (also the ML region of ``openmmml.create_mixed_system``)
and ``create_system`` (the potential drives everything).

Backends (all run ``OpenMMModule``, so they agree to rounding): "torchforce" (openmm-torch's TorchForce, C++;
extra ``physml-md[torchforce]``: openmm-torch 1.5, only beside torch 2.9.x), "pythonforce" (OpenMM's built-in
PythonForce, any torch), "pythontorchforce" (openmm-torch after 1.5), "auto" (the first of those that loads
here, logged at INFO). ``periodic=None`` follows the topology, checked against the model's metadata "periodic".
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import numpy as np
import openmm
import torch

from physml_md.data.elements import check_known_elements
from physml_md.export import ExportedPotential, format_file, load_model, torchscript
from physml_md.export.torchscript import model_errors
from physml_md.integrations.openmm_torch import OpenMMModule

__all__ = [
    "BACKENDS",
    "TORCHFORCE_INSTALL",
    "available_backends",
    "create_force",
    "create_system",
    "force_periodicity",
    "resolve_backend",
    "topology_numbers",
]

logger = logging.getLogger(__name__)

BACKENDS = ("torchforce", "pythonforce", "pythontorchforce", "auto")
TORCHFORCE_INSTALL = "pip install 'physml-md[torchforce]'"


# ----------------------------------------------------------------------------------------------- backends
_OPENMMTORCH_FAILURE: List[str] = []  # why openmmtorch did not import, if it did not


@functools.cache
def _openmmtorch():
    """openmmtorch (None when it cannot load), with its plugins loaded again: they fail when ``import openmm``
    ran before torch was imported (they need torch's libraries), which leaves TorchForce without kernels."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # openmmtorch imports simtk.openmm, which logs a deprecation line on import
    try:
        import openmmtorch
    except ImportError as exc:  # not installed, or built for another torch (torch 2.14: "libnvrtc.so.12: cannot open")
        _OPENMMTORCH_FAILURE.append(str(exc))
        return None
    finally:
        logging.disable(previous)
    plugins = os.path.join(openmm.version.openmm_library_path, "plugins")
    for failure in openmm.Platform.getPluginLoadFailures():
        path = failure.removeprefix("Error loading library ").split(":")[0]
        if os.path.dirname(path) == plugins and os.path.basename(path).startswith("libOpenMMTorch"):
            try:
                openmm.Platform.loadPluginLibrary(path)
            except Exception:  # a platform this machine cannot run (OpenCL without a driver): nothing to do
                pass
    return openmmtorch


def available_backends() -> List[str]:
    """The backends the installed packages offer, in the order "auto" tries them."""
    openmmtorch = _openmmtorch()
    names = []
    if openmmtorch is not None:
        names.append("torchforce")
        if hasattr(openmmtorch, "PythonTorchForce"):
            names.append("pythontorchforce")
    names.append("pythonforce")
    return names


def resolve_backend(backend: str = "auto") -> str:
    """The concrete backend that ``backend`` means here; ValueError, naming the fix, for one not available."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    available = available_backends()
    if backend == "auto":
        return available[0]
    if backend not in available:
        fix = {
            "torchforce": (
                f"openmm-torch does not load beside torch {torch.__version__} "
                f"({_OPENMMTORCH_FAILURE[-1] if _OPENMMTORCH_FAILURE else 'not installed'}): "
                f"{TORCHFORCE_INSTALL} (it brings openmm-torch and the torch 2.9.x it needs), "
                "or use backend='pythonforce'"
            ),
            "pythontorchforce": "it needs an openmm-torch newer than 1.5; use backend='torchforce' or 'pythonforce'",
        }[backend]
        raise ValueError(f"backend {backend!r} is not available here: {fix}")
    return backend


class _Computation:
    """The PythonForce / PythonTorchForce callback: OpenMM State (and positions) -> energy, forces. Picklable
    (for XmlSerializer) when the model came from a file, which is loaded again on unpickling."""

    def __init__(self, module: OpenMMModule, model_path: str | None, spec: Dict[str, Any], device: torch.device):
        self.module = module
        self.model_path = model_path
        self.spec = spec
        self.device = device

    def _run(self, positions: torch.Tensor, box: torch.Tensor | None) -> Tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode(False), torch.enable_grad(), model_errors():  # the model's own ValueError
            return self.module(positions, box)

    def _box(self, state) -> torch.Tensor | None:
        if not self.module.periodic and not self.module.unwrap:
            return None
        return torch.as_tensor(np.asarray(state.getPeriodicBoxVectors(asNumpy=True)._value), dtype=torch.float64)

    def __call__(self, state, positions: torch.Tensor | None = None):
        if positions is None:  # PythonForce: positions from the state, numpy out
            positions = torch.as_tensor(np.asarray(state.getPositions(asNumpy=True)._value))
            energy, forces = self._run(positions, self._box(state))
            return float(energy), forces.to("cpu", torch.float64).numpy()
        energy, forces = self._run(positions, self._box(state))  # PythonTorchForce: tensors in and out
        return energy, forces.to(positions.dtype)

    def __getstate__(self):
        if self.model_path is None:
            raise TypeError(
                "this force's model was not loaded from a file, so it cannot be pickled or serialised: "
                "export the model and pass the file's path to create_force"
            )
        return {"model_path": self.model_path, "spec": self.spec, "device": str(self.device)}

    def __setstate__(self, state):
        exported = load_model(state["model_path"], state["device"])
        self.__init__(
            OpenMMModule(exported.module, **state["spec"]),
            state["model_path"],
            state["spec"],
            torch.device(state["device"]),
        )


# ----------------------------------------------------------------------------------------------- create_force
def _usable_backend(backend: str, exported: ExportedPotential) -> str:
    """The concrete backend for ``exported``: TorchForce runs TorchScript only ("auto" then takes the next)."""
    chosen = resolve_backend(backend)
    if exported.format != "torchscript" and chosen == "torchforce":
        if backend == "torchforce":
            raise ValueError(
                f"TorchForce runs TorchScript files only, and this model is {format_file(exported.format)}: use "
                "backend='pythonforce' (or 'auto'), or export the model as TorchScript (.pt) for TorchForce"
            )
        chosen = [name for name in available_backends() if name != "torchforce"][0]
    if backend == "auto":
        logger.info("OpenMM backend 'auto' chose %r (available here: %s)", chosen, ", ".join(available_backends()))
    return chosen


def _checked_particles(particles: Sequence[int] | None, atomic_numbers: List[int]) -> List[int] | None:
    if particles is None:
        return None
    particles = [int(i) for i in particles]
    if len(particles) != len(atomic_numbers):
        raise ValueError(
            f"{len(particles)} particles but {len(atomic_numbers)} atomic numbers: give one atomic number "
            "per ML particle, in the same order"
        )
    if len(set(particles)) != len(particles) or min(particles, default=0) < 0:
        raise ValueError("particles must be distinct, non-negative particle indices")
    return particles


def _model_periodicity(exported: ExportedPotential, periodic: bool | None) -> bool:
    if periodic is None:
        periodic = exported.metadata.get("periodic")
        if periodic is None:
            raise ValueError(
                "this model was trained on periodic and non-periodic structures (or its file does not say "
                "which): pass periodic=True or periodic=False"
            )
    return bool(periodic)


def _torch_force(exported: ExportedPotential, particles: List[int] | None, n_particles: int | None, spec: dict):
    """openmm-torch's TorchForce running the scripted wrapper in OpenMM's C++."""
    if particles is not None:
        if n_particles is None:
            raise ValueError("TorchForce needs n_particles (the System's particle count) with particles=")
        if max(particles) >= n_particles:
            raise ValueError(f"particle index {max(particles)} is out of range for {n_particles} particles")
    wrapper = OpenMMModule(exported.module, particles=particles, n_particles=n_particles or 0, **spec)
    force = _openmmtorch().TorchForce(torchscript.script(wrapper.to("cpu")))
    force.setOutputsForces(True)
    return force


def _python_force(exported: ExportedPotential, backend: str, particles, spec: dict, device: torch.device):
    """OpenMM's PythonForce (or openmm-torch's PythonTorchForce) calling the wrapper in Python."""
    wrapper = OpenMMModule(exported.module, **spec).to(device)
    path = str(exported.path) if exported.path is not None and exported.path.suffix in (".pt", ".pt2") else None
    computation = _Computation(wrapper, path, spec, device)
    if backend == "pythonforce":
        force = openmm.PythonForce(computation)
    else:
        force = _openmmtorch().PythonTorchForce(computation)
    if particles is not None:
        force.setParticles(particles)
    return force


def create_force(
    model,
    atomic_numbers: Sequence[int],
    particles: Sequence[int] | None = None,
    periodic: bool | None = None,
    backend: str = "auto",
    *,
    unwrap: bool = False,
    n_particles: int | None = None,
    charge: float = 0.0,
    device: str | None = None,
    force_group: int = 0,
):
    """An OpenMM force that applies the potential (a file, checkpoint, ``Potential`` or ``ExportedPotential``) to
    ``particles`` (None: all), whose ``atomic_numbers`` are given in that order.

    periodic: evaluate in OpenMM's box (None: the model's metadata). unwrap: with periodic=False in a periodic
    system, make the particles one whole cluster first. n_particles: the System's (TorchForce with particles).
    charge: total charge in e (charge-head models). device: of the Python backends (TorchForce: OpenMM's platform).
    """
    resolve_backend(backend)  # an unknown or missing backend is the first error
    if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device; use device='cpu'")
    torch_device = torch.device(device or "cpu")
    exported = load_model(model, torch_device)
    backend = _usable_backend(backend, exported)
    atomic_numbers = [int(z) for z in atomic_numbers]
    species = ", ".join(exported.metadata["species"])
    other = "leave those atoms out of the ML region"
    check_known_elements(atomic_numbers, exported.atomic_numbers, species, "in the system are", other)
    periodic = _model_periodicity(exported, periodic)
    particles = _checked_particles(particles, atomic_numbers)
    spec = {
        "atomic_numbers": atomic_numbers,
        "dtype": exported.dtype,
        "periodic": periodic,
        "unwrap": bool(unwrap),
        "total_charge": float(charge) if "charges" in exported.metadata.get("outputs", []) else None,
    }
    if backend == "torchforce":
        force = _torch_force(exported, particles, n_particles, spec)
    else:
        force = _python_force(exported, backend, particles, spec, torch_device)
    force.setUsesPeriodicBoundaryConditions(periodic or bool(unwrap))
    force.setForceGroup(force_group)
    force.setName("physml-md")
    return force


# ----------------------------------------------------------------------------------------------- systems
def topology_numbers(topology, atoms: Iterable[int]) -> List[int]:
    """Atomic numbers of the topology's ``atoms`` (each must have an element)."""
    all_atoms = list(topology.atoms())
    numbers = []
    for index in atoms:
        atom = all_atoms[index]
        if atom.element is None:
            raise ValueError(
                f"atom {index} ({atom.name} in residue {atom.residue.name}) has no element (a virtual site or "
                "an unknown atom): it cannot be in the ML region"
            )
        numbers.append(int(atom.element.atomic_number))
    return numbers


def force_periodicity(
    exported: ExportedPotential, system_periodic: bool, periodic: bool | None, whole: bool
) -> Tuple[bool, bool]:
    """(periodic, unwrap) for the potential's force; periodic: the caller's choice or None. whole: the potential
    drives the whole system (refuse a model trained only on the other kind of structure), not an ML region."""
    value = exported.metadata.get("periodic")
    trained = None if value is None else bool(value)
    if periodic is None:
        if trained is True and not system_periodic:
            raise ValueError(
                "this model was trained on periodic structures only, but the system has no periodic box: set "
                "one (topology.setPeriodicBoxVectors(...)), or pass periodic=False (physml-md md/validate: "
                "--no-periodic) to evaluate it on an isolated cluster anyway"
            )
        if whole and trained is False and system_periodic:
            raise ValueError(
                "this model was trained on non-periodic structures only, but the topology has a periodic box: "
                "remove the box (topology.setPeriodicBoxVectors(None)), or pass periodic=False (physml-md "
                "md/validate: --no-periodic) to compute the system as one isolated cluster inside the box"
            )
        periodic = system_periodic and trained is not False
    elif periodic and not system_periodic:
        raise ValueError("periodic=True but the system has no periodic box: set topology.setPeriodicBoxVectors")
    return bool(periodic), bool(system_periodic and not periodic)


def create_system(
    topology,
    model,
    periodic: bool | None = None,
    backend: str = "auto",
    *,
    remove_cm_motion: bool = True,
    charge: float = 0.0,
    device: str | None = None,
):
    """A System in which the potential drives every particle (elements, masses and box from ``topology``).
    periodic: None follows the box (``force_periodicity``); False: isolated (one whole cluster in a box)."""
    exported = load_model(model, torch.device(device or "cpu"))
    box = topology.getPeriodicBoxVectors()
    periodic, unwrap = force_periodicity(exported, box is not None, periodic, whole=True)
    numbers = topology_numbers(topology, range(topology.getNumAtoms()))
    system = openmm.System()
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*box)
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(
        create_force(exported, numbers, None, periodic, backend, unwrap=unwrap, charge=charge, device=device)
    )
    if remove_cm_motion:
        system.addForce(openmm.CMMotionRemover())
    return system
