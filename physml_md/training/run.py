"""Run a training from a validated configuration: data, model, Lightning Trainer, test, export, plots.

``train(config)`` is what ``physml-md train`` and ``PhysMLModel.train`` call. Outputs go to the logger's
``<trainer.default_root_dir>/version_<n>/``: ``metrics.csv``, ``checkpoints/`` (with ``model.pt``, the exported best
model), ``parity.png`` and ``learning_curves.png``. A run resumed from ``<run>/checkpoints/*.ckpt`` continues in
``<run>/`` (``physml_md.training.logs``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import lightning
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from physml_md.atomic_write import PathLike
from physml_md.config.load import Config, ConfigError, config_to_dict, instantiate_callbacks, trainer_kwargs
from physml_md.data import keys as K
from physml_md.export.checkpoint import (
    exportable_from_checkpoint,
    load_checkpoint,
    model_kwargs,
    potential_from_checkpoint,
)
from physml_md.integrations.engine_agreement import export_model
from physml_md.threads import torch_threads
from physml_md.training.callbacks import LossWeightMixing, MDValidation
from physml_md.training.datamodule import AtomsDataModule
from physml_md.training.figures import learning_curves, parity_plot
from physml_md.training.logs import LEARNING_CURVES, METRIC_UNITS, EpochLog, resumed_csv_logger, resumed_run_dir
from physml_md.training.module import PotentialModule

__all__ = ["TrainResult", "train", "EXPORT_NAME"]

EXPORT_NAME = "model.pt"


@dataclass
class TrainResult:
    """Where a training run put its outputs, and its test-split metrics (empty without a test split)."""

    run_dir: Path
    best_checkpoint: Path | None
    model_path: Path | None
    test_metrics: Dict[str, float] = field(default_factory=dict)
    parity_plot: Path | None = None
    learning_curves: Path | None = None
    md_validation: Dict[str, Any] | None = None  # the last MDValidation run's summary, when one ran


def datamodule_kwargs(config: Config) -> Dict[str, Any]:
    """The AtomsDataModule arguments of a configuration."""
    return {"config": config.data, "dtype": config.model.dtype, "shuffle_seed": config.training.seed}


def build_model_kwargs(config: Config, datamodule: AtomsDataModule) -> Dict[str, Any]:
    """``build_model`` arguments: the [model] section plus statistics of the training split."""
    model, training = config.model, config.training
    self_energies = datamodule.self_energies() if training.remove_self_energies else None
    scale = 1.0
    if training.scale_by_force_rms:
        statistics = datamodule.statistics(self_energies or {})
        forces_rms = statistics.get("forces_rms")
        if forces_rms is not None and math.isfinite(forces_rms) and forces_rms > 0:
            scale = float(forces_rms)
    names = ("name", "dtype", "features", "n_interactions", "n_rbf", "zbl", "charges", "coulomb", "seed")
    return {
        **{name: getattr(model, name) for name in names},
        "species": [int(z) for z in datamodule.species()],
        "cutoff": float(model.cutoff),
        "self_energies": {int(z): float(e) for z, e in (self_energies or {}).items()} or None,
        "scale": scale,
    }


RESUMABLE_MODEL_KEYS = ("export_dtype",)  # [model] keys that a resumed run may change


def _check_work_left(config: Config, checkpoint: Dict[str, Any], ckpt_path: PathLike) -> None:
    """Refuse to resume a run that already reached trainer.max_epochs or max_steps: it would train nothing."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    epochs, steps = progress.get("processed"), checkpoint.get("global_step")
    max_epochs, max_steps = config.trainer.get("max_epochs"), config.trainer.get("max_steps", -1)
    if isinstance(epochs, int) and max_epochs is not None and epochs >= max_epochs:
        done, key, limit = f"{epochs} of trainer.max_epochs = {max_epochs} epochs", "trainer.max_epochs", max_epochs
    elif isinstance(steps, int) and max_steps > 0 and steps >= max_steps:
        done, key, limit = f"{steps} of trainer.max_steps = {max_steps} steps", "trainer.max_steps", max_steps
    else:
        return
    raise ConfigError(
        f"--ckpt-path {ckpt_path}: that run already trained {done}, so resuming would train nothing; to train "
        f"longer, raise {key} (e.g. --set {key}={2 * limit}) and resume again; to use the model as it is, export "
        f"the checkpoint: physml-md export {ckpt_path} model.pt"
    )


