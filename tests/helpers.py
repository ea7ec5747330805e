"""Reusable test helpers: tolerances keyed by dtype, rotations, and a minimal ASE calculator over a module.

The calculator here only exists so that ASE's own finite-difference tools (ase.calculators.fd) can be
pointed at a bare model in tests; the product's calculator is physml_md.integrations.ase.
"""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from physml_md.data.structures import LabelKeys, atoms_to_dict
from physml_md.models import build_model


def requires_cuda(test):
    """Mark a test as needing a CUDA device (``-m gpu`` selects every such test: scripts/gpu_check.sh) and skip
    it, with the reason, where torch sees none."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
    return pytest.mark.gpu(skip(test))


# the elements and cutoff (angstrom) of the small models of the model tests (ethanol, Cu and Cu/Al structures)
SPECIES = ["H", "C", "O", "Al", "Cu"]
CUTOFF = 4.0

# relative tolerances for claims of exactness (agreement of two paths that should be equal)
EXACT = {torch.float32: 5e-5, torch.float64: 1e-12}
# relative tolerances for symmetry claims (equivariance/invariance), as in e3nn's tests
SYMMETRY = {torch.float32: 1e-3, torch.float64: 1e-9}


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation matrix (det +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def small_model(arch: str = "painn", dtype=torch.float64, **kwargs):
    """A model over SPECIES with CUTOFF, in eval mode; ``kwargs`` go to build_model (width, depth, priors)."""
    return build_model(arch, species=SPECIES, cutoff=CUTOFF, dtype=dtype, **kwargs).eval()


EXPORT_SPECIES = ["H", "C", "O", "Cu"]
EXPORT_SELF_ENERGIES = {1: -13.6, 6: -1029.0, 8: -2040.0, 29: -0.5}


def export_model(arch: str, seed: int = 0):
    """The model the export tests write (every format): EXPORT_SPECIES, 4.5 angstrom, 16 features, 2
    interactions, ZBL and EXPORT_SELF_ENERGIES, weights from ``seed`` (a committee's members differ), eval mode."""
    torch.manual_seed(seed)
    return build_model(
        arch,
        species=EXPORT_SPECIES,
        cutoff=4.5,
        features=16,
        n_interactions=2,
        zbl=True,
        self_energies=EXPORT_SELF_ENERGIES,
        seed=seed,
    ).eval()


def random_cu_model():
    """A Cu PaiNN with random weights (seed 2): nothing keeps two Cu atoms apart, so MD with it blows up."""
    return build_model(species=["Cu"], cutoff=4.0, features=16, n_interactions=2, seed=2)


def rattled_cu(seed: int = 0):
    """32 fcc Cu atoms (a = 3.61 angstrom, cubic cell 2x2x2), rattled by 0.02 angstrom."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.02, seed=seed)
    return atoms


def triclinic_cu3oh():
    """Cu3OH in a triclinic periodic cell (5.0, 4.7, 5.4 angstrom vectors, no right angle)."""
    return Atoms(
        "Cu3OH",
        cell=[[5.0, 0.0, 0.0], [1.2, 4.6, 0.0], [0.7, 0.9, 5.3]],
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.1], [0.1, 0.5, 0.5], [0.5, 0.05, 0.5], [0.7, 0.7, 0.75]],
        pbc=True,
    )


NO_LABELS = LabelKeys(energy=None, forces=None, stress=None, charges=None, total_charge=None, dipole=None)


def inputs(atoms, dtype=torch.float64):
    """The model's input dict for one ASE structure (a batch of one), without labels."""
    return atoms_to_dict(atoms, NO_LABELS, dtype)


def assert_close(actual, expected, rtol, what=""):
    """max |a - b| <= rtol * max(1, max |b|): relative to the scale of the expected values."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    error = float(np.abs(actual - expected).max(initial=0.0))
    assert error <= rtol * scale, f"{what}: max error {error:.3e} > {rtol:.1e} * {scale:.3e}"


class ModuleCalculator(Calculator):
    """Energy, forces and (periodic) Voigt stress from a physml-md module, for ASE's test tools."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, module, dtype=torch.float64):
        super().__init__()
        self.module = module
        self.dtype = dtype

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        out = self.module(inputs(self.atoms, self.dtype))
        energy = float(out["energy"][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["energies"].detach().numpy().astype(np.float64),
            "forces": out["forces"].detach().numpy().astype(np.float64),
        }
        if "stress" in out:
            s = out["stress"][0].detach().numpy().astype(np.float64)
            self.results["stress"] = s.flat[[0, 4, 8, 5, 2, 1]]


def assert_matches_finite_differences(atoms, module, rtol=1e-6):
    """Forces (and stress when periodic) of ``module`` on ``atoms`` against ASE's central differences.

    Relative to the largest component; returns the analytic forces.
    """
    atoms.calc = ModuleCalculator(module)
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=1e-4)
    error = np.abs(forces - numerical).max() / np.abs(forces).max()
    assert error <= rtol, f"forces vs central finite differences: relative error {error:.2e}"
    if atoms.pbc.all():
        stress = atoms.get_stress()
        numerical = calculate_numerical_stress(atoms, eps=1e-5)
        error = np.abs(stress - numerical).max() / np.abs(stress).max()
        assert error <= rtol, f"stress vs central finite differences: relative error {error:.2e}"
    return forces


def load_script(path):
    """Import a script (e.g. examples/cu_emt/make_data.py) as a module by its path."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PicklePayload:
    """Unpickling this object would create the marker directory (it never must)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))
