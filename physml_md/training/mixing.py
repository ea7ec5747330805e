"""Loss-weight mixing: each loss weight moves toward a target weight, epoch by epoch.

Two schedules:

- ``"step"`` (modelforge's semantics): after every training epoch the weight changes by ``mixing_steps``
  (signed) and stops at ``target_weight``;
- ``"linear"``: after ``e`` epochs the weight is ``w0 + (target - w0) * min(e / mixing_epochs, 1)``.

The weights are a function of the number of finished epochs (``trainer.current_epoch`` at the start of an
epoch), which Lightning restores on resume, so a resumed run continues the mixing where it stopped; the current
weights are also stored in the callback's state inside every checkpoint (and logged as ``weight/<component>``
by the LightningModule, which reads them from ``pl_module.loss_weights``).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from lightning.pytorch.callbacks import Callback

from physml_md.training.schema_training import LossConfig

__all__ = ["LossWeightMixing", "mixed_weight"]


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
        current = {}
        for name, initial in self.initial.items():
            if self.schedule == "linear":
                current[name] = mixed_weight(
                    initial, self.target.get(name), self.epochs_done, span=self.spans.get(name)
                )
            else:
                current[name] = mixed_weight(
                    initial, self.target.get(name), self.epochs_done, step=self.steps.get(name)
                )
        return current

    def _sync(self, trainer, pl_module) -> None:
        self.epochs_done = int(trainer.current_epoch)
        pl_module.loss_weights = self.weights()

    def on_fit_start(self, trainer, pl_module) -> None:
        self._sync(trainer, pl_module)

    def on_train_start(self, trainer, pl_module) -> None:
        # after a checkpoint was restored (on_fit_start runs before that, and a run resumed mid-epoch does not
        # call on_train_epoch_start for the interrupted epoch)
        self._sync(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(trainer, pl_module)

    def state_dict(self) -> Dict[str, Any]:
        return {"epochs_done": self.epochs_done, "weights": self.weights(), "schedule": self.schedule}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.epochs_done = int(state_dict["epochs_done"])
