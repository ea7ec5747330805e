"""The engines' rows of an exported file's agreement report: the file through the ASE calculator and through each
OpenMM backend that loads here, against the file itself.

    add_engine_agreement("model.pt")          # evaluates, checks, and rewrites the file's metadata

``physml_md.export.export_potential`` measures the file against the model it came from (eager); it cannot reach
the engines (the integrations read the exported file, not the reverse), so this step runs after it, where
everything is wired (the command line). The engines add unit conversions (nm, kJ/mol), their own input
handling (ASE's Voigt stress, OpenMM's box) and, for TorchForce, C++ execution: a row per engine shows each
gives the file's numbers.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from physml_md.atomic_write import PathLike
from physml_md.export import load_potential, read_metadata, replace_metadata
from physml_md.export.agreement import (
    AGREEMENT_TOLERANCE,
    agreement_inputs,
    builtin_structures,
    check_agreement,
    largest_differences,
)
from physml_md.integrations.ase import ExtrapolationWarning, PhysMLCalculator
from physml_md.units import KJ_PER_MOL_TO_EV, NM_TO_ANGSTROM

__all__ = ["engine_agreement", "add_engine_agreement"]


def _atoms(data: Dict[str, torch.Tensor]) -> Atoms:
    return Atoms(
        numbers=data["atomic_numbers"].cpu().numpy(),
        positions=data["positions"].detach().to("cpu", torch.float64).numpy(),
        cell=data["cell"].detach().to("cpu", torch.float64).numpy().reshape(3, 3),
        pbc=data["pbc"].cpu().numpy().reshape(3),
    )


def _ase_outputs(path: Path, structures: Sequence[Atoms]) -> List[Dict[str, torch.Tensor]]:
    calc = PhysMLCalculator(path)
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


def _openmm_outputs(path: Path, backend: str, structures: Sequence[Atoms]):
    """(index, outputs) of the structures OpenMM can hold (molecules, and fully periodic cells in reduced form)."""
    import openmm
    from openmm import unit

    from physml_md.integrations.openmm import create_force

    outputs = []
    for index, atoms in enumerate(structures):
        box = _openmm_box(atoms)
        if atoms.pbc.any() and box is None:
            continue
        system = openmm.System()
        for _ in atoms:
            system.addParticle(1.0)
        if box is not None:
            system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) * unit.nanometer for row in box))
        system.addForce(create_force(path, atoms.numbers.tolist(), periodic=box is not None, backend=backend))
        platform = openmm.Platform.getPlatformByName("Reference")
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
        context.setPositions(atoms.positions / NM_TO_ANGSTROM * unit.nanometer)
        state = context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL_TO_EV
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        forces = np.asarray(forces) * KJ_PER_MOL_TO_EV / NM_TO_ANGSTROM
        outputs.append(
            (index, {"energy": torch.tensor([energy], dtype=torch.float64), "forces": torch.as_tensor(forces)})
        )
    return outputs


def engine_agreement(
    path: PathLike, structures: Sequence[Dict[str, torch.Tensor]] | None = None
) -> Dict[str, Dict[str, float]]:
    """{engine: largest relative differences against the file} for the ASE calculator and each OpenMM backend
    that loads here (``available_backends``); an ``AgreementError`` over the tolerance of the file's dtype.

    structures: structure dicts (the first ``MAX_AGREEMENT_STRUCTURES``), else ``builtin_structures``.
    """
    path = Path(path)
    exported = load_potential(path)
    dtype = exported.dtype
    tolerance = AGREEMENT_TOLERANCE[exported.metadata["dtype"]]
    inputs = agreement_inputs(
        structures or builtin_structures(exported.atomic_numbers, exported.cutoff, dtype), dtype, torch.device("cpu")
    )
    with torch.inference_mode(False), torch.enable_grad():
        reference = [{k: v.detach() for k, v in exported(dict(data)).items()} for data in inputs]
    atoms = [_atoms(data) for data in inputs]
    rows = {"ase": largest_differences(_ase_outputs(path, atoms), reference)}
    try:
        from physml_md.integrations.openmm import available_backends
    except ImportError:  # OpenMM is not installed: no OpenMM rows
        backends = []
    else:
        backends = available_backends()
    for backend in backends:
        if backend == "torchforce" and exported.format != "torchscript":
            continue
        pairs = _openmm_outputs(path, backend, atoms)
        if pairs:
            rows[f"openmm {backend}"] = largest_differences([out for _, out in pairs], [reference[i] for i, _ in pairs])
    for name, differences in rows.items():
        check_agreement(
            f"the {name} engine and the file",
            differences,
            tolerance,
            path,
            f"{name} does not run this file faithfully here (the file itself is unchanged)",
        )
    return rows


def add_engine_agreement(path: PathLike, structures: Sequence[Dict[str, torch.Tensor]] | None = None) -> Dict:
    """``engine_agreement`` of the exported file, added to its metadata's agreement report (the file is rewritten
    in place, atomically); returns the report."""
    metadata: Dict[str, Any] = read_metadata(path)
    rows = engine_agreement(path, structures)
    report = metadata.setdefault("agreement", {"differences": {}})
    report.setdefault("differences", {}).update({f"{name} vs file": values for name, values in rows.items()})
    replace_metadata(path, metadata)
    return report
