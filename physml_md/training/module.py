"""``PotentialModule``: the LightningModule that trains a potential.

It builds the model from the ``build_model`` arguments and keeps an exponential moving average (EMA) of the weights
for validation, testing and export. The EMA warms up: its decay after ``t`` updates is ``min(decay, (1 + t) /
(10 + t))`` (``ema_decay``), ``t`` being a buffer (``ema_updates``) saved in every checkpoint, so a resume is exact.
Forces and stress come from autograd, so the Trainer must be created with ``inference_mode=False``.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Set, Tuple

import lightning
import torch
import torchmetrics
from torch import Tensor

from physml_md.config.load import Config, config_to_dict
from physml_md.data import keys as K
from physml_md.export.checkpoint import MODEL_KWARGS
from physml_md.models import build_model
from physml_md.training.losses import component_errors, masked_pair
from physml_md.units import EV_TO_MEV

__all__ = ["PotentialModule", "ema_decay", "EMA_UPDATES"]

_STAGES = ("train", "val", "test")
EMA_UPDATES = "ema_updates"  # the buffer (and state-dict key) counting the EMA updates done
# metric -> its name in the progress bar, where it shows in meV/atom (E) or meV/angstrom (F), as in the epoch line
_PROGRESS_BAR = {
    f"{stage}__{component}__mae": f"{symbol}_{stage}"
    for stage in ("train", "val")
    for symbol, component in (("E", "per_atom_energy"), ("F", "per_atom_force"))
}


def ema_decay(decay: float, updates: int) -> float:
    """The EMA decay of update number ``updates`` (0 for the first): ``min(decay, (1 + t) / (10 + t))``."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


def _metric_names(components) -> List[str]:
    names = list(components)
    if "per_system_energy" in names:
        names.append("per_atom_energy")
    return names


