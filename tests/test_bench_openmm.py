"""benchmarks/bench_openmm.py on a tiny budget: it measures what it claims (timings themselves are not tested)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from openmm import unit

from physml_md import PhysMLCalculator, export_potential
from physml_md.integrations.openmm import available_backends
from physml_md.integrations.openmm_topology import openmm_box
from physml_md.models import build_model
from physml_md.units import EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_openmm  # noqa: E402

TINY = {"features": 8, "n_interactions": 1, "n_rbf": 4}


def test_small_run_reports_one_ratio_per_backend():
    before = torch.get_num_threads()
    result = bench_openmm.run(atoms=32, threads=(1, 2), repeats=2, warmup=1, **TINY)
    assert torch.get_num_threads() == before
    assert result["backends"] == available_backends()
    assert [(row["atoms"], row["threads"]) for row in result["rows"]] == [(32, 1), (32, 2)]
    for row in result["rows"]:
        for backend in result["backends"]:
            assert row[f"{backend}/bare"] == row[f"{backend}_ms"] / row["bare_ms"] > 0
    table = bench_openmm.format_table(result)
    assert all(f"{backend}/bare" in table for backend in result["backends"])
    assert len(table.splitlines()) == 3 + 2 + 1


@pytest.mark.parametrize("backend", available_backends())
def test_each_timed_context_computes_the_potential(tmp_path, backend):
    """The contexts being timed run the model on the benchmark's structure (forces equal the calculator's)."""
    path = export_potential(build_model("painn", species=["Cu"], cutoff=5.0, seed=0, **TINY), tmp_path / "cu.pt")
    atoms = bench_openmm.copper_supercell(32)
    atoms.rattle(0.05, seed=1)
    context, _ = bench_openmm.openmm_context(path, atoms, backend, "Reference", 1)
    forces = (
        context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    )
    atoms.calc = PhysMLCalculator(path)
    expected = atoms.get_forces() @ openmm_box(atoms.cell.array)[1].T * EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM
    assert np.allclose(np.asarray(forces), expected, rtol=0, atol=1e-9 * np.abs(expected).max())


def test_bad_budget_is_one_clear_error():
    with pytest.raises(ValueError, match="threads must be positive"):
        bench_openmm.run(threads=(0,))
    with pytest.raises(ValueError, match="not available here"):
        bench_openmm.run(backends=("nosuch",))
