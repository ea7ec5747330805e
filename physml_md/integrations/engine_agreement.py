"""``export_model``, the one way physml-md writes an exported file: ``export_potential`` (the file against the
model) with the engines' rows as its ``engines=`` hook (the export layer cannot import them): the file through
the ASE calculator and each OpenMM backend that loads here, whose units, input handling and (TorchForce) C++
execution it checks. About 2.5 s per export (a small PaiNN, on 2 busy cores).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

import numpy as np
import torch
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from physml_md.atomic_write import PathLike
from physml_md.data.structures import dict_to_atoms
from physml_md.export import ExportedPotential, export_potential, load_potential, resolve_format
from physml_md.export.agreement import (
    AGREEMENT_TOLERANCE,
    agreement_inputs,
    builtin_structures,
    check_agreement,
    evaluate_all,
    largest_differences,
)
from physml_md.integrations.ase import ExtrapolationWarning, PhysMLCalculator
from physml_md.integrations.openmm import available_backends, create_force
from physml_md.models import Potential
from physml_md.units import KJ_PER_MOL_TO_EV, NM_TO_ANGSTROM


def _ase_outputs(exported: ExportedPotential, structures: Sequence[Atoms]) -> List[Dict[str, torch.Tensor]]:
    calc = PhysMLCalculator(exported)
    outputs = []
    for atoms in structures:
        with warnings.catch_warnings():  # the check's own structures may be closer than the training data's
            warnings.simplefilter("ignore", ExtrapolationWarning)
            result = calc.calculate_batch([atoms])[0]
        out = {
            "energy": torch.tensor([result["energy"]], dtype=torch.float64),
            "forces": torch.as_tensor(result["forces"]),
        }
        if "stress" in result:
            out["stress"] = torch.as_tensor(voigt_6_to_full_3x3_stress(result["stress"])).unsqueeze(0)
        outputs.append(out)
    return outputs


def _openmm_box(atoms: Atoms) -> np.ndarray | None:
    """The cell in nm when OpenMM can take it as a periodic box (all three directions periodic, reduced form:
    a along x, b in the xy plane, |b_x| <= a_x / 2, |c_x| <= a_x / 2, |c_y| <= b_y / 2), else None."""
    if not atoms.pbc.all():
        return None
    a, b, c = atoms.cell.array
    reduced = a[1] == a[2] == b[2] == 0.0 and abs(b[0]) <= a[0] / 2 and abs(c[0]) <= a[0] / 2 and abs(c[1]) <= b[1] / 2
    return atoms.cell.array / NM_TO_ANGSTROM if reduced else None


def _openmm_outputs(exported: ExportedPotential, backend: str, structures: Sequence[Atoms]) -> List[Dict[str, Any]]:
    """Energy and forces of each structure (a molecule, or a fully periodic cell in reduced form) in OpenMM."""
    import openmm  # (a dependency, but slow to import: only when exporting)
    from openmm import unit

    outputs = []
    for atoms in structures:
        box = _openmm_box(atoms)
        if atoms.pbc.any() and box is None:
            raise ValueError(f"OpenMM cannot hold the cell {atoms.cell.array.tolist()} (see _openmm_box)")
        system = openmm.System()
        for _ in atoms:
            system.addParticle(1.0)
        if box is not None:
            system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) * unit.nanometer for row in box))
        system.addForce(create_force(exported, atoms.numbers.tolist(), periodic=box is not None, backend=backend))
        platform = openmm.Platform.getPlatformByName("Reference")
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
        context.setPositions(atoms.positions / NM_TO_ANGSTROM * unit.nanometer)
        state = context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL_TO_EV
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        forces = np.asarray(forces) * KJ_PER_MOL_TO_EV / NM_TO_ANGSTROM
        outputs.append({"energy": torch.tensor([energy], dtype=torch.float64), "forces": torch.as_tensor(forces)})
    return outputs


def engine_agreement(path: PathLike, name: PathLike | None = None) -> Dict[str, Dict[str, float]]:
    """{"<engine> vs file": largest relative differences} for the ASE calculator and each OpenMM backend that
    loads here; an ``AgreementError`` (naming ``name``, default ``path``) over the tolerance of the file's dtype.
    Always on the built-in structures (a cluster and a sheared periodic cell every engine can hold), so every
    file has the same rows and cost whatever data it was trained on."""
    path = Path(path)
    exported = load_potential(path)
    dtype = exported.dtype
    tolerance = AGREEMENT_TOLERANCE[exported.metadata["dtype"]]
    inputs = agreement_inputs(builtin_structures(exported.atomic_numbers, exported.cutoff, dtype), dtype, "cpu")
    reference = evaluate_all(exported, inputs)
    atoms = [dict_to_atoms(data) for data in inputs]
    rows = {"ase": largest_differences(_ase_outputs(exported, atoms), reference)}
    for backend in available_backends():
        if backend == "torchforce" and exported.format != "torchscript":
            continue
        rows[f"openmm {backend}"] = largest_differences(_openmm_outputs(exported, backend, atoms), reference)
    for engine, differences in rows.items():
        check_agreement(
            f"the {engine} engine and the file",
            differences,
            tolerance,
            name or path,
            f"{engine} does not run this file faithfully here (the file was not written)",
        )
    return {f"{engine} vs file": differences for engine, differences in rows.items()}


def export_model(
    model: Potential,
    path: PathLike,
    metadata: Dict[str, Any] | None = None,
    dtype: Union[str, torch.dtype, None] = None,
    format: str | None = None,
    structures: Sequence[Dict[str, torch.Tensor]] | None = None,
) -> Path:
    """``export_potential`` (same arguments) with the engines' rows (``engine_agreement``) in the agreement
    report, checked before the file takes its name; a metatomic file is checked through metatomic by
    ``export_potential`` instead (physml-md's engines do not load it)."""
    engines = None if resolve_format(format, Path(path)) == "metatomic" else engine_agreement
    return export_potential(model, path, metadata, dtype=dtype, format=format, structures=structures, engines=engines)
