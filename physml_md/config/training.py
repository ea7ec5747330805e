"""The ``[training]`` section of the configuration schema; ``[trainer]`` is in ``physml_md.config.trainer``."""

from __future__ import annotations

from typing import Annotated, Any, Dict, List, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from physml_md.config.md import MDSettings
from physml_md.config.types import (
    KEY,
    LOSS_COMPONENTS,
    ConfigError,
    Doc,
    Name,
    Path,
    Section,
    closest,
    unknown_key,
)

LR_SCHEDULERS = ("reduce_on_plateau", "cosine", "one_cycle")
DEFAULT_LOSS_WEIGHT = 1.0  # of a listed loss component without a weight
Weight = Annotated[float, Field(ge=0.0)]
Component = Annotated[str, Doc("loss component")]
_LOSS = "training.loss_parameter"


class EMAConfig(Section):
    """``[training.ema]``: exponential moving average of the weights (decay 0 disables it)."""

    decay: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="weight of the old average at each optimizer step once warmed up (update t uses "
        "min(decay, (1 + t) / (10 + t)), so short runs follow the training); the average is validated, tested and "
        "exported",
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


class MDValidationConfig(MDSettings):
    """``[training.md_validation]``: a short MD run with the current (EMA) weights every ``every_n_epochs``
    epochs (0: off), logged as md/stable, md/min_distance, md/max_force, md/drift (NVE) or md/temperature
    (NVT). ``structures``: file with the starting structure (default: the first training structure). The other
    keys are those of every MD run (``physml_md.config.md.MDSettings``)."""

    every_n_epochs: int = Field(0, ge=0, description="run the MD after every n-th training epoch; 0: never")
    ensemble: Literal["nve", "nvt"] = Field(
        "nve", description='"nve" (logs md/drift) or "nvt" (Langevin; logs md/temperature)'
    )
    steps: int = Field(200, ge=1, description="MD steps per run")
    seed: int | None = Field(None, ge=0, description="seed of the initial velocities; unset: training.seed")
    structures: Path | None = Field(
        None, description="file with the starting structure; unset: the first training structure"
    )
    index: int = Field(0, ge=0, description="which structure of that file")
    stop_on_blowup: bool = Field(False, description="stop training when the MD blows up (otherwise it is only logged)")


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
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads while training (torch.set_num_threads; default: torch's, one per core). "
        "Small molecules train faster on one: ethanol, 2 cores, 2.3 s per epoch on 1 thread against 4.2 on 2",
    )
    committee: int = Field(
        1,
        ge=1,
        le=64,
        description="train this many models (a committee; 2 or more): other seeds, optionally other bootstrap "
        "samples; exported as one file that gives the mean and the uncertainty (energy_std, forces_std)",
    )
    bootstrap: bool = Field(False, description="committee members train on bootstrap samples of the training split")
    committee_processes: int = Field(
        1, ge=1, description="committee members trained at a time, each in its own process (one per core or GPU)"
    )
    ema: EMAConfig = Field(default_factory=EMAConfig)
    lr_scheduler: LRSchedulerConfig = Field(default_factory=LRSchedulerConfig, validate_default=True)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig, validate_default=True)
    loss_parameter: LossConfig = Field(default_factory=LossConfig)
    md_validation: MDValidationConfig = Field(default_factory=MDValidationConfig, validate_default=True)

    @field_validator("lr_scheduler", "early_stopping", "md_validation")
    @classmethod
    def _inherited(cls, section: Any, info: ValidationInfo) -> Any:
        """Their ``monitor`` defaults to ``training.monitor``, md_validation's ``seed`` to ``training.seed``."""
        key = "seed" if info.field_name == "md_validation" else "monitor"
        if getattr(section, key) is not None or key not in info.data:
            return section
        return section.model_copy(update={key: info.data[key]})
