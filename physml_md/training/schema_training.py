"""The ``[training]`` and ``[trainer]`` sections of the configuration schema (pydantic models)."""

from __future__ import annotations

import functools
import inspect
from typing import Annotated, Any, ClassVar, Dict, List, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from physml_md.md.metrics import DEFAULT_MAX_FORCE, DEFAULT_MIN_DISTANCE
from physml_md.training.schema_types import (
    KEY,
    LOSS_COMPONENTS,
    ConfigError,
    Doc,
    Length,
    Path,
    Section,
    Temperature,
    Time,
    closest,
    got,
    unknown_key,
)

LR_SCHEDULERS = ("reduce_on_plateau", "cosine", "one_cycle")
DEFAULT_LOSS_WEIGHT = 1.0  # of a listed loss component without a weight
Name = Annotated[str, Field(min_length=1)]
Weight = Annotated[float, Field(ge=0.0)]
Component = Annotated[str, Doc("loss component")]
_LOSS = "training.loss_parameter"


class EMAConfig(Section):
    """``[training.ema]``: exponential moving average of the weights (decay 0 disables it)."""

    decay: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="weight of the old average at each optimizer step; the average is validated, tested and exported",
    )


class LRSchedulerConfig(Section):
    """``[training.lr_scheduler]``; ``monitor`` is filled from ``training.monitor`` when unset."""

    name: Literal[LR_SCHEDULERS] | None = Field(
        None, description="learning-rate schedule; unset: constant learning rate"
    )
    factor: float = Field(0.5, gt=0.0, lt=1.0, description="reduce_on_plateau: factor applied to the learning rate")
    patience: int = Field(10, ge=0, description="reduce_on_plateau: epochs without improvement before reducing")
    min_lr: float = Field(0.0, ge=0.0, description="reduce_on_plateau: lower bound of the learning rate")
    cooldown: int = Field(0, ge=0, description="reduce_on_plateau: epochs to wait after a reduction")
    monitor: Name | None = Field(None, description="reduce_on_plateau: metric watched; unset: training.monitor")
    eta_min: float = Field(0.0, ge=0.0, description="cosine: final learning rate")
    t_max: int | None = Field(
        None,
        ge=1,
        description='cosine: length of the schedule in intervals; unset: trainer.max_epochs (interval = "epoch") or '
        'the total number of steps (interval = "step")',
    )
    max_lr: float | None = Field(None, gt=0.0, description="one_cycle: peak learning rate; unset: 10 x training.lr")
    pct_start: float = Field(
        0.3, gt=0.0, lt=1.0, description="one_cycle: fraction of the steps spent increasing the learning rate"
    )
    interval: Literal["epoch", "step"] | None = Field(
        None,
        validate_default=True,
        description='whether the schedule steps every epoch or every optimizer step; unset: "step" for one_cycle '
        '(which always steps), else "epoch"',
    )

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str | None, info: ValidationInfo) -> str:
        if info.data.get("name") != "one_cycle":
            return value or "epoch"
        if value == "epoch":
            raise ConfigError(
                "training.lr_scheduler.interval = 'epoch' cannot be used with one_cycle (it steps per batch); remove it"
            )
        return "step"


class EarlyStoppingConfig(Section):
    """``[training.early_stopping]``; ``monitor`` is filled from ``training.monitor`` when unset."""

    enabled: bool = Field(False, description="stop training when monitor stops improving")
    monitor: Name | None = Field(None, description="metric watched; unset: training.monitor")
    patience: int = Field(50, ge=1, description="validation checks without improvement before stopping")
    min_delta: float = Field(0.0, ge=0.0, description="smallest change that counts as an improvement")
    mode: Literal["min", "max"] = Field(
        "min", description='whether monitor should decrease ("min") or increase ("max")'
    )


