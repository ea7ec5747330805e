"""benchmarks/bench_accuracy.py: every recipe is a valid configuration, budgets fit the schedule, the table is right."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_accuracy  # noqa: E402

from physml_md.config.load import config_from_dict  # noqa: E402


def _files(tmp_path):
    return {name: tmp_path / f"{name}.extxyz" for name in ("train", "validation", "test")}


@pytest.mark.parametrize("recipe", sorted(bench_accuracy.RECIPES))
def test_every_recipe_is_a_valid_configuration(recipe, tmp_path):
    raw = bench_accuracy.recipe_config(_files(tmp_path), tmp_path / "runs", bench_accuracy.RECIPES[recipe][1], 10)
    config = config_from_dict(raw, require_files=False)
    assert config.trainer["max_epochs"] == 10
    assert config.data.train.path == str(tmp_path / "train.extxyz")
    assert config.data.source is None
    assert config.model.name == recipe.split("-")[0]  # the recipe's architecture, whatever the example uses


def test_loss_weight_mixing_keeps_its_share_of_the_fitted_epochs(tmp_path):
    # the example mixes over 17 of 40 epochs; fitted to 35 epochs the mixing takes 15
    raw = bench_accuracy.recipe_config(_files(tmp_path), tmp_path, [], 35)
    assert raw["training"]["loss_parameter"]["mixing_epochs"] == {"per_system_energy": 15, "per_atom_force": 15}


def test_table_gives_the_ratios_to_mace():
    mace = {
        "model": "MACE-small",
        "energy_mae_mev_per_atom": 0.5,
        "force_mae_mev_per_angstrom": 20.0,
        "epochs": 40,
        "train_cpu_s": 700.0,
        "train_wall_s": 710.0,
        "md_ms_per_step": 24.0,
    }
    ours = dict(mace, model="painn", force_mae_mev_per_angstrom=15.0, md_ms_per_step=6.0, s_per_epoch=3.0, epochs=220)
    lines = bench_accuracy.format_table([mace, ours], 700.0, "cpu", 1).splitlines()
    assert lines[-1].split() == ["painn", "force", "0.75x", "MD", "0.25x"]
    assert lines[4].split()[:4] == ["painn", "0.500", "15.00", "220"]
