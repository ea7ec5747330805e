"""Checkpoints are read with weights_only=True: a pickled payload is refused before it can run."""

import pytest
import torch

from physml_md.export.checkpoint import CheckpointError, load_checkpoint, potential_from_checkpoint
from physml_md.models import build_model
from tests.helpers import PicklePayload


def _checkpoint(model_kwargs, model, ema=None):
    state = {"model." + k: v for k, v in model.state_dict().items()}
    if ema is not None:
        state.update({"ema." + k: v for k, v in ema.state_dict().items()})
    return {"state_dict": state, "hyper_parameters": {"model_kwargs": model_kwargs, "config": {}}}


KWARGS = {"species": [29], "cutoff": 4.0, "features": 8, "n_interactions": 1, "n_rbf": 4, "seed": 3}


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    checkpoint = _checkpoint(KWARGS, build_model(**KWARGS))
    checkpoint["evil"] = PicklePayload(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to load .*weights_only=True"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refusing"):
        potential_from_checkpoint(path)
    assert not marker.exists()
    # the payload is real: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_rebuilds_the_model_and_prefers_ema_weights(tmp_path):
    model = build_model(**KWARGS)
    ema = build_model(**{**KWARGS, "seed": 4})
    path = tmp_path / "good.ckpt"
    torch.save(_checkpoint(KWARGS, model, ema), path)
    loaded = potential_from_checkpoint(path)
    assert not loaded.training
    for name, value in ema.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    raw = potential_from_checkpoint(path, use_ema=False)
    for name, value in model.state_dict().items():
        assert torch.equal(raw.state_dict()[name], value)


def test_other_files_get_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.ckpt")
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        load_checkpoint(tmp_path / "plain.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not written by physml-md"):
        potential_from_checkpoint(tmp_path / "foreign.ckpt")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "text.ckpt")