def _resumed_model_kwargs(config: Config, checkpoint: Dict[str, Any], ckpt_path: PathLike) -> Dict[str, Any]:
    _check_work_left(config, checkpoint, ckpt_path)
    stored = checkpoint.get("hyper_parameters", {}).get("config", {}).get("model")
    # what is exported may change on resume (and older checkpoints lack the key)
    stored = None if stored is None else {k: v for k, v in stored.items() if k not in RESUMABLE_MODEL_KEYS}
    current = {k: v for k, v in config_to_dict(config)["model"].items() if k not in RESUMABLE_MODEL_KEYS}
    if stored is not None and stored != current:
        changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        raise ConfigError(
            f"--ckpt-path {ckpt_path}: the [model] section differs from the checkpoint's ({', '.join(changed)}); "
            "a run can only resume with the model it started with (start a new run to change the model)"
        )
    return model_kwargs(checkpoint, ckpt_path)


def _load_initial_weights(module: PotentialModule, path: PathLike) -> None:
    """The energy-model weights of ``path`` (its EMA weights when it has them) into the module's model and EMA; the
    per-element shift and scale stay those fitted to this run's data."""
    weights = potential_from_checkpoint(path).energy_model.state_dict()
    for target in (module.model, module.ema):
        if target is None:
            continue
        try:
            target.energy_model.load_state_dict(weights)
        except RuntimeError as exc:
            raise ConfigError(
                f"initial weights {path} do not fit this model ({str(exc).splitlines()[0]}): they must come from a "
                "run with the same [model] section and species"
            ) from None


def _monitored_config(config: Config, datamodule: AtomsDataModule, verbose: bool) -> Config:
    """``config``; when nothing is validated, with its monitored "val/..." metrics replaced by their "train/..."
    twins."""
    validates = len(datamodule.splits.get("validation") or []) > 0 and config.trainer.get("limit_val_batches") != 0
    if validates or not config.training.monitor.startswith("val/"):
        return config

    def twin(name: str | None) -> str | None:
        return "train/" + name.removeprefix("val/") if name and name.startswith("val/") else name

    training, checkpoint = config.training, config.trainer["checkpoint"]
    scheduler, stopping = training.lr_scheduler, training.early_stopping
    training = training.model_copy(
        update={
            "monitor": twin(training.monitor),
            "lr_scheduler": scheduler.model_copy(update={"monitor": twin(scheduler.monitor)}),
            "early_stopping": stopping.model_copy(update={"monitor": twin(stopping.monitor)}),
        }
    )
    trainer = {**config.trainer, "checkpoint": {**checkpoint, "monitor": twin(checkpoint["monitor"])}}
    if verbose:
        print(f"no validation data: checkpoints and schedulers follow {training.monitor!r}")
    return config.model_copy(update={"training": training, "trainer": trainer})


def _callbacks(config: Config, resumed_from: PathLike | None = None, verbose: bool = True) -> List[lightning.Callback]:
    training = config.training
    checkpoint_kwargs = dict(config.trainer["checkpoint"])
    if resumed_from is not None and checkpoint_kwargs.get("dirpath") is None:
        # a resumed run keeps writing checkpoints beside the one it resumed from, so the best checkpoint is
        # chosen over the whole run (Lightning reloads best scores only when the directory is unchanged)
        checkpoint_kwargs["dirpath"] = str(Path(resumed_from).resolve().parent)
    callbacks: List[lightning.Callback] = [
        ModelCheckpoint(**checkpoint_kwargs),
        LossWeightMixing.from_config(training.loss_parameter),
        LearningRateMonitor(logging_interval="epoch"),
        EpochLog(print_lines=verbose),
    ]
    stopping = training.early_stopping
    if stopping.enabled:
        callbacks.append(EarlyStopping(**stopping.model_dump(include={"monitor", "patience", "min_delta", "mode"})))
    if training.md_validation.every_n_epochs > 0:
        callbacks.append(MDValidation(training.md_validation, seed=training.seed))
    callbacks.extend(instantiate_callbacks(config.trainer["callbacks"]))
    return callbacks


def _loggers(root: Path, ckpt_path: PathLike | None = None, checkpoint: Dict[str, Any] | None = None) -> list:
    """The CSV logger (and TensorBoard's when installed): a new ``<root>/version_<n>``, or the folder of the run a
    checkpoint of ``<run>/checkpoints/`` belongs to, continued (its rows after the checkpoint's step dropped)."""
    run_dir = None if ckpt_path is None else resumed_run_dir(ckpt_path)
    if run_dir is not None:
        step = (checkpoint or {}).get("global_step")
        loggers: list = [resumed_csv_logger(run_dir, step if isinstance(step, int) else None)]
    else:
        loggers = [CSVLogger(save_dir=str(root), name="")]
    try:
        import tensorboard  # noqa: F401  (TensorBoard is optional)
        from lightning.pytorch.loggers import TensorBoardLogger
    except ImportError:
        return loggers
    loggers.append(TensorBoardLogger(save_dir=loggers[0].save_dir, name="", version=loggers[0].version))
    return loggers


