"""``MDValidation``: a short MD run with the model being trained, every few epochs, logged beside the losses.

Configured by the validated ``[training.md_validation]`` section:

    MDValidation(MDValidationConfig(every_n_epochs=5, steps=200), seed=0)

At the end of every ``every_n_epochs``-th training epoch (after validation), the evaluation weights (the EMA
when one is kept) are copied, scripted and run with ``physml_md.md.runner.run_md`` from the starting structure
(``structure``, or the first training structure). Logged: ``md/stable`` (1 or 0), ``md/min_distance``
(angstrom), ``md/max_force`` (eV/angstrom), ``md/drift`` (meV/atom/ps, NVE) or ``md/temperature`` (K, NVT)
and ``md/steps`` (steps done before a blow-up). With ``stop_on_blowup`` a blow-up stops training (after this
epoch's checkpoint); otherwise it is only reported. Every process runs the same (seeded) MD, so the decision
is the same on every rank of a DDP run.
"""

from __future__ import annotations

import copy

import lightning
from ase import Atoms
from lightning.pytorch.utilities import rank_zero_info

from physml_md.training.schema_training import MDValidationConfig

__all__ = ["MDValidation"]


class MDValidation(lightning.Callback):
    """``config``: the ``[training.md_validation]`` section (``every_n_epochs`` = 0: the callback never runs);
    ``structure``: the starting structure (default: ``config.structures``, else the first training structure);
    ``seed``: of the initial velocities."""

    def __init__(self, config: MDValidationConfig, structure: Atoms | None = None, seed: int = 0):
        self.config = config
        self.seed = seed
        if structure is None and config.structures is not None:
            from ase.io import read

            structure = read(config.structures, index=config.index)
        self.structure: Atoms | None = structure
        self.last = None  # the last run's MDResult

    def _start(self, trainer) -> Atoms:
        if self.structure is None:
            from physml_md.data.structures import dict_to_atoms

            datamodule = getattr(trainer, "datamodule", None)
            if datamodule is None or not getattr(datamodule, "splits", None):
                raise ValueError("MDValidation needs a structure to start from: pass structure=... (a file or Atoms)")
            self.structure = dict_to_atoms(datamodule.splits["train"][0])
        return self.structure

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        config = self.config
        if trainer.sanity_checking or not config.every_n_epochs or (trainer.current_epoch + 1) % config.every_n_epochs:
            return
        from physml_md.md.metrics import energy_drift
        from physml_md.md.runner import run_md

        model = copy.deepcopy(pl_module.evaluation_model).requires_grad_(False)
        result = run_md(
            model,
            self._start(trainer),
            engine=config.engine,
            ensemble=config.ensemble,
            temperature=config.temperature,
            timestep=config.timestep,
            steps=config.steps,
            report_every=config.report_every,
            seed=self.seed,
            min_distance=config.min_distance,
            max_force=config.max_force,
            keep_positions=False,
            device=str(pl_module.device),
        )
        self.last = result
        metrics = {
            "md/stable": float(result.stable),
            "md/min_distance": result.min_distance,
            "md/max_force": result.max_force,
            "md/steps": float(result.steps_done),
        }
        if result.stable and config.ensemble == "nve" and len(result.times_fs) >= 3:
            metrics["md/drift"] = energy_drift(
                result.times_fs, result.total_energies, result.n_atoms
            ).drift_mev_per_atom_per_ps
        elif result.stable:
            metrics["md/temperature"] = sum(result.temperatures_k) / len(result.temperatures_k)
        for name, value in metrics.items():
            pl_module.log(name, float(value), on_epoch=True, sync_dist=False)
        if not result.stable:
            message = (
                f"MD validation after epoch {trainer.current_epoch}: blow-up at step {result.blow_up_step} of "
                f"{config.steps}: {result.blow_up.message}"
            )
            rank_zero_info(message + ("; stopping training" if config.stop_on_blowup else ""))
            if config.stop_on_blowup:
                trainer.should_stop = True
