"""physml_md.training.module: PotentialModule, driven by a Lightning Trainer through train(), lowers every loss."""

from physml_md.training.config import config_from_dict
from physml_md.training.run import train
from tests.training.helpers import metric_column


def test_training_lowers_energy_force_and_stress_losses(tiny_config):
    tiny_config["trainer"]["max_epochs"] = 8
    result = train(config_from_dict(tiny_config), verbose=False)
    metrics_csv = result.run_dir / "metrics.csv"
    for name, factor in (("per_system_energy", 1.0), ("per_atom_force", 0.5), ("per_system_stress", 0.7)):
        losses = metric_column(metrics_csv, f"train/{name}/loss")
        assert losses[-1] < factor * losses[0], (name, losses)