def _trainer_kwargs(config: Config) -> Dict[str, Any]:
    kwargs = trainer_kwargs(config)  # inference_mode=False: forces are derivatives, validation needs autograd
    kwargs["use_distributed_sampler"] = False  # the datamodule's loaders shard by rank themselves
    kwargs.setdefault("log_every_n_steps", 1)  # metrics are logged per epoch; avoids Lightning's interval warning
    return kwargs


def evaluation_split(splits: Dict[str, Any]) -> str | None:
    """The split a model is evaluated on: "test", else "validation" (None: neither has structures)."""
    return next((split for split in ("test", "validation") if len(splits.get(split) or []) > 0), None)


def _collect_parity(potential: torch.nn.Module, datamodule: AtomsDataModule, split: str) -> List[Any]:
    """Per-atom energies and force components on one split, as ``parity_plot`` takes them: energy reference and
    prediction, forces reference and prediction (None without forces); masked rows dropped."""
    parts: List[List[torch.Tensor]] = [[], [], [], []]
    for batch in datamodule.loader(split):
        with torch.enable_grad():
            out = potential(batch)
        n_atoms = batch[K.N_ATOMS].to(out[K.ENERGY].dtype)
        energy_mask = batch[K.mask_key(K.ENERGY)]
        parts[0].append((batch[K.ENERGY] / n_atoms)[energy_mask])
        parts[1].append((out[K.ENERGY].detach() / n_atoms)[energy_mask])
        if K.FORCES in batch:
            atom_mask = batch[K.mask_key(K.FORCES)].index_select(0, batch[K.BATCH])
            parts[2].append(batch[K.FORCES][atom_mask])
            parts[3].append(out[K.FORCES].detach()[atom_mask])
    return [torch.cat(part).double().numpy() if part else None for part in parts]


def format_metrics_table(metrics: Dict[str, float], title: str = "test split") -> str:
    """A table of MAE and RMSE per component (energies in meV, forces in meV/angstrom, stress in meV/angstrom^3)."""
    rows = []
    for component, (unit, factor) in METRIC_UNITS.items():
        mae = next((v for k, v in metrics.items() if k.endswith(f"/{component}/mae")), None)
        rmse = next((v for k, v in metrics.items() if k.endswith(f"/{component}/rmse")), None)
        if mae is None and rmse is None:
            continue
        rows.append((component, unit, mae * factor if mae is not None else math.nan, rmse * factor))
    if not rows:
        return f"{title}: no metrics"
    width = max(len(r[0]) for r in rows)
    lines = [f"{title}:", f"  {'component':<{width}}  {'MAE':>10}  {'RMSE':>10}  unit"]
    lines += [f"  {name:<{width}}  {mae:>10.3f}  {rmse:>10.3f}  {unit}" for name, unit, mae, rmse in rows]
    return "\n".join(lines)


def train(
    config: Config,
    *,
    ckpt_path: PathLike | None = None,
    train_data: Any = None,
    validation_data: Any = None,
    test_data: Any = None,
    verbose: bool = True,
    bootstrap_seed: int | None = None,
    initial_weights: PathLike | None = None,
) -> TrainResult:
    """Train, test and export the potential described by ``config``.

    ckpt_path resumes an interrupted run (model, optimizer, scheduler, EMA, loss weights, epoch and position in
    the epoch). train_data / validation_data / test_data (a file path or a list of ``ase.Atoms``) replace the
    files of ``config.data``. bootstrap_seed trains on a bootstrap sample of the training split (see
    ``AtomsDataModule``; a committee member's option). initial_weights starts from the energy-model weights of
    another run's checkpoint (a retraining on more data), not from random ones; the optimizer starts afresh.
    verbose prints a line per epoch (``physml_md.training.logs``), the test table and the output paths.
    """
    with torch_threads(config.training.threads):
        return _train(
            config, ckpt_path, train_data, validation_data, test_data, verbose, bootstrap_seed, initial_weights
        )


