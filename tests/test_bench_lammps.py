"""benchmarks/bench_lammps.py and benchmarks/lammps_run.py without LAMMPS: the ghost-shell estimate, the reasons
find_lammps gives, the input it writes."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_lammps  # noqa: E402
import lammps_run  # noqa: E402


def slab_atoms(n=100, length=40.0):
    x = (np.arange(n) + 0.5) * length / n
    return Atoms("Cu" * n, positions=np.stack([x, np.zeros(n), np.zeros(n)], axis=1), cell=[length, 5, 5], pbc=True)


@pytest.mark.parametrize(
    ("reach", "busiest"),
    [(0.0, 50), (4.0, 70), (10.0, 100), (30.0, 100)],  # half the atoms, plus 2 x reach / 40 of them, at most all
)
def test_shell_estimate_counts_owned_plus_shell(reach, busiest):
    atoms = slab_atoms()
    counted, estimate = bench_lammps.shell_estimate(atoms, reach)
    assert counted == busiest
    assert estimate == pytest.approx(100 / busiest)


def test_water_box_is_one_gram_per_cm3():
    atoms = bench_lammps.water(3)
    assert len(atoms) == 81
    density = atoms.get_masses().sum() / atoms.get_volume() * 1.66054  # amu/angstrom^3 -> g/cm^3
    assert density == pytest.approx(1.0, rel=2e-3)


def test_find_lammps_says_what_is_missing(tmp_path):
    reason = lammps_run.find_lammps(tmp_path / "build-info.json")
    assert isinstance(reason, str)
    assert "build-info.json is missing" in reason and "make lammps" in reason


def test_find_lammps_refuses_another_torch(tmp_path):
    info = {"torch": "0.0.0", "python": "/elsewhere/python", "plugin": "x", "lmp": "x", "mpirun": "x"}
    (tmp_path / "build-info.json").write_text(json.dumps(info))
    reason = lammps_run.find_lammps(tmp_path / "build-info.json")
    assert isinstance(reason, str)
    assert "torch 0.0.0" in reason and torch.__version__ in reason and "build_lammps_metatomic.sh" in reason


def test_input_maps_types_and_dumps_step_zero_forces():
    text = lammps_run.lammps_input("data.lmp", "/m.pt", "/p.so", [28, 29], steps=7, skin=1.5)
    lines = text.splitlines()
    assert "pair_coeff * * 28 29" in lines
    assert "pair_style metatomic /m.pt" in lines
    assert "plugin load /p.so" in lines
    assert "neighbor 1.5 bin" in lines
    assert lines.index("run 0") < lines.index("undump forces") < lines.index("run 7")