class LossConfig(Section):
    """``[training.loss_parameter]``: loss components, their weights and how the weights move per epoch."""

    loss_components: List[Component] = Field(
        ["per_system_energy", "per_atom_force"],
        description="what the loss compares (modelforge's names); each is a masked mean squared error",
    )
    per_atom_energy: bool = Field(
        True, description="compare energies per atom (divided by the number of atoms) in the loss"
    )
    schedule: Literal["step", "linear"] = Field(
        "step",
        description='how weights move toward target_weight: "step" adds mixing_steps after every epoch, "linear" '
        "interpolates over mixing_epochs",
    )
    weight: Dict[Component, Weight] = Field(
        {},
        validate_default=True,
        description=f"initial weight of each component ({DEFAULT_LOSS_WEIGHT} for a listed component not given here)",
    )
    target_weight: Dict[Component, Weight] = Field({}, description="weight each moving component ends at")
    mixing_steps: Dict[Component, float] = Field(
        {}, description='schedule = "step": signed change of the weight after every epoch, until target_weight'
    )
    mixing_epochs: Dict[Component, Annotated[int, Field(ge=1)]] = Field(
        {}, description='schedule = "linear": epochs taken to reach target_weight'
    )

    @field_validator("loss_components")
    @classmethod
    def _known_components(cls, value: List[str]) -> List[str]:
        if not value:
            raise ValueError(f"{KEY} must be a non-empty list of loss components ({', '.join(LOSS_COMPONENTS)})")
        for item in value:
            if item not in LOSS_COMPONENTS:
                close = closest(item, LOSS_COMPONENTS)
                hint = f"did you mean {close!r}?" if close else f"valid components: {', '.join(LOSS_COMPONENTS)}"
                raise ValueError(f"{KEY}: unknown loss component {item!r}; {hint}")
        duplicates = sorted({item for item in value if value.count(item) > 1})
        if duplicates:
            raise ValueError(f"{KEY} lists {', '.join(duplicates)} more than once; list each component once")
        return value

    @field_validator("weight", "target_weight", "mixing_steps", "mixing_epochs", mode="before")
    @classmethod
    def _component_names(cls, value: Any) -> Any:
        for name in value if isinstance(value, dict) else ():
            if name not in LOSS_COMPONENTS:
                raise ValueError(unknown_key(name, LOSS_COMPONENTS))
        return value

    @field_validator("weight", "target_weight", "mixing_steps", "mixing_epochs")
    @classmethod
    def _listed(cls, value: Dict[str, Any], info: ValidationInfo) -> Dict[str, Any]:
        """The tables name listed components; every listed component has a weight."""
        listed = info.data.get("loss_components")
        if listed is None:  # loss_components was wrong: reported already
            return value
        for name in value:
            if name not in listed:
                raise ConfigError(
                    f"{_LOSS}.{info.field_name}.{name} is set but {name!r} is not in {_LOSS}.loss_components; add it "
                    "there or remove this key"
                )
        if info.field_name == "weight":
            return {name: value.get(name, DEFAULT_LOSS_WEIGHT) for name in listed}
        return value

    @model_validator(mode="after")
    def _mixing(self) -> LossConfig:
        """Each moving weight has a target, a way to move there, and reaches it."""
        weight = self.weight
        right, wrong = (
            ("mixing_steps", "mixing_epochs") if self.schedule == "step" else ("mixing_epochs", "mixing_steps")
        )
        if getattr(self, wrong):
            other = "linear" if self.schedule == "step" else "step"
            raise ConfigError(
                f"{_LOSS}.{wrong} is not used with schedule = {self.schedule!r}; use {_LOSS}.{right} or set "
                f"schedule = {other!r}"
            )
        moves = getattr(self, right)
        for name in moves:
            if name not in self.target_weight:
                raise ConfigError(f"{_LOSS}.{right}.{name} is set but {_LOSS}.target_weight.{name} is not; set both")
        for name, target in self.target_weight.items():
            if name not in moves:
                raise ConfigError(
                    f"{_LOSS}.target_weight.{name} is set but {_LOSS}.{right}.{name} is not "
                    f"(schedule = {self.schedule!r}); set how the weight moves there"
                )
            start = weight[name]
            if self.schedule == "step" and target != start and not (target - start) * moves[name] > 0:
                direction = "positive" if target > start else "negative"
                raise ConfigError(
                    f"{_LOSS}.mixing_steps.{name} = {moves[name]} never takes the weight from {start} to the target "
                    f"{target}; use a {direction} step"
                )
        if not any(value > 0 for value in weight.values()):
            raise ConfigError(f"{_LOSS}.weight: every weight is 0; give at least one loss component a positive weight")
        return self