def _train(
    config: Config,
    ckpt_path: PathLike | None,
    train_data: Any,
    validation_data: Any,
    test_data: Any,
    verbose: bool,
    bootstrap_seed: int | None,
    initial_weights: PathLike | None,
) -> TrainResult:
    lightning.seed_everything(config.training.seed, workers=True, verbose=False)
    if train_data is not None and config.data.source is not None:
        # data given as arguments replace the configured files
        config = config.model_copy(update={"data": config.data.model_copy(update={"source": None})})
    data = {"train_data": train_data, "validation_data": validation_data, "test_data": test_data}
    datamodule = AtomsDataModule(**datamodule_kwargs(config), bootstrap_seed=bootstrap_seed, **data)
    datamodule.setup("fit")
    checkpoint = None if ckpt_path is None else load_checkpoint(ckpt_path)
    if ckpt_path is not None:
        kwargs = _resumed_model_kwargs(config, checkpoint, ckpt_path)
    else:
        kwargs = build_model_kwargs(config, datamodule)
    config = _monitored_config(config, datamodule, verbose)
    module = PotentialModule(
        config,
        kwargs,
        data_sha256=datamodule.dataset_sha256(),
        periodic=datamodule.periodic(),
        shortest_pair_distances=datamodule.shortest_pair_distances(kwargs["cutoff"]),  # (a packed folder's stored ones)
    )
    if initial_weights is not None and ckpt_path is None:
        _load_initial_weights(module, initial_weights)
    loggers = _loggers(Path(config.trainer["default_root_dir"]), ckpt_path, checkpoint)
    del checkpoint
    callbacks = _callbacks(config, ckpt_path, verbose)
    trainer = lightning.Trainer(**_trainer_kwargs(config), logger=loggers, callbacks=callbacks)
    with warnings.catch_warnings():
        if ckpt_path is not None:  # resuming writes beside the checkpoint it resumes from, on purpose
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        resume = None if ckpt_path is None else str(ckpt_path)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    best = callbacks[0].best_model_path or callbacks[0].last_model_path
    result = TrainResult(Path(loggers[0].log_dir), Path(best) if best else None, None)
    result.md_validation = _md_validation_summary(callbacks)
    if len(datamodule.splits.get("test") or []) > 0 and result.best_checkpoint is not None:
        best = str(result.best_checkpoint)
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False)
        result.test_metrics = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
    if trainer.is_global_zero and result.best_checkpoint is not None:
        _export_and_plot(result, config, datamodule, trainer.current_epoch, callbacks[0].best_model_score)
        if verbose:
            _print_outputs(result)
    return result


def _md_validation_summary(callbacks: List[lightning.Callback]) -> Dict[str, Any] | None:
    """The summary of the last MD validation run (an ``MDValidation`` callback's), or None."""
    md_callback = next((c for c in callbacks if isinstance(c, MDValidation)), None)
    if md_callback is None or md_callback.last is None:
        return None
    return {**md_callback.last.summary(), "first_potential_energy": md_callback.last.potential_energies[0]}


def _export_and_plot(
    result: TrainResult, config: Config, datamodule: AtomsDataModule, epochs: int, score: torch.Tensor | None
) -> None:
    """The best checkpoint exported (``export_model``: the metadata and agreement rows of ``physml-md export``,
    the training details added) beside it, the parity plot and the learning curves, into ``result``."""
    best_path = result.best_checkpoint
    potential, metadata = exportable_from_checkpoint(best_path)
    metadata["training"].update(
        best_checkpoint=best_path.name,
        monitor=config.training.monitor,
        best_score=None if score is None else float(score),
        epochs=int(epochs),
        test_metrics=result.test_metrics,
    )
    result.model_path = export_model(
        potential,
        best_path.parent / EXPORT_NAME,
        metadata,
        dtype=config.model.export_dtype or config.model.dtype,
        structures=datamodule.splits.get("train"),  # the agreement check uses its first structures
    )
    split = evaluation_split(datamodule.splits)
    if split is not None:
        parity = _collect_parity(potential, datamodule, split)
        result.parity_plot = parity_plot(result.run_dir / "parity.png", *parity, title=f"{split} split")
    metrics_csv = result.run_dir / "metrics.csv"
    if metrics_csv.is_file():
        result.learning_curves = learning_curves(result.run_dir / LEARNING_CURVES, metrics_csv)


def _print_outputs(result: TrainResult) -> None:
    if result.test_metrics:
        print(format_metrics_table(result.test_metrics))
    print(f"best checkpoint: {result.best_checkpoint}")
    print(f"exported model:  {result.model_path}")
    for path in (result.parity_plot, result.learning_curves):
        if path is not None:
            print(f"plot:            {path}")