class PotentialModule(lightning.LightningModule):
    """Trains ``build_model(**model_kwargs)`` with the losses, optimizer and scheduler of ``config``.

    config: the validated configuration (its plain-dict form is stored in the checkpoint); model_kwargs: the
    ``build_model`` arguments, stored so that ``potential_from_checkpoint`` rebuilds the model without Lightning.
    Carried into the exported metadata: data_sha256 (hash of the training split), periodic (True: periodic data,
    False: molecules, None: both) and shortest_pair_distances (per element pair; the engines warn below them).
    """

    def __init__(
        self,
        config: Config,
        model_kwargs: Dict[str, Any],
        data_sha256: str | None = None,
        periodic: bool | None = None,
        shortest_pair_distances: Dict[str, float] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(
            {
                "config": config_to_dict(config),
                MODEL_KWARGS: model_kwargs,
                "data_sha256": data_sha256,
                "periodic": periodic,
                "shortest_pair_distances": shortest_pair_distances,
            }
        )
        training = config.training
        loss = training.loss_parameter
        self.components: List[str] = list(loss.loss_components)
        self.per_atom_energy = loss.per_atom_energy
        self.loss_weights: Dict[str, float] = dict(loss.weight)
        # val/loss and test/loss weigh the components with the final weights (the targets of loss-weight mixing),
        # fixed for the whole run, so that a monitor on val/loss compares epochs fairly while the training weights
        # move; train/loss is the optimised loss, with the current weights
        self.evaluation_weights: Dict[str, float] = {**loss.weight, **loss.target_weight}
        self.training_config = training
        self.model = build_model(**model_kwargs)
        decay = training.ema.decay
        self.ema_decay = decay
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if decay > 0.0 else None
        self.register_buffer(EMA_UPDATES, torch.zeros((), dtype=torch.int64))
        self.metrics = torch.nn.ModuleDict()
        for stage in _STAGES:
            for name in _metric_names(self.components):
                self.metrics[f"{stage}__{name}__mae"] = torchmetrics.MeanAbsoluteError()
                self.metrics[f"{stage}__{name}__rmse"] = torchmetrics.MeanSquaredError(squared=False)
        self._sums: Dict[str, Tuple[Tensor, int]] = {}
        self._updated: Set[str] = set()

    # ------------------------------------------------------------------ model used for evaluation / export
    @property
    def evaluation_model(self) -> torch.nn.Module:
        """The EMA weights when an EMA is kept, else the trained weights."""
        return self.ema if self.ema is not None else self.model

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        with torch.enable_grad():
            return self.evaluation_model(batch)

    # ------------------------------------------------------------------ steps
    # Per-batch values are accumulated here and logged once per epoch (one `self.log` per name and epoch):
    # logging every batch through Lightning cost about 10 % of a training step for a small model.
    def _step(self, batch: Dict[str, Tensor], stage: str) -> Tensor:
        model = self.model if stage == "train" else self.evaluation_model
        with torch.enable_grad():
            outputs = model(batch)
        errors = component_errors(self.components, outputs, batch, self.per_atom_energy)
        n_structures = int(batch[K.N_ATOMS].shape[0])
        total = outputs[K.ENERGY].sum() * 0.0
        weights = self.loss_weights if stage == "train" else self.evaluation_weights
        for name, (loss, prediction, reference) in errors.items():
            total = total + weights[name] * loss
            self._accumulate(f"{stage}/{name}/loss", loss.detach(), n_structures)
            if name != "per_system_energy" and prediction.numel() > 0:
                self._update_metrics(stage, name, prediction.detach(), reference)
        if "per_system_energy" in errors:
            # energy metrics in both normalisations, whatever the loss uses: eV per structure and eV per atom
            for name, per_atom in (("per_system_energy", False), ("per_atom_energy", True)):
                pair = masked_pair("per_system_energy", outputs, batch, per_atom)
                if pair is not None and pair[0].numel() > 0:
                    self._update_metrics(stage, name, pair[0].detach(), pair[1])
        self._accumulate(f"{stage}/loss", total.detach(), n_structures)
        return total

    def _accumulate(self, name: str, value: Tensor, weight: int) -> None:
        total, count = self._sums.get(name, (0.0, 0))
        self._sums[name] = (total + value * weight, count + weight)

    def _update_metrics(self, stage: str, name: str, prediction: Tensor, reference: Tensor) -> None:
        for kind in ("mae", "rmse"):
            key = f"{stage}__{name}__{kind}"
            self.metrics[key].update(prediction, reference)
            self._updated.add(key)

    def _log_epoch(self, stage: str) -> None:
        """Log the epoch's mean losses and metrics of ``stage`` (averaged over the processes of a DDP run)."""
        for name in [n for n in self._sums if n.startswith(stage + "/")]:
            total, count = self._sums.pop(name)
            self.log(name, total / count, on_step=False, on_epoch=True, sync_dist=True, prog_bar=name == "val/loss")
        for key in sorted(k for k in self._updated if k.startswith(stage + "__")):
            metric = self.metrics[key]
            # a metric without any labelled row this epoch is not reported; compute() syncs across processes
            value = metric.compute()
            self.log(key.replace("__", "/"), value, on_step=False, on_epoch=True)
            if key in _PROGRESS_BAR:  # the energy and force MAEs in meV, in the progress bar only
                self.log(
                    _PROGRESS_BAR[key], value * EV_TO_MEV, on_step=False, on_epoch=True, prog_bar=True, logger=False
                )
            metric.reset()
            self._updated.discard(key)

    def on_train_epoch_start(self) -> None:
        self._sums = {k: v for k, v in self._sums.items() if not k.startswith("train/")}

    def training_step(self, batch: Dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")
        self.log("loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, logger=False)
        return loss

    def validation_step(self, batch: Dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: Dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: Dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Dict[str, Tensor]:
        with torch.enable_grad():
            outputs = self.evaluation_model(batch)
        return {key: value.detach() for key, value in outputs.items()}

    # ------------------------------------------------------------------ EMA
    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # here, not in on_train_batch_end: checkpoint callbacks run before that hook, and a checkpoint must hold
        # the average of exactly the weights it holds
        self._update_ema()

    def _update_ema(self) -> None:
        if self.ema is None:
            return
        updates = getattr(self, EMA_UPDATES)
        decay = ema_decay(self.ema_decay, int(updates))
        with torch.no_grad():
            averaged = list(self.ema.parameters())
            current = [p.detach() for p in self.model.parameters()]
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
            updates += 1

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # a checkpoint written before the warm-up existed has no count: its average is past any warm-up, so it
        # continues with the full decay (t = the optimizer steps done)
        state = checkpoint.get("state_dict", {})
        if EMA_UPDATES not in state:
            state[EMA_UPDATES] = torch.tensor(int(checkpoint.get("global_step", 0)), dtype=torch.int64)

    # ------------------------------------------------------------------ optimisation
    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")
        for name, weight in self.loss_weights.items():
            self.log(f"weight/{name}", float(weight), on_step=False, on_epoch=True)
        # Lightning 2.6 does not step epoch-interval schedulers at the end of an epoch that was resumed mid-way
        # (FitLoop.on_advance_end skips them while `restarting`), so a resumed run would drift from an
        # uninterrupted one; step them here in that one case (tests/training/test_restart.py).
        loop = self.trainer.fit_loop
        if loop.restarting and loop.restarted_mid_epoch and loop.epoch_loop._num_ready_batches_reached():
            loop.epoch_loop.update_lr_schedulers("epoch", update_plateau_schedulers=False)
            loop.epoch_loop.update_lr_schedulers("epoch", update_plateau_schedulers=True)

    def configure_optimizers(self):
        training = self.training_config
        optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[training.optimizer]
        optimizer = optimizer_class(self.model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
        schedule = training.lr_scheduler
        if schedule.name is None:
            return optimizer
        if schedule.name == "reduce_on_plateau":
            options = schedule.model_dump(include={"factor", "patience", "min_lr", "cooldown"})
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", **options)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": schedule.monitor}}
        if schedule.name == "cosine":
            steps = schedule.interval == "step"
            default_t_max = int(self.trainer.estimated_stepping_batches if steps else self.trainer.max_epochs or 1)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=schedule.t_max or default_t_max, eta_min=schedule.eta_min
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": schedule.interval}}
        scheduler = torch.optim.lr_scheduler.OneCycleLR(  # one_cycle
            optimizer,
            max_lr=schedule.max_lr or 10.0 * training.lr,
            total_steps=int(self.trainer.estimated_stepping_batches),
            pct_start=schedule.pct_start,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
