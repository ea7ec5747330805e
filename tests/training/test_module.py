"""physml_md.training.module: PotentialModule, driven by a Lightning Trainer through train(), lowers every loss."""

import pytest
import torch

from physml_md.config.load import config_from_dict
from physml_md.export.checkpoint import load_checkpoint, model_kwargs
from physml_md.models import build_model
from physml_md.training.module import EMA_UPDATES, PotentialModule, ema_decay
from physml_md.training.run import train
from tests.training.helpers import metric_column, validated


def test_training_lowers_energy_force_and_stress_losses(tiny_config):
    tiny_config["trainer"]["max_epochs"] = 8
    result = train(config_from_dict(tiny_config), verbose=False)
    metrics_csv = result.run_dir / "metrics.csv"
    for name, factor in (("per_system_energy", 1.0), ("per_atom_force", 0.5), ("per_system_stress", 0.7)):
        losses = metric_column(metrics_csv, f"train/{name}/loss")
        assert losses[-1] < factor * losses[0], (name, losses)


# ----------------------------------------------------------------------------- EMA warm-up
# The average's decay after t updates is min(decay, (1 + t) / (10 + t)): a short run exports weights that moved
# with training (issue 22, item 8: 4 epochs with decay 0.99 exported nearly the initial weights), a long one
# averages with `decay` itself, and t travels in the checkpoint.

KWARGS = {"name": "painn", "species": [29], "cutoff": 4.0, "features": 8, "n_interactions": 1, "n_rbf": 4, "seed": 3}


def _module(decay):
    return PotentialModule(validated({"training": {"ema": {"decay": decay}}}), dict(KWARGS))


def _vector(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()


def test_ema_decay_sequence_warms_up_to_the_configured_decay():
    expected = [0.1, 2 / 11, 3 / 12, 4 / 13, 5 / 14]
    assert [ema_decay(0.99, t) for t in range(5)] == pytest.approx(expected, rel=1e-15)
    # (1 + t) / (10 + t) reaches 0.99 at t = 890, 0.5 at t = 8; beyond, the configured decay itself
    assert ema_decay(0.99, 889) < 0.99 and ema_decay(0.99, 890) == ema_decay(0.99, 10**6) == 0.99
    assert ema_decay(0.5, 7) < 0.5 and ema_decay(0.5, 8) == 0.5
    decays = [ema_decay(0.999, t) for t in range(20_000)]
    assert all(a <= b for a, b in zip(decays, decays[1:])) and decays[-1] == 0.999


def test_ema_updates_follow_the_warm_up_then_the_decay():
    """The module's average against the recurrence computed by hand in float64, through warm-up and beyond."""
    torch.manual_seed(0)
    module = _module(0.5)
    reference = _vector(module.ema)
    for t in range(12):  # t >= 8 uses the configured 0.5 (long runs unchanged)
        with torch.no_grad():
            for p in module.model.parameters():
                p.add_(torch.randn_like(p))
        module._update_ema()
        d = 0.5 if t >= 8 else (1 + t) / (10 + t)
        reference = d * reference + (1 - d) * _vector(module.model)
        torch.testing.assert_close(_vector(module.ema), reference, rtol=1e-13, atol=1e-13)
    assert int(module.state_dict()[EMA_UPDATES]) == 12


def test_a_checkpoint_without_the_update_count_continues_at_its_step():
    """Checkpoints written before the warm-up existed: their average is taken as past it (t = optimizer steps)."""
    module = _module(0.99)
    state = {k: v for k, v in module.state_dict().items() if k != EMA_UPDATES}
    checkpoint = {"state_dict": state, "global_step": 1234}
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])  # strict, as Lightning loads it
    assert int(getattr(module, EMA_UPDATES)) == 1234


def test_a_short_run_exports_weights_close_to_the_trained_ones(tiny_config):
    """Six optimizer steps with decay 0.99: without warm-up the average would still be 94 % the initial weights."""
    tiny_config["trainer"]["max_epochs"] = 2
    tiny_config["trainer"]["checkpoint"] = {"save_last": True}
    tiny_config["training"]["ema"] = {"decay": 0.99}
    result = train(config_from_dict(tiny_config), verbose=False)
    state = load_checkpoint(result.run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    assert int(state[EMA_UPDATES]) == 6
    names = [k.removeprefix("model.") for k in state if k.startswith("model.") and "ema." + k[6:] in state]
    initial = dict(build_model(**model_kwargs(load_checkpoint(result.best_checkpoint))).named_parameters())
    names = [n for n in names if n in initial]

    def vector(get):
        return torch.cat([get(n).detach().reshape(-1).double() for n in names])

    trained = vector(lambda n: state["model." + n])
    averaged = vector(lambda n: state["ema." + n])
    start = vector(lambda n: initial[n])
    moved = (trained - start).norm()
    assert moved > 0
    # measured: 0.05 with the warm-up, 0.96 without
    assert (averaged - trained).norm() < 0.25 * moved
