"""A metatomic file in torch-sim (metatomic-torchsim, Python >= 3.12): examples/torchsim_replicas.py run with the
Python of .venv-torchsim (`make torchsim`), in a subprocess, against PhysMLCalculator in this environment.

Step 0 of a batch of three periodic structures (a rattled fcc cell, a triclinic cell, a cell smaller than the cutoff)
equals PhysMLCalculator to 1e-10 (float64) in energy, forces and stress; a short batched NVE run conserves the
total energy and gives each replica the trajectory it has alone. Skips, with the command that builds it, where
.venv-torchsim is missing."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from physml_md import PhysMLCalculator, export_potential
from physml_md.models import build_model
from tests.helpers import triclinic_cu3oh

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "torchsim_replicas.py"
PYTHON = ROOT / ".venv-torchsim" / "bin" / "python"
EXACT = 1e-10  # eV, eV/angstrom, eV/angstrom^3: float64, the same maths in another engine
# Velocity Verlet's total energy error is O(dt^2): at 1 fs and 300 K it stays near 0.01-0.1 meV/atom over 20 steps
# for this model (measured: 0.02-0.05 meV/atom at 2 fs). A force that is wrong (sign, units, a missing term) moves
# the total energy by the order of the kinetic energy, 3/2 kT = 39 meV/atom: 1 meV/atom separates the two.
DRIFT = 1e-3  # eV per atom

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not PYTHON.is_file(),
        reason=f"{PYTHON.relative_to(ROOT)} is missing (torch-sim needs Python >= 3.12): build it with `make torchsim`",
    ),
]


def structures():
    """Periodic, as torch-sim batches them (one pbc for the batch): fcc Cu 32 atoms, a triclinic Cu3OH cell, and
    a cell whose vectors (2.55 angstrom) are shorter than the 4 angstrom cutoff."""
    cubic = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    cubic.rattle(0.05, seed=1)
    triclinic = triclinic_cu3oh()
    small = bulk("Cu", "fcc", a=3.61) * (1, 1, 2)
    small.rattle(0.03, seed=2)
    return [cubic, triclinic, small]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small float64 PaiNN (H, O, Cu; 4 angstrom, 2 interactions, ZBL) and its metatomic file."""
    folder = tmp_path_factory.mktemp("torchsim")
    model = build_model(
        "painn", species=["H", "O", "Cu"], cutoff=4.0, features=8, n_interactions=2, zbl=True, dtype="float64", seed=0
    ).eval()
    return model, export_potential(model, folder / "model_metatomic.pt", format="metatomic"), folder


def run_example(*args, timeout=240):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    environment.pop("PYTHONPATH", None)  # .venv-torchsim's own packages only: physml_md is not installed there
    result = subprocess.run(
        [str(PYTHON), str(EXAMPLE), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"{EXAMPLE.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_a_torchsim_batch_matches_physml_calculator(exported):
    model, path, folder = exported
    reference = {"count": len(structures())}
    for index, atoms in enumerate(structures()):
        atoms.calc = PhysMLCalculator(model)
        reference.update(
            {
                f"numbers_{index}": atoms.numbers,
                f"positions_{index}": atoms.positions,
                f"cell_{index}": atoms.cell.array,
                f"pbc_{index}": atoms.pbc,
                f"energy_{index}": atoms.get_potential_energy(),
                f"forces_{index}": atoms.get_forces(),
                f"stress_{index}": atoms.get_stress(voigt=False),
            }
        )
    np.savez(folder / "reference.npz", **reference)
    run_example(path, "--check", folder / "reference.npz", "--write", folder / "torchsim.npz", "--tolerance", EXACT)
    found = np.load(folder / "torchsim.npz")
    assert int(found["count"]) == len(structures())
    for index in range(len(structures())):
        for key in ("energy", "forces", "stress"):
            error = float(np.abs(found[f"{key}_{index}"] - reference[f"{key}_{index}"]).max())
            assert error <= EXACT, f"structure {index} {key}: torch-sim differs from PhysMLCalculator by {error:.2e}"
        assert np.abs(reference[f"forces_{index}"]).max() > 1e-3  # not zero by symmetry: the comparison could fail
        assert np.abs(reference[f"stress_{index}"]).max() > 1e-4


def test_batched_nve_conserves_energy_and_equals_each_replica_alone(exported):
    _, path, folder = exported
    output = folder / "md.json"
    run_example(path, "--replicas", 3, "--steps", 20, "--dt", 1.0, "--json", output)
    result = json.loads(output.read_text())
    assert [row["atoms"] for row in result["replicas"]] == [32, 48, 72]  # sizes differ: a real batch
    for index, row in enumerate(result["replicas"]):
        assert row["max_energy_change_eV_per_atom"] <= DRIFT, f"replica {index}: {row}"
        assert 100.0 < row["mean_temperature_K"] < 600.0, f"replica {index}: {row}"
        # the same start, the same forces: batching changes nothing but the order of additions
        assert row["batched_vs_alone_max_position_difference_A"] <= 1e-10, f"replica {index}: {row}"
    assert result["batched_ms_per_step"] > 0 and result["one_at_a_time_ms_per_step"] > 0