class MDValidationConfig(Section):
    """``[training.md_validation]``: a short MD run with the current (EMA) weights every ``every_n_epochs``
    epochs (0: off), logged as md/stable, md/min_distance, md/max_force, md/drift (NVE) or md/temperature
    (NVT). ``structures``: file with the starting structure (default: the first training structure)."""

    every_n_epochs: int = Field(0, ge=0, description="run the MD after every n-th training epoch; 0: never")
    engine: Literal["ase", "openmm"] = Field("ase", description="MD engine")
    ensemble: Literal["nve", "nvt"] = Field(
        "nve", description='"nve" (logs md/drift) or "nvt" (Langevin; logs md/temperature)'
    )
    steps: int = Field(200, ge=1, description="MD steps per run")
    report_every: int = Field(10, ge=1, description="steps between recorded frames (and blow-up checks)")
    temperature: Temperature = Field(
        300.0, description="temperature of the initial velocities and of the NVT thermostat"
    )
    timestep: Time = Field(0.5, description="MD time step")
    structures: Path | None = Field(
        None, description="file with the starting structure; unset: the first training structure"
    )
    index: int = Field(0, ge=0, description="which structure of that file")
    stop_on_blowup: bool = Field(False, description="stop training when the MD blows up (otherwise it is only logged)")
    min_distance: Length = Field(DEFAULT_MIN_DISTANCE, description="blow-up when two atoms come closer than this")
    max_force: float = Field(DEFAULT_MAX_FORCE, gt=0.0, description="blow-up when a force exceeds this, in eV/angstrom")


class TrainingConfig(Section):
    """``[training]``: optimiser, normalisation, seed and the sub-tables."""

    lr: float = Field(1e-3, gt=0.0, description="learning rate (the initial one when a schedule is set)")
    optimizer: Literal["adam", "adamw"] = Field("adam", description="torch optimizer: Adam or AdamW")
    weight_decay: float = Field(0.0, ge=0.0, description="optimizer weight decay")
    monitor: Name = Field(
        "val/loss",
        description="metric that chooses the best checkpoint and drives lr_scheduler and early_stopping; without "
        "validation data its train/ twin is used",
    )
    remove_self_energies: bool = Field(
        True,
        description="fit per-element self-energies to the training split (least squares) and subtract them before "
        "training; they are added back in the model",
    )
    scale_by_force_rms: bool = Field(True, description="scale the network output by the RMS of the training forces")
    seed: int = Field(
        42,
        ge=0,
        description="global seed (lightning.seed_everything), training-data shuffling and MD validation velocities",
    )
    ema: EMAConfig = Field(default_factory=EMAConfig)
    lr_scheduler: LRSchedulerConfig = Field(default_factory=LRSchedulerConfig, validate_default=True)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig, validate_default=True)
    loss_parameter: LossConfig = Field(default_factory=LossConfig)
    md_validation: MDValidationConfig = Field(default_factory=MDValidationConfig)

    @field_validator("lr_scheduler", "early_stopping")
    @classmethod
    def _monitor(cls, section: Any, info: ValidationInfo) -> Any:
        """Their ``monitor`` defaults to ``training.monitor``."""
        if section.monitor is not None or "monitor" not in info.data:
            return section
        return section.model_copy(update={"monitor": info.data["monitor"]})


# ---------------------------------------------------------------------------------------------- [trainer]
@functools.cache
def lightning_parameters(target: str) -> tuple:
    """Keyword arguments of ``lightning.Trainer`` ("trainer") or ``ModelCheckpoint`` ("checkpoint")."""
    import lightning.pytorch as pl

    obj = {"trainer": pl.Trainer, "checkpoint": pl.callbacks.ModelCheckpoint}[target]
    return tuple(name for name in inspect.signature(obj.__init__).parameters if name != "self")


