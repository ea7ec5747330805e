"""ML/MM: one ethanol molecule computed by the potential, TIP3P water by the force field, through openmm-ml.

    python examples/ethanol_xtb/run.py        # first: trains the ethanol potential on GFN2-xTB data
    python examples/mlmm/run.py               # 1 ps of ML/MM MD, about a minute on 2 CPU cores
    python examples/mlmm/run.py --model path/to/model.pt --time "0.2 ps"

Ethanol (ase.build.molecule) gets MM parameters from ethanol.xml beside this file (GAFF-like), water from
OpenMM's bundled amber14/tip3p.xml; Modeller adds the water. The conventional system (PME, 0.9 nm cut-off,
rigid water, X-H constraints) becomes a mixed one with the released openmm-ml package:

    MLPotential("physml", modelPath=model).createMixedSystem(topology, mm_system, ethanol_atoms)

(mechanical embedding: the potential computes ethanol's internal energy, the MM charges and Lennard-Jones
parameters couple it to the water). After a short minimisation, Langevin MD at 300 K (0.5 fs steps: the
ethanol hydrogens are no longer constrained). At the end the ML energy of the last frame is checked against
PhysMLCalculator on the same ethanol coordinates, and the ethanol bond lengths are reported. The ML region is
checked after the minimisation and at every reported frame (and when a step fails): a blow-up or a bond stretched
to twice its starting length stops the run with exit status 1 and a sentence saying that the molecule broke apart
(what a poorly trained model does), the files holding the frames up to there.
Outputs under --out (default examples/mlmm/output/): mlmm.dcd + mlmm.pdb, mlmm.csv, summary.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch  # before openmm: openmm-torch's plugins need torch's libraries  # noqa: F401
from ase import Atoms
from ase.build import molecule

from physml_md import PhysMLCalculator
from physml_md.atomic_write import atomic_path, atomic_write_text
from physml_md.integrations.openmm_topology import topology_from_atoms
from physml_md.units import KJ_PER_MOL_TO_EV, parse_quantity

HERE = Path(__file__).resolve().parent
ETHANOL_RUNS = HERE.parent / "ethanol_xtb" / "output"
ML_GROUP = 1
BOND_RADII = {"H": 0.31, "C": 0.76, "O": 0.66}
BROKEN_BOND = 2.0  # a bond stretched beyond twice its starting length: the molecule has broken apart
POOR_MODEL = (
    "the model cannot hold ethanol together (poorly trained, or far from its training data); train it longer or on "
    "more data, and check it with physml-md validate before ML/MM"
)


def default_model() -> Path:
    candidates = sorted(ETHANOL_RUNS.glob("**/checkpoints/model.pt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise SystemExit(
            f"no ethanol model under {ETHANOL_RUNS}: run examples/ethanol_xtb/run.py first (it trains one on "
            "GFN2-xTB data), or pass --model path/to/model.pt"
        )
    return candidates[-1]


def ethanol_bonds(atoms: Atoms) -> list:
    symbols, distances = atoms.get_chemical_symbols(), atoms.get_all_distances()
    return [
        (i, j)
        for i in range(len(atoms))
        for j in range(i)
        if distances[i, j] < 1.25 * (BOND_RADII[symbols[i]] + BOND_RADII[symbols[j]])
    ]


def region_problem(simulation, ml_atoms: list, bonds: list, start_lengths: list) -> str | None:
    """What has gone wrong with the ML region now, in a sentence, or None: a blow-up (``blowups.check_frame``:
    non-finite positions, two atoms closer than 0.5 Å) or a bond of the start stretched past BROKEN_BOND times its
    length (minimum image), i.e. the molecule broke apart: what a poorly trained model does."""
    from openmm import unit

    from physml_md.md.blowups import check_frame

    state = simulation.context.getState(getPositions=True)
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom)
    xyz = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[ml_atoms]
    symbols = molecule("CH3CH2OH").get_chemical_symbols()
    blow_up = check_frame(xyz, cell=box, pbc=True, max_force_threshold=None)
    if blow_up is not None:
        return f"the ML region blew up: {blow_up.message}"
    for (i, j), start in zip(bonds, start_lengths):
        delta = xyz[i] - xyz[j]
        length = float(np.linalg.norm(delta - np.round(delta @ np.linalg.inv(box)) @ box))
        if length > BROKEN_BOND * start:
            return (
                f"the ML region broke apart: the {symbols[i]}{i}-{symbols[j]}{j} bond is {length:.2f} Å long "
                f"({start:.2f} Å at the start)"
            )
    return None


def solvated_ethanol(padding_nm: float):
    """(topology, positions, MM system, ethanol atom indices, ethanol bonds)."""
    from openmm import app, unit

    ethanol = molecule("CH3CH2OH")
    bonds = ethanol_bonds(ethanol)
    topology, positions = topology_from_atoms(ethanol, residue_name="ETH", bonds=bonds)
    forcefield = app.ForceField("amber14/tip3p.xml", str(HERE / "ethanol.xml"))
    modeller = app.Modeller(topology, positions * unit.nanometer)
    modeller.addSolvent(forcefield, model="tip3p", padding=padding_nm * unit.nanometer)
    system = forcefield.createSystem(
        modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, constraints=app.HBonds
    )
    ml_atoms = [atom.index for atom in modeller.topology.atoms() if atom.residue.name == "ETH"]
    return modeller.topology, modeller.positions, system, ml_atoms, bonds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="exported ethanol model (default: the newest ethanol_xtb one)")
    parser.add_argument("--out", default=str(HERE / "output"), help="output folder (default: %(default)s)")
    parser.add_argument("--time", default="1 ps", help="simulated time (default: %(default)s)")
    parser.add_argument("--padding", type=float, default=1.0, help="water padding around ethanol, nm (default 1.0)")
    parser.add_argument("--report-every", type=int, default=100, help="steps between trajectory frames")
    parser.add_argument("--platform", default="CPU", help="OpenMM platform (default: CPU)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--minimise-iterations", type=int, default=200, help="energy minimisation before MD (default 200; 0: none)"
    )
    args = parser.parse_args(argv)
    import openmm
    from openmm import app, unit
    from openmmml import MLPotential

    model = Path(args.model) if args.model else default_model()
    if not model.is_file():
        raise SystemExit(f"{model}: no such model file; pass --model path/to/model.pt (physml-md export writes one)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timestep_fs = 0.5
    steps = int(round(parse_quantity(args.time, "time", "--time") / timestep_fs))

    print(f"[1/3] Ethanol in TIP3P water (padding {args.padding} nm); model {model}", flush=True)
    topology, positions, mm_system, ml_atoms, bonds = solvated_ethanol(args.padding)
    potential = MLPotential("physml", modelPath=str(model))
    system = potential.createMixedSystem(topology, mm_system, ml_atoms, forceGroup=ML_GROUP)
    n_water = topology.getNumResidues() - 1
    print(f"      {topology.getNumAtoms()} atoms ({n_water} waters); ML region: atoms {ml_atoms}")

    print(f"[2/3] Minimise, then {steps} steps of Langevin MD at 300 K (0.5 fs)", flush=True)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(args.seed)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(args.platform))
    simulation.context.setPositions(positions)
    xyz = np.asarray(positions.value_in_unit(unit.angstrom))[ml_atoms]
    start_lengths = [float(np.linalg.norm(xyz[i] - xyz[j])) for i, j in bonds]

    def checked(action, what: str) -> str | None:
        """Run ``action``; then (or when it fails) what is wrong with the ML region, if anything."""
        try:
            action()
        except Exception:  # a broken molecule fails inside the ML force, e.g. "spans ... of box vector"
            problem = region_problem(simulation, ml_atoms, bonds, start_lengths)
            if problem is None:
                raise
            return f"{problem} during {what}"
        problem = region_problem(simulation, ml_atoms, bonds, start_lengths)
        return None if problem is None else f"{problem} after {what}"

    if args.minimise_iterations > 0:
        problem = checked(lambda: simulation.minimizeEnergy(maxIterations=args.minimise_iterations), "the minimisation")
        if problem is not None:
            raise SystemExit(f"{problem}: {POOR_MODEL}")
    problem = None
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, args.seed)
    with atomic_path(out / "mlmm.pdb") as tmp, open(tmp, "w") as handle:
        app.PDBFile.writeFile(topology, simulation.context.getState(getPositions=True).getPositions(), handle)
    dcd, log = out / "mlmm.dcd", out / "mlmm.csv"
    with atomic_path(dcd) as dcd_tmp, atomic_path(log) as log_tmp:
        simulation.reporters.append(app.DCDReporter(str(dcd_tmp), args.report_every))
        simulation.reporters.append(
            app.StateDataReporter(
                str(log_tmp), args.report_every, step=True, time=True, potentialEnergy=True, temperature=True
            )
        )
        start = time.perf_counter()
        while problem is None and simulation.currentStep < steps:  # checked at every reported frame
            chunk = min(args.report_every, steps - simulation.currentStep)
            done = simulation.currentStep
            problem = checked(functools.partial(simulation.step, chunk), f"MD steps {done + 1} to {done + chunk}")
        seconds = time.perf_counter() - start
        simulation.reporters.clear()  # closes the files before they are renamed (they hold the frames up to here)
        if problem is not None and not dcd_tmp.exists():  # before the first frame: no files
            raise SystemExit(f"{problem}: {POOR_MODEL}")
    if problem is not None:
        raise SystemExit(f"{problem}: {POOR_MODEL} (frames up to there: {dcd}, {log})")
    ns_per_day = steps * timestep_fs * 1e-6 / (seconds / 86400)

    print("[3/3] Check the ML region against PhysMLCalculator", flush=True)
    state = simulation.context.getState(getPositions=True, getEnergy=True, groups={ML_GROUP})
    ml_energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL_TO_EV
    xyz = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[ml_atoms]
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom)
    delta = xyz - xyz[0]
    whole = xyz[0] + delta - np.round(delta @ np.linalg.inv(box)) @ box  # the molecule made whole
    ethanol = Atoms(molecule("CH3CH2OH").numbers, positions=whole)
    ethanol.calc = PhysMLCalculator(model)
    ase_energy = ethanol.get_potential_energy()
    lengths = [float(np.linalg.norm(whole[i] - whole[j])) for i, j in bonds]
    gap = abs(ml_energy - ase_energy)
    print(f"      ML energy {ml_energy:.6f} eV (OpenMM) vs {ase_energy:.6f} eV (ASE): |diff| {gap:.1e} eV")
    print(f"      ethanol bond lengths {min(lengths):.2f} .. {max(lengths):.2f} Å after {steps} steps")
    print(f"      {ns_per_day:.2f} ns/day; trajectory {dcd} (topology {out / 'mlmm.pdb'}), log {log}")
    summary = {
        "model": str(model),
        "atoms": topology.getNumAtoms(),
        "ml_atoms": ml_atoms,
        "steps": steps,
        "ns_per_day": ns_per_day,
        "ml_energy_openmm_ev": ml_energy,
        "ml_energy_ase_ev": ase_energy,
        "bond_lengths_angstrom": lengths,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
