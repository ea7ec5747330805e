"""physml_md/learning/committee_training.py: N members trained from one configuration, one exported committee file,
resuming a killed committee run, and whether the committee's uncertainty ranks structures by their error."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.calculators.emt import EMT

from physml_md.cli.main import main
from physml_md.config.load import ConfigError, config_from_dict
from physml_md.export import load_potential, read_metadata
from physml_md.export.checkpoint import load_checkpoint
from physml_md.integrations.ase import PhysMLCalculator
from physml_md.learning.committee_training import MEMBER_RECORD, member_config, train_committee
from physml_md.md.uncertainty import rank_correlation
from tests.helpers import rattled_cu


def test_committee_run_writes_members_and_one_committee_file(cu_committee):
    result, raw = cu_committee
    root = Path(raw["trainer"]["default_root_dir"])
    assert result.model_path == root / "model.pt"
    metadata = read_metadata(result.model_path)
    assert metadata["committee"] == 3
    assert len(metadata["training"]["checkpoints"]) == 3
    for index, member in enumerate(result.members):
        assert (root / f"member_{index}" / MEMBER_RECORD).is_file()
        assert member.best_checkpoint.is_file()
        kwargs = load_checkpoint(member.best_checkpoint)["hyper_parameters"]["model_kwargs"]
        assert kwargs["seed"] == raw["model"]["seed"] + index  # other initial weights
    # bootstrap: each member saw its own sample of the training split
    hashes = {load_checkpoint(m.best_checkpoint)["hyper_parameters"]["data_sha256"] for m in result.members}
    assert len(hashes) == 3
    metrics = result.test_metrics
    assert metrics["force_mae_mev_per_angstrom"] > 0 and metrics["mean_forces_std_mev_per_angstrom"] > 0
    assert metadata["training"]["committee_metrics"]["split"] == "test"


def test_every_export_path_writes_the_same_metadata_keys_and_agreement_rows(cu_committee, tmp_path):
    """One export path (``export_model``): a member's file from training, the committee's file, and both exported
    again by ``physml-md export`` carry the same metadata keys and the same agreement rows (every engine)."""
    result, _ = cu_committee
    checkpoints = [str(member.best_checkpoint) for member in result.members]
    assert main(["export", checkpoints[0], str(tmp_path / "member.pt")]) == 0
    assert main(["export", *checkpoints, str(tmp_path / "committee.pt")]) == 0
    files = {
        "training": result.members[0].model_path,
        "committee training": result.model_path,
        "cli": tmp_path / "member.pt",
        "cli committee": tmp_path / "committee.pt",
    }
    documents = {path: read_metadata(file) for path, file in files.items()}
    keys = {path: set(document) for path, document in documents.items()}
    rows = {path: set(document["agreement"]["differences"]) for path, document in documents.items()}
    assert len({frozenset(k) for k in keys.values()}) == 1, keys
    assert len({frozenset(r) for r in rows.values()}) == 1, rows
    assert {"file vs eager", "ase vs file", "openmm pythonforce vs file"} <= rows["cli"]
    assert {"data_sha256", "periodic", "shortest_pair_distances", "training"} <= keys["cli"]


@pytest.mark.filterwarnings(
    "ignore::physml_md.integrations.ase.ExtrapolationWarning"
)  # out of distribution, on purpose
def test_uncertainty_ranks_structures_by_their_force_error(cu_committee):
    """Out of the training distribution (rattled far more than the training data), the structures the committee is
    least sure of are those it gets most wrong."""
    result, _ = cu_committee
    calc = PhysMLCalculator(result.model_path)
    errors, uncertainties = [], []
    for seed, amplitude in enumerate(np.linspace(0.02, 0.35, 16)):
        atoms = rattled_cu(seed)
        atoms.rattle(float(amplitude), seed=100 + seed)
        reference = atoms.copy()
        reference.calc = EMT()
        atoms.calc = calc
        error = np.linalg.norm(atoms.get_forces() - reference.get_forces(), axis=1).max()
        errors.append(error)
        uncertainties.append(calc.get_property("max_forces_std"))
    rho = rank_correlation(np.array(errors), np.array(uncertainties))
    assert rho > 0.6, f"Spearman {rho:.2f}: the uncertainty does not rank the structures by their error"


def test_a_killed_committee_run_resumes_at_the_unfinished_member(cu_committee):
    result, raw = cu_committee
    raw = copy.deepcopy(raw)
    root = Path(raw["trainer"]["default_root_dir"])
    before = {i: m.best_checkpoint.stat().st_mtime_ns for i, m in enumerate(result.members)}
    (root / "member_2" / MEMBER_RECORD).unlink()  # member 2 "was killed" before it finished
    again = train_committee(config_from_dict(raw), verbose=False)
    assert [m.best_checkpoint.stat().st_mtime_ns for m in again.members[:2]] == [before[0], before[1]]
    assert (root / "member_2" / MEMBER_RECORD).is_file()
    assert load_potential(again.model_path).metadata["committee"] == 3


def test_a_committee_directory_of_another_configuration_is_refused(cu_committee):
    _, raw = cu_committee
    raw = copy.deepcopy(raw)
    raw["training"]["lr"] = 0.5
    with pytest.raises(ConfigError, match="another configuration"):
        train_committee(config_from_dict(raw), verbose=False)


def test_member_config_changes_seeds_and_directory_only(tiny_config):
    config = config_from_dict(tiny_config)
    member = member_config(config, 2)
    assert member.model.seed == config.model.seed + 2 and member.training.seed == config.training.seed + 2
    assert Path(member.trainer["default_root_dir"]) == Path(config.trainer["default_root_dir"]) / "member_2"
    assert member.training.lr == config.training.lr and member.data == config.data


def test_cli_trains_a_committee_and_exports_several_checkpoints_as_one(tiny_config, tmp_path, capsys):
    tiny_config["trainer"]["max_epochs"] = 2
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", str(path), "--committee", "2"]) == 0
    root = Path(tiny_config["trainer"]["default_root_dir"])
    assert read_metadata(root / "model.pt")["committee"] == 2
    checkpoints = [json.loads((root / f"member_{i}" / MEMBER_RECORD).read_text())["best_checkpoint"] for i in (0, 1)]
    out = tmp_path / "again.pt"
    assert main(["export", *checkpoints, str(out)]) == 0
    exported = load_potential(out)
    assert exported.metadata["committee"] == 2
    data = {"positions": torch.tensor(rattled_cu().positions), "atomic_numbers": torch.full((32,), 29)}
    assert exported(dict(data))["forces_std"].shape == (32,)
    assert main(["train", str(path), "--committee", "2", "--ckpt-path", checkpoints[0]]) == 2
    assert "--ckpt-path resumes one model" in capsys.readouterr().err


@pytest.mark.slow
def test_members_trained_in_separate_processes_equal_those_trained_in_turn(tiny_config, tmp_path):
    """committee_processes = 2: each member in its own (spawned) process, the same weights as one after the other."""
    tiny_config["trainer"]["max_epochs"] = 2
    files = {}
    for processes in (1, 2):
        raw = copy.deepcopy(tiny_config)
        raw["trainer"]["default_root_dir"] = str(tmp_path / f"processes_{processes}")
        raw["training"].update(committee=2, committee_processes=processes)
        files[processes] = train_committee(config_from_dict(raw), verbose=False).model_path
    data = {"positions": torch.tensor(rattled_cu().positions), "atomic_numbers": torch.full((32,), 29)}
    one, two = (load_potential(files[p])(dict(data)) for p in (1, 2))
    for key in ("energy", "forces", "forces_std"):
        np.testing.assert_allclose(two[key].numpy(), one[key].numpy(), rtol=1e-12, atol=1e-12, err_msg=key)
