"""A metatomic file in i-PI: examples/ipi/run.sh (i-PI over a UNIX socket with i-PI's Python driver,
`i-pi-py_driver -m metatomic`) for a few NVE steps, step 0 against PhysMLCalculator, float64.

i-PI writes the potential energy with input.xml's floatformat (%.16e: every digit of a double) and the forces to
a binary trajectory (float64), so its output keeps ~1e-14 eV and eV/angstrom here; the bound is the float64 one
of the other engines, 1e-10. Skips, with the reason, where ipi is not installed (it comes with the [metatomic]
extra) or its scripts are not beside this Python (IPI_BIN names another folder)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from physml_md import PhysMLCalculator, export_potential
from physml_md.models import build_model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ipi"
BIN = Path(os.environ.get("IPI_BIN", Path(sys.executable).parent))
EXACT = 1e-10  # eV, eV/angstrom: float64; i-PI's output here keeps ~1e-14
DRIFT = 1e-3  # eV per atom: 4 velocity Verlet steps of 2 fs at 300 K change the conserved energy by ~1e-5 eV/atom

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("ipi") is None, reason="ipi is not installed: pip install 'physml-md[metatomic]'"
    ),
    pytest.mark.skipif(
        not (BIN / "i-pi").is_file() or not (BIN / "i-pi-py_driver").is_file(),
        reason=f"no i-pi and i-pi-py_driver scripts in {BIN} (set IPI_BIN to their folder)",
    ),
]


def read_forces(path):
    """The first frame of an i-PI binary trajectory: cell (9 float64), atom count (int64), forces (float64)."""
    with open(path, "rb") as stream:
        np.fromfile(stream, dtype=np.float64, count=9)
        count = int(np.fromfile(stream, dtype=np.int64, count=1)[0])
        return np.fromfile(stream, dtype=np.float64, count=3 * count).reshape(count, 3)


def test_ipi_step_zero_equals_physml_calculator(tmp_path):
    model = build_model(
        "painn", species=["Cu"], cutoff=4.0, features=8, n_interactions=2, zbl=True, dtype="float64", seed=0
    ).eval()
    path = export_potential(model, tmp_path / "model_metatomic.pt", format="metatomic")
    run = tmp_path / "run"
    environment = {**os.environ, "PYTHON": sys.executable, "IPI_BIN": str(BIN), "IPI_TIMEOUT": "120"}
    result = subprocess.run(
        ["bash", str(EXAMPLE / "run.sh"), str(path), str(run), "4"],
        capture_output=True,
        text=True,
        timeout=180,
        env=environment,
    )
    assert result.returncode == 0, f"run.sh failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    atoms = read(EXAMPLE / "init.xyz")  # i-PI's xyz: ASE reads the positions, the cell is in the comment line
    comment = (EXAMPLE / "init.xyz").read_text().splitlines()[1].split()  # # CELL(abcABC): a b c alpha beta gamma
    atoms.cell = [float(value) for value in comment[2:8]]
    atoms.pbc = True
    atoms.calc = PhysMLCalculator(model)
    properties = np.loadtxt(run / "sim.out")  # step, time, conserved, temperature, potential
    assert properties[:, 0].tolist() == [0, 1, 2, 3, 4]
    energy_error = abs(properties[0, 4] - atoms.get_potential_energy())
    assert energy_error <= EXACT, f"i-PI's step-0 potential energy differs from PhysMLCalculator by {energy_error:.2e}"
    forces = atoms.get_forces()
    force_error = float(np.abs(read_forces(run / "sim.for_0.bin") - forces).max())
    assert force_error <= EXACT, f"i-PI's step-0 forces differ from PhysMLCalculator by {force_error:.2e}"
    assert np.abs(forces).max() > 1e-3  # rattled: not zero by symmetry, so the comparison could fail
    drift = np.abs(properties[:, 2] - properties[0, 2]).max() / len(atoms)
    assert drift <= DRIFT, f"the conserved energy moved by {drift:.2e} eV/atom in 4 NVE steps"
