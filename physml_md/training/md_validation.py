"""``MDValidation``: a short MD run with the model being trained, every few epochs, logged beside the losses.

Configured from ``[training.md_validation]`` (``MDValidationConfig``), or built directly:

    MDValidation(every_n_epochs=5, engine="ase", ensemble="nve", steps=200, temperature=300.0)

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
from pathlib import Path

import lightning
from ase import Atoms
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["MDValidation"]


class MDValidation(lightning.Callback):
    def __init__(
        self,
        every_n_epochs: int = 1,
        engine: str = "ase",
        ensemble: str = "nve",
        steps: int = 200,
        temperature: float = 300.0,
        timestep: float = 0.5,
        structure: Atoms | str | Path | None = None,
        index: int = 0,
        stop_on_blowup: bool = False,
        min_distance: float = 0.5,
        max_force: float = 100.0,
        report_every: int = 10,
        seed: int = 0,
    ):
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive number of epochs, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.engine, self.ensemble, self.steps = engine, ensemble, steps
        self.temperature, self.timestep = temperature, timestep
        self.stop_on_blowup = stop_on_blowup
        self.min_distance, self.max_force = min_distance, max_force
        self.report_every, self.seed = report_every, seed
        if isinstance(structure, (str, Path)):
            from ase.io import read

            structure = read(structure, index=index)
        self.structure: Atoms | None = structure
        self.last = None  # the last run's MDResult

    @classmethod
    def from_config(cls, config, seed: int = 0) -> MDValidation:
        """From ``MDValidationConfig`` (``[training.md_validation]``)."""
        return cls(
            every_n_epochs=config.every_n_epochs,
            engine=config.engine,
            ensemble=config.ensemble,
            steps=config.steps,
            temperature=config.temperature,
            timestep=config.timestep,
            structure=config.structures,
            index=config.index,
            stop_on_blowup=config.stop_on_blowup,
            min_distance=config.min_distance,
            max_force=config.max_force,
            report_every=config.report_every,
            seed=seed,
        )

    def _start(self, trainer) -> Atoms:
        if self.structure is None:
            from physml_md.data.structures import dict_to_atoms

            datamodule = getattr(trainer, "datamodule", None)
            if datamodule is None or not getattr(datamodule, "splits", None):
                raise ValueError("MDValidation needs a structure to start from: pass structure=... (a file or Atoms)")
            self.structure = dict_to_atoms(datamodule.splits["train"][0])
        return self.structure

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        from physml_md.md.metrics import energy_drift
        from physml_md.md.runner import run_md

        model = copy.deepcopy(pl_module.evaluation_model).requires_grad_(False)
        result = run_md(
            model,
            self._start(trainer),
            engine=self.engine,
            ensemble=self.ensemble,
            temperature=self.temperature,
            timestep=self.timestep,
            steps=self.steps,
            report_every=self.report_every,
            seed=self.seed,
            min_distance=self.min_distance,
            max_force=self.max_force,
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
        if result.stable and self.ensemble == "nve" and len(result.times_fs) >= 3:
            metrics["md/drift"] = energy_drift(result.times_fs, result.total, result.n_atoms).drift_mev_per_atom_per_ps
        elif result.stable:
            metrics["md/temperature"] = sum(result.temperature) / len(result.temperature)
        for name, value in metrics.items():
            pl_module.log(name, float(value), on_epoch=True, sync_dist=False)
        if not result.stable:
            message = (
                f"MD validation after epoch {trainer.current_epoch}: blow-up at step {result.blow_up_step} of "
                f"{self.steps}: {result.blow_up.message}"
            )
            rank_zero_info(message + ("; stopping training" if self.stop_on_blowup else ""))
            if self.stop_on_blowup:
                trainer.should_stop = True
