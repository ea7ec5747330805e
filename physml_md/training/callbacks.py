"""Loss-weight mixing (each loss weight moves toward a target weight, epoch by epoch) and MD validation.

Schedules: ``"step"`` (modelforge's: the weight changes by ``mixing_steps`` after every epoch, stopping at
``target_weight``) and ``"linear"`` (after ``e`` epochs ``w0 + (target - w0) * min(e / mixing_epochs, 1)``). The weights
are a function of the finished epochs (``trainer.current_epoch``, restored on resume), so a resumed run continues the
mixing; they are also stored in the callback's checkpoint state and logged as ``weight/<component>``.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Mapping

import lightning
from ase import Atoms
from ase.io import read
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from physml_md.config.training import LossConfig, MDValidationConfig
from physml_md.data.structures import dict_to_atoms
from physml_md.md.runner import run_md
from physml_md.validation.metrics import energy_drift

__all__ = ["LossWeightMixing", "mixed_weight", "MDValidation"]


def mixed_weight(
    initial: float, target: float | None, epochs: int, step: float | None = None, span: int | None = None
) -> float:
    """Weight after ``epochs`` finished epochs (``step`` for the step schedule, ``span`` for the linear one)."""
    if target is None:
        return initial
    if span is not None:
        return initial + (target - initial) * min(epochs / span, 1.0)
    if step is None or step == 0.0:
        return initial
    moved = initial + step * epochs
    return min(moved, target) if step > 0 else max(moved, target)


class LossWeightMixing(Callback):
    """Moves ``pl_module.loss_weights`` toward their targets after every training epoch.

    weights: initial weight of every component; target_weight / mixing_steps / mixing_epochs: per component,
    only for the components that move; ``schedule`` is "step" or "linear". ``from_config`` takes them from the
    validated ``[training.loss_parameter]`` section, which checks them; they are not checked again here.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        target_weight: Mapping[str, float] | None = None,
        mixing_steps: Mapping[str, float] | None = None,
        mixing_epochs: Mapping[str, int] | None = None,
        schedule: str = "step",
    ):
        self.initial = dict(weights)
        self.target = dict(target_weight or {})
        self.steps = dict(mixing_steps or {})
        self.spans = dict(mixing_epochs or {})
        self.schedule = schedule
        self.epochs_done = 0

    @classmethod
    def from_config(cls, loss: LossConfig) -> LossWeightMixing:
        """From the ``[training.loss_parameter]`` section (``loss.weight`` has every listed component)."""
        return cls(loss.weight, loss.target_weight, loss.mixing_steps, loss.mixing_epochs, loss.schedule)

    @property
    def state_key(self) -> str:
        return "LossWeightMixing"

    def weights(self) -> Dict[str, float]:
        """The weights after ``self.epochs_done`` epochs."""
        key, moves = ("span", self.spans) if self.schedule == "linear" else ("step", self.steps)
        done = self.epochs_done
        return {
            name: mixed_weight(initial, self.target.get(name), done, **{key: moves.get(name)})
            for name, initial in self.initial.items()
        }

    def _sync(self, trainer, pl_module) -> None:
        self.epochs_done = int(trainer.current_epoch)
        pl_module.loss_weights = self.weights()

    # on_train_start too: it follows the restore of a checkpoint (on_fit_start precedes it), and a run resumed
    # mid-epoch does not call on_train_epoch_start for the interrupted epoch
    on_fit_start = on_train_start = on_train_epoch_start = _sync

    def state_dict(self) -> Dict[str, Any]:
        return {"epochs_done": self.epochs_done, "weights": self.weights(), "schedule": self.schedule}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.epochs_done = int(state_dict["epochs_done"])


class MDValidation(lightning.Callback):
    """A short MD run with the model being trained, every ``every_n_epochs``-th epoch, logged beside the losses.

    ``config``: the ``[training.md_validation]`` section, the runs' settings (``every_n_epochs`` = 0: never runs);
    ``structure``: the starting structure (default: ``config.structures``, else the first training structure);
    ``seed``: of the initial velocities, when ``config.seed`` is unset. At the end of the epoch (after validation)
    the evaluation weights (the EMA when one is kept) are copied and run with ``run_md``. Logged: ``md/stable`` (1
    or 0), ``md/min_distance`` (angstrom), ``md/max_force`` (eV/angstrom), ``md/drift`` (meV/atom/ps, NVE) or
    ``md/temperature`` (K, NVT) and ``md/steps`` (steps done before a blow-up). With ``stop_on_blowup`` a blow-up
    stops training (after this epoch's checkpoint). Every process runs the same (seeded) MD, so the decision is the
    same on every rank of a DDP run."""

    def __init__(self, config: MDValidationConfig, structure: Atoms | None = None, seed: int | None = None):
        self.config = config if config.seed is not None or seed is None else config.model_copy(update={"seed": seed})
        if structure is None and config.structures is not None:
            structure = read(config.structures, index=config.index)
        self.structure: Atoms | None = structure
        self.last = None  # the last run's MDResult

    def _start(self, trainer) -> Atoms:
        if self.structure is None:
            datamodule = getattr(trainer, "datamodule", None)
            if datamodule is None or not getattr(datamodule, "splits", None):
                raise ValueError("MDValidation needs a structure to start from: pass structure=... (a file or Atoms)")
            self.structure = dict_to_atoms(datamodule.splits["train"][0])
        return self.structure

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        config = self.config
        if trainer.sanity_checking or not config.every_n_epochs or (trainer.current_epoch + 1) % config.every_n_epochs:
            return
        model = copy.deepcopy(pl_module.evaluation_model).requires_grad_(False)
        result = run_md(model, self._start(trainer), config, steps=config.steps, keep_positions=False,
                        device=config.device or str(pl_module.device))  # fmt: skip
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
