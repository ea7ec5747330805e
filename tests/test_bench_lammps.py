"""benchmarks/bench_lammps.py and benchmarks/lammps_run.py without LAMMPS: the ghost-shell estimate, the reasons
find_lammps gives, the input it writes."""

import json
import subprocess
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


def test_explained_speedup_is_shell_estimate_less_contention_and_comm():
    # a rank does 1/1.3 of the work, 1.25x slower beside another process, and spends 5 % of its loop in Comm
    assert bench_lammps.explained_speedup(1.3, 1.25, 0.05) == pytest.approx(1.3 * 0.95 / 1.25)
    assert bench_lammps.explained_speedup(1.3, 1.0, 0.0) == pytest.approx(1.3)


def test_median_ratio_pairs_each_repeat_with_itself():
    # the machine ran twice as fast in the second repeat: each repeat's own ratio is 2
    assert bench_lammps.median_ratio([100.0, 50.0, 102.0], [50.0, 25.0, 50.0]) == pytest.approx((2.0, 2.0, 2.04))


LOG = """\
Step PotEng KinEng TotEng Pxx Pyy Pzz Pxy Pxz Pyz
0 -7 0 -7 1 2 3 4 5 6
Loop time of 0.5 on 2 procs for 0 steps with 2 atoms
90.0% CPU use with 2 MPI tasks x 1 OpenMP threads
Comm    | 0.01       | 0.02       | 0.03       |   1.0 |  4.00
Step PotEng KinEng TotEng Pxx Pyy Pzz Pxy Pxz Pyz
0 -7 0.5 -6.5 1 2 3 4 5 6
10 -7.1 0.6 -6.5 1 2 3 4 5 6
Loop time of 2.0 on 2 procs for 10 steps with 2 atoms
95.0% CPU use with 2 MPI tasks x 1 OpenMP threads
Pair    | 1.5        | 1.6        | 1.7        |   1.0 | 80.00
Comm    | 0.3        | 0.4        | 0.5        |   2.0 | 20.00
"""


def test_parse_reads_the_nve_runs_loop_time_and_comm_share(tmp_path):
    (tmp_path / "forces.dump").write_text("header\n" * 9 + "2 0 0 1 -3.5\n1 1 0 0 -3.5\n")
    result = lammps_run._parse(tmp_path, LOG, lammps_run.Prism(np.eye(3) * 10), 2)
    assert result.ms_per_step == pytest.approx(200.0)
    assert result.cpu_ms_per_step == pytest.approx(190.0)
    assert result.comm_fraction == pytest.approx(0.4 / 2.0)  # the NVE run's average rank, not run 0's
    assert result.total_energy.tolist() == [-7, -6.5, -6.5]
    assert result.forces[0] == pytest.approx([1, 0, 0]) and result.forces[1] == pytest.approx([0, 0, 1])


def test_ranks_keep_the_memory_they_free(tmp_path, monkeypatch):
    seen = {}

    def fake_run(command, env, **kwargs):
        seen.update(env)
        return subprocess.CompletedProcess(command, 1, "", "no LAMMPS here")

    monkeypatch.setattr(lammps_run.subprocess, "run", fake_run)
    setup = lammps_run.LammpsSetup("/p.so", "lmp", "mpirun", "/lib")
    with pytest.raises(RuntimeError, match="no LAMMPS here"):
        lammps_run.run_lammps(setup, "/m.pt", slab_atoms(4), tmp_path, ranks=2)
    assert seen["MALLOC_MMAP_MAX_"] == "0" and int(seen["MALLOC_TRIM_THRESHOLD_"]) >= 2**30
    assert seen["OMP_NUM_THREADS"] == "1"


RSS_AFTER_FREE = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import lammps_run
if sys.argv[2] == "keep":
    assert lammps_run.keep_freed_memory()
def rss():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096
before = rss()
block = np.ones(200 * 2**20 // 8)  # 200 MB: glibc maps it on its own and unmaps it on free, unless told not to
del block
print((rss() - before) / 2**20)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="needs Linux's /proc")
def test_keep_freed_memory_keeps_a_freed_block_in_the_process():
    bench = str(Path(bench_lammps.__file__).parent)
    grown = {}
    for mode in ("plain", "keep"):
        done = subprocess.run([sys.executable, "-c", RSS_AFTER_FREE, bench, mode], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        grown[mode] = float(done.stdout)
    assert grown["plain"] < 50 and grown["keep"] > 150, grown
