"""Batched MD of several replicas in torch-sim with a metatomic file exported by physml-md.

Runs with the Python of `make torchsim` (.venv-torchsim: Python 3.12, torch-sim, metatomic-torchsim); it does not
import physml_md, the file is all it needs:

    physml-md export run/model.ckpt model-metatomic.pt --format metatomic      # in .venv
    .venv-torchsim/bin/python examples/torchsim_replicas.py model-metatomic.pt --replicas 8 --steps 50

MD mode (the default): N rattled fcc cells of different sizes (32 to 108 atoms: torch-sim batches systems of
unequal size), Maxwell-Boltzmann momenta at --temperature, then --steps of velocity Verlet (NVE) or Langevin (NVT)
for all replicas in one torch-sim state; then the same replicas one at a time from the same start. It prints per
replica the drift of the total energy (NVE) and the temperature, how far the batched trajectory ended from the
replica run alone, and the wall time per step of the batch against the replicas one after the other (measured in
the same process, step by step in turn, after two untimed warm-up steps of every run).

Check mode (--check REF.npz): the energy, forces and stress of the structures in REF.npz (keys count, numbers_i,
positions_i, cell_i, pbc_i, energy_i, forces_i, stress_i: eV, eV/angstrom, eV/angstrom^3, ASE's sign) evaluated as
one torch-sim batch; prints the largest differences, writes torch-sim's values with --write OUT.npz, and exits 1
above --tolerance. tests/integrations/test_torchsim.py writes REF.npz from physml-md's PhysMLCalculator.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch_sim as ts
from ase import Atoms
from ase.build import bulk
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from metatomic.torch import load_atomistic_model
from metatomic_torchsim import MetatomicModel
from torch_sim.units import MetalUnits

WARMUP = 2  # untimed steps of every run before the timed ones
REPEATS = [(2, 2, 2), (3, 2, 2), (3, 3, 2), (3, 3, 3)]  # 32, 48, 72, 108 atoms of a cubic fcc cell


def replicas(count: int, symbol: str, lattice: float, temperature: float, seed: int) -> list[Atoms]:
    """``count`` rattled fcc cells (sizes cycling through REPEATS) with Maxwell-Boltzmann momenta, no drift."""
    structures = []
    for index in range(count):
        atoms = bulk(symbol, "fcc", a=lattice, cubic=True).repeat(REPEATS[index % len(REPEATS)])
        atoms.rattle(0.05, seed=seed + index)
        thermalize_momenta(atoms, temperature, exact_temperature=True, rng=np.random.default_rng(seed + index))
        Stationary(atoms)
        structures.append(atoms)
    return structures


def load_model(path: str, device: str, structures: list[Atoms], check_consistency: bool = False) -> MetatomicModel:
    """The file as a torch-sim model, after checking that it knows every element of ``structures``."""
    atomistic = load_atomistic_model(path)
    known = {int(z) for z in atomistic.capabilities().atomic_types}
    missing = sorted({int(z) for atoms in structures for z in atoms.numbers} - known)
    if missing:
        raise SystemExit(f"{path} has no parameters for atomic numbers {missing} (it knows {sorted(known)})")
    return MetatomicModel(atomistic, device=device, check_consistency=check_consistency)


class Run:
    """One MD run of a list of replicas as a single torch-sim state: total energies per step, temperatures,
    final positions and the wall time of the timed steps."""

    def __init__(self, model, structures, args):
        self.model = model
        self.args = args
        self.kT = args.temperature * MetalUnits.temperature
        self.dt = args.dt * 1e-3 * MetalUnits.time  # fs -> torch-sim's time unit (ASE's: MetalUnits.time is 1 ps)
        state = ts.io.atoms_to_state(structures, device=model.device, dtype=model.dtype)
        momenta = torch.tensor(
            np.concatenate([atoms.get_momenta() for atoms in structures]), device=model.device, dtype=model.dtype
        )  # amu angstrom / ASE time unit, which is torch-sim's
        if args.ensemble == "nve":
            self.state = ts.nve_init(state, model, kT=self.kT)
        else:
            self.state = ts.nvt_langevin_init(state, model, kT=self.kT)
            self.state.rng = args.seed  # the Langevin noise: reproducible, but not the same batched and alone
        self.state.momenta = momenta
        self.totals = [self.total_energy()]
        self.temperatures = [self.temperature()]
        self.seconds = 0.0

    def step(self):
        if self.args.ensemble == "nve":
            self.state = ts.nve_step(self.state, self.model, dt=self.dt)
        else:
            self.state = ts.nvt_langevin_step(self.state, self.model, dt=self.dt, kT=self.kT)

    def total_energy(self) -> np.ndarray:
        kinetic = ts.calc_kinetic_energy(
            masses=self.state.masses, momenta=self.state.momenta, system_idx=self.state.system_idx
        )
        return (self.state.energy + kinetic).detach().cpu().numpy().astype(np.float64)

    def temperature(self) -> np.ndarray:
        return self.state.calc_temperature().detach().cpu().numpy().astype(np.float64)

    def run(self, steps: int, timed: bool = True) -> "Run":
        for _ in range(steps):
            start = time.perf_counter()
            self.step()
            if timed:
                self.seconds += time.perf_counter() - start
            self.totals.append(self.total_energy())
            self.temperatures.append(self.temperature())
        return self

    def positions(self, system: int) -> np.ndarray:
        mask = (self.state.system_idx == system).cpu().numpy()
        return self.state.positions.detach().cpu().numpy()[mask]


def md(args) -> dict:
    structures = replicas(args.replicas, args.symbol, args.lattice, args.temperature, args.seed)
    model = load_model(args.model, args.device, structures)
    batch = Run(model, structures, args)
    alone = [Run(model, [atoms], args) for atoms in structures]
    for run in [batch, *alone]:  # TorchScript's one-off work on its first calls (for every shape) is not timed
        run.run(WARMUP, timed=False)
    for _ in range(args.steps):  # interleaved: a busy machine slows the batch and the lone runs alike
        for run in [batch, *alone]:
            run.run(1)
    totals = np.array(batch.totals)  # [warm-up + steps + 1, replicas]
    temperatures = np.array(batch.temperatures)
    rows = []
    for index, atoms in enumerate(structures):
        rows.append(
            {
                "atoms": len(atoms),
                "total_energy_eV": float(totals[0, index]),
                "max_energy_change_eV_per_atom": float(np.abs(totals[:, index] - totals[0, index]).max() / len(atoms)),
                "mean_temperature_K": float(temperatures[1:, index].mean()),
                "batched_vs_alone_max_position_difference_A": float(
                    np.abs(batch.positions(index) - alone[index].positions(0)).max()
                ),
                "alone_ms_per_step": 1e3 * alone[index].seconds / args.steps,
            }
        )
    batched = 1e3 * batch.seconds / args.steps
    one_at_a_time = sum(row["alone_ms_per_step"] for row in rows)
    return {
        "model": str(args.model),
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "ensemble": args.ensemble,
        "steps": args.steps,
        "dt_fs": args.dt,
        "temperature_K": args.temperature,
        "replicas": rows,
        "batched_ms_per_step": batched,
        "one_at_a_time_ms_per_step": one_at_a_time,
        "speedup": one_at_a_time / batched,
    }


def print_md(result: dict) -> None:
    print(
        f"{len(result['replicas'])} replicas, {result['ensemble'].upper()}, {result['steps']} steps of "
        f"{result['dt_fs']:g} fs, {result['dtype']} on {result['device']} ({result['threads']} threads)"
    )
    print(f"{'replica':>7} {'atoms':>5} {'max |dE_tot| (meV/atom)':>24} {'mean T (K)':>10} {'batched - alone (A)':>20}")
    for index, row in enumerate(result["replicas"]):
        print(
            f"{index:>7} {row['atoms']:>5} {1e3 * row['max_energy_change_eV_per_atom']:>24.4f} "
            f"{row['mean_temperature_K']:>10.1f} {row['batched_vs_alone_max_position_difference_A']:>20.2e}"
        )
    if result["ensemble"] == "nvt":
        print("(NVT: the bath changes the total energy, and its noise is not the same batched and alone)")
    print(
        f"wall time per step: batched {result['batched_ms_per_step']:.1f} ms, one at a time "
        f"{result['one_at_a_time_ms_per_step']:.1f} ms (sum over replicas): {result['speedup']:.2f}x"
    )


def check(args) -> dict:
    """Step-0 energy, forces and stress of the structures in args.check, as one torch-sim batch."""
    reference = np.load(args.check)
    count = int(reference["count"])
    structures = [
        Atoms(
            numbers=reference[f"numbers_{i}"],
            positions=reference[f"positions_{i}"],
            cell=reference[f"cell_{i}"],
            pbc=reference[f"pbc_{i}"],
        )
        for i in range(count)
    ]
    model = load_model(args.model, args.device, structures, check_consistency=True)
    state = ts.io.atoms_to_state(structures, device=model.device, dtype=model.dtype)
    output = {key: value.detach().cpu().numpy().astype(np.float64) for key, value in model(state).items()}
    system = state.system_idx.cpu().numpy()
    found, differences = {}, []
    for i in range(count):
        found[f"energy_{i}"] = output["energy"][i]
        found[f"forces_{i}"] = output["forces"][system == i]
        found[f"stress_{i}"] = output["stress"][i]
        differences.append(
            {
                key: float(np.abs(found[f"{key}_{i}"] - reference[f"{key}_{i}"]).max())
                for key in ("energy", "forces", "stress")
            }
        )
    if args.write:
        np.savez(args.write, count=count, **found)
    worst = max(max(row.values()) for row in differences)
    return {"model": str(args.model), "differences": differences, "worst": worst, "tolerance": args.tolerance}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a metatomic file (physml-md export ... --format metatomic)")
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50, help="timed MD steps (after 2 warm-up steps)")
    parser.add_argument("--dt", type=float, default=2.0, help="time step, fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="K: initial momenta, and NVT's bath")
    parser.add_argument("--ensemble", choices=["nve", "nvt"], default="nve")
    parser.add_argument("--symbol", default="Cu", help="element of the fcc cells")
    parser.add_argument("--lattice", type=float, default=3.61, help="fcc lattice constant, angstrom")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--check", type=Path, help="reference npz: compare step-0 energy, forces, stress instead")
    parser.add_argument("--write", type=Path, help="with --check: write torch-sim's values to this npz")
    parser.add_argument("--tolerance", type=float, default=1e-10, help="with --check: largest difference allowed")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.check is not None:
        result = check(args)
        for index, row in enumerate(result["differences"]):
            print(f"structure {index}: " + ", ".join(f"{key} {value:.1e}" for key, value in row.items()))
        print(f"largest difference {result['worst']:.2e} (tolerance {args.tolerance:g})")
    else:
        result = md(args)
        print_md(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if args.check is not None and result["worst"] > args.tolerance else 0


if __name__ == "__main__":
    sys.exit(main())
