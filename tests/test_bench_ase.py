"""benchmarks/bench_ase.py on a tiny budget: it measures what it claims (timings themselves are not tested)."""

import sys
from pathlib import Path

import pytest
import torch

from physml_md import PhysMLCalculator, export_potential, load_potential
from physml_md.models import build_model
from tests.helpers import EXACT, assert_close

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_ase  # noqa: E402

TINY = {"features": 8, "n_interactions": 1, "n_rbf": 4}


@pytest.fixture(scope="module")
def cu_file(tmp_path_factory):
    model = build_model("painn", species=["Cu"], cutoff=5.0, dtype="float64", seed=0, **TINY)
    return export_potential(model, tmp_path_factory.mktemp("bench_ase") / "cu.pt")


def test_small_run_reports_ratios_and_md_speed():
    before = torch.get_num_threads()
    result = bench_ase.run(sizes=(8,), threads=(2,), repeats=2, md_steps=4, md_warmup=1, warmup=1, **TINY)
    assert torch.get_num_threads() == before
    (row,) = result["overhead"]
    assert (row["atoms"], row["dtype"], row["threads"]) == (8, "float64", 2)
    assert row["ase/bare"] == row["ase_ms"] / row["bare_ms"] > 0
    assert [(md["dtype"], md["threads"]) for md in result["md"]] == [("float64", 2), ("float32", 2)]
    for md in result["md"]:
        # 4 steps of 0.5 fs = 2e-6 ns, in ms_per_step * 4 ms of wall time
        assert md["ns_per_day"] == pytest.approx(2e-6 / (md["ms_per_step"] * 4 / 1e3 / 86400), rel=1e-12)
        assert md["step/bare"] == md["ms_per_step"] / md["bare_ms"]
    table = bench_ase.format_table(result)
    assert "ase/bare" in table and "ns/day" in table and "8 features" in table
    assert len(table.splitlines()) == 4 + 4 + 2 + 1  # title, header, rule, row; blank, title, header, rule; ...


def test_every_ase_step_is_a_new_calculation(cu_file, monkeypatch):
    """The moved positions defeat the cache: one model call per timed get_forces(), warm-ups included."""
    calls = []
    original = PhysMLCalculator.calculate

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PhysMLCalculator, "calculate", counting)
    row = bench_ase.overhead(cu_file, 8, threads=1, repeats=3, warmup=2)
    assert row["atoms"] == 8
    assert len(calls) == 2 + 1 + 3  # explicit warm-ups, median_ms's warm-up, timed repeats


def test_bare_contender_computes_what_the_calculator_computes(cu_file):
    atoms = bench_ase.copper_supercell(32)
    atoms.rattle(0.05, seed=1)
    potential = load_potential(cu_file)
    out = potential(bench_ase.model_tensors(atoms, torch.float64))
    atoms.calc = PhysMLCalculator(cu_file)
    assert_close(atoms.get_forces(), out["forces"].detach().numpy(), EXACT[torch.float64], "forces")
    assert_close(atoms.get_potential_energy(), out["energy"].item(), EXACT[torch.float64], "energy")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threads": (0,)}, "threads must be positive"),
        ({"md_threads": ()}, "md_threads must be positive"),
        ({"md_steps": 0}, "md_steps"),
        ({"large_repeats": 0}, "large_repeats=0"),
    ],
)
def test_bad_budget_is_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench_ase.run(**kwargs)
