"""`strategy="ddp"` with two CPU processes (gloo) trains like one process with the same total batch size."""

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from ase.io import read

from physml_md.data import LabelKeys, atoms_to_dict, collate
from physml_md.export import load_potential

CLI = [sys.executable, "-m", "physml_md.cli"]


def _rows(metrics_csv, name):
    with open(metrics_csv, newline="") as handle:
        return [float(row[name]) for row in csv.DictReader(handle) if row.get(name)]


def _run(tmp_path, tiny_config, name, overrides):
    tiny_config["trainer"]["default_root_dir"] = str(tmp_path / name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    result = subprocess.run(
        [*CLI, "train", str(path), *[f"--set={o}" for o in overrides]],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / name).glob("version_*")
    return run_dir, result.stdout


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path, tiny_config, cu_data):
    tiny_config["trainer"]["max_epochs"] = 2
    single_dir, _ = _run(tmp_path, tiny_config, "single", ["data.train.batch_size=4"])
    ddp_dir, stdout = _run(
        tmp_path, tiny_config, "ddp", ["data.train.batch_size=2", "trainer.devices=2", "trainer.strategy=ddp"]
    )
    assert "test split" in stdout
    names = ("val/loss", "val/per_atom_force/rmse", "val/per_system_stress/rmse", "train/loss")
    for name in names:
        a, b = _rows(single_dir / "metrics.csv", name), _rows(ddp_dir / "metrics.csv", name)
        assert len(a) == len(b) == 2
        np.testing.assert_allclose(b, a, rtol=1e-8, err_msg=name)
    frames = read(cu_data, ":4")
    batch = collate([atoms_to_dict(a, LabelKeys(), dtype=torch.float64) for a in frames])
    single = load_potential(single_dir / "checkpoints" / "model.pt")(batch)
    ddp = load_potential(ddp_dir / "checkpoints" / "model.pt")(batch)
    np.testing.assert_allclose(ddp["energy"].numpy(), single["energy"].numpy(), rtol=1e-9)
    np.testing.assert_allclose(ddp["forces"].numpy(), single["forces"].numpy(), rtol=1e-7, atol=1e-9)