class PassThrough(Section):
    """A table whose other keys are passed on to a Lightning class (``lightning_parameters(target)``)."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, validate_default=False)
    target: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _known_arguments(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            valid = list(cls.model_fields) + [p for p in lightning_parameters(cls.target) if p not in cls.model_fields]
            for name in raw:
                if name not in valid:
                    raise ValueError(unknown_key(name, valid))
            if cls.target == "trainer" and "logger" in raw:
                raise ConfigError(
                    "trainer.logger is set by physml-md (a CSV logger, and TensorBoard when it is installed, under "
                    "trainer.default_root_dir); remove it, and add other loggers' callbacks through trainer.callbacks"
                )
        return raw


class CheckpointConfig(PassThrough):
    """``[trainer.checkpoint]``: lightning.pytorch.callbacks.ModelCheckpoint arguments (best and last
    checkpoints); any other argument of ``ModelCheckpoint`` is passed through unchanged."""

    target: ClassVar[str] = "checkpoint"
    monitor: Name | None = Field(None, description="metric that chooses the best checkpoint; unset: training.monitor")
    save_top_k: int = Field(1, description="how many best checkpoints to keep")
    save_last: bool = Field(True, description="also keep the last checkpoint (last.ckpt), for --ckpt-path")
    mode: Literal["min", "max"] = Field(
        "min", description='whether the monitored metric should decrease ("min") or increase ("max")'
    )


class CallbackSpec(Section):
    """``[[trainer.callbacks]]``: extra Lightning callbacks, each a table {class_path, init_args}."""

    class_path: str = Field(
        description='dotted name of a lightning Callback class, e.g. "lightning.pytorch.callbacks.LearningRateMonitor"'
    )
    init_args: Dict[str, Any] = Field({}, description="keyword arguments of the class")

    @field_validator("class_path", mode="before")
    @classmethod
    def _dotted(cls, value: Any) -> Any:
        if not isinstance(value, str) or "." not in value.strip(".") or " " in value:
            raise ValueError(
                f"{KEY} must be a dotted name such as 'lightning.pytorch.callbacks.LearningRateMonitor', "
                f"got {got(value)}"
            )
        return value


class TrainerConfig(PassThrough):
    """``[trainer]``: ``lightning.Trainer`` keyword arguments; any other argument of ``lightning.Trainer`` is passed
    through unchanged (the names are checked against the installed Lightning's signature)."""

    target: ClassVar[str] = "trainer"
    max_epochs: int | None = Field(
        100,
        description="number of training epochs, a positive integer; null: no epoch limit, only when "
        "trainer.max_steps or trainer.max_time stops training",
    )
    accelerator: str = Field("auto", description='lightning accelerator: "cpu", "gpu", "auto", ...')
    devices: Any = Field(1, description="number of devices (or a list of device indices)")
    default_root_dir: Path = Field(
        "physml_runs",
        description="runs are written to <default_root_dir>/version_N/; relative paths start at the config file",
    )
    enable_progress_bar: bool = Field(True, description="show Lightning's progress bar")
    precision: Literal[32, 64, "32", "64", "32-true", "64-true"] | None = Field(
        None, description="follows model.dtype; only the matching full precision is accepted (no mixed precision)"
    )
    inference_mode: Literal[False] = Field(
        False, description="always false (forces need autograd during validation); the runner sets it"
    )
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    callbacks: List[CallbackSpec] = Field(
        [], description="extra Lightning callbacks, each a table {class_path, init_args}"
    )

    @field_validator("max_epochs")
    @classmethod
    def _positive_epochs(cls, value: int | None) -> int | None:
        if value is None or value >= 1:
            return value
        if value == -1:
            problem = "is Lightning's 'no limit' and would train until killed"
        elif value == 0:
            problem = "trains nothing (no checkpoint, no model)"
        else:
            problem = "is negative"
        raise ValueError(
            f"{KEY} = {value} {problem}: give a positive number of epochs (to stop on steps or time instead, set "
            "trainer.max_epochs = null with trainer.max_steps or trainer.max_time)"
        )

    @model_validator(mode="after")
    def _a_limit(self) -> TrainerConfig:
        """Training stops: max_steps is -1 (none) or positive; without max_epochs, max_steps or max_time is set."""
        extra = self.model_extra or {}
        steps = extra.get("max_steps", -1)
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise ConfigError(f"trainer.max_steps must be an integer, got {got(steps)}")
        if steps == 0 or steps < -1:
            problem = "trains nothing" if steps == 0 else "is not a number of steps"
            raise ConfigError(
                f"trainer.max_steps = {steps} {problem}: give a positive number of optimizer steps, or -1 (no step "
                "limit, the default)"
            )
        if self.max_epochs is None and steps == -1 and extra.get("max_time") is None:
            raise ConfigError(
                "trainer.max_epochs = null sets no limit (Lightning would pick 1000 epochs): give a positive number "
                "of epochs, or set trainer.max_steps or trainer.max_time to stop on steps or time"
            )
        return self

    @field_validator("callbacks", mode="before")
    @classmethod
    def _list_of_tables(cls, value: Any) -> Any:
        if not isinstance(value, list):
            example = "{class_path = 'module.Class', init_args = {...}}"
            raise ValueError(f"{KEY} must be a list of tables {example}, got {value!r}")
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _full_precision(cls, value: Any) -> Any:
        if any(part in str(value) for part in ("16", "mixed", "transformer")):
            raise ValueError(
                f"{KEY} = {value!r} is not supported: forces need float32 or float64; use '32-true' or '64-true' "
                "(or remove it: it follows model.dtype)"
            )
        return value

    @field_validator("inference_mode", mode="before")
    @classmethod
    def _no_inference_mode(cls, value: Any) -> Any:
        if value is not False:
            raise ValueError(
                f"{KEY} = {value!r} is not allowed: forces need autograd during validation; remove it (the runner "
                "sets it to false)"
            )
        return value
