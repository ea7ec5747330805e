"""examples/cu_emt/make_data.py: EMT-labelled, strained, MD-sampled Cu32 frames, reproducible from the seed."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.io import read

from tests.helpers import assert_close, load_script

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "cu_emt" / "make_data.py"
EDGE = 2 * 3.61  # angstrom, the unstrained 2x2x2 cubic cell
N = 8


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def data_file(script, tmp_path_factory):
    # two cells of four frames: the first at 300 K, the second at 1200 K
    return script.make_data(tmp_path_factory.mktemp("cu") / "cu.extxyz", N, 0, (300, "1200 K"))


def test_frames_carry_emt_labels(data_file):
    frames = read(data_file, ":")
    assert len(frames) == N
    for frame in frames:
        assert len(frame) == 32 and set(frame.get_chemical_symbols()) == {"Cu"} and frame.pbc.all()
        stored = frame.calc.results
        assert {"energy", "forces", "stress"} <= set(stored)
        fresh = frame.copy()
        fresh.calc = EMT()
        assert_close(stored["energy"], fresh.get_potential_energy(), 1e-10, "energy")
        assert_close(stored["stress"], fresh.get_stress(), 1e-10, "stress")
        # extxyz stores forces with 8 decimals: equal up to that rounding
        assert_close(stored["forces"], fresh.get_forces(), 5e-9, "forces")
    assert max(np.abs(f.get_forces()).max() for f in frames) > 0.1  # MD moved the atoms off the lattice


def test_cells_are_symmetrically_strained_within_3_percent(data_file):
    frames = read(data_file, ":")
    deformations = [frame.cell.array / EDGE for frame in frames]
    for deformation in deformations:
        np.testing.assert_allclose(deformation, deformation.T, atol=1e-12)
        assert np.all(np.abs(np.linalg.eigvalsh(deformation) - 1) <= 0.03 + 1e-12)
    lengths = np.array([frame.cell.lengths() for frame in frames])
    assert np.all(np.abs(lengths / EDGE - 1) <= 0.03 + 1e-12)
    assert np.abs(lengths / EDGE - 1).max() > 1e-3  # a strain was applied
    assert not np.allclose(deformations[0], deformations[-1])  # each cell has its own strain


def test_temperatures_are_applied(data_file):
    energy = np.array([f.get_potential_energy() / len(f) for f in read(data_file, ":")])
    # equipartition: potential energy ~ 3/2 kT per atom, 0.039 eV at 300 K, 0.155 eV at 1200 K
    assert energy[N // 2 :].mean() - energy[: N // 2].mean() > 0.05


def test_deterministic_for_a_seed(script, data_file, tmp_path):
    again = script.make_data(tmp_path / "again.extxyz", N, 0, (300, 1200))
    assert again.read_bytes() == data_file.read_bytes()
    other = script.make_data(tmp_path / "other.extxyz", N, 1, (300, 1200))
    assert other.read_bytes() != data_file.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.extxyz", "other.extxyz"]  # no temporary file


@pytest.mark.parametrize(
    ("n_structures", "temperatures", "match"),
    [(0, (300,), "n_structures must be a positive integer"), (2, (), "non-empty"), (2, ("300 m",), "temperature")],
)
def test_bad_arguments(script, tmp_path, n_structures, temperatures, match):
    with pytest.raises(ValueError, match=match):
        script.make_data(tmp_path / "x.extxyz", n_structures, 0, temperatures)
    assert not any(tmp_path.iterdir())


def test_command_line(tmp_path):
    out = tmp_path / "sub" / "cu.extxyz"
    command = [sys.executable, str(SCRIPT), "--out", str(out), "--n-structures", "2", "--temperatures", "600"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 structures; E/atom" in result.stdout and "GPa" in result.stdout
    assert len(read(out, ":")) == 2
