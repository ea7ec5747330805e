"""The ``[trainer]`` section of the configuration schema (pydantic models): ``lightning.Trainer`` keyword arguments,
checked against the installed Lightning's signatures, with physml-md's defaults and refusals."""

from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar, Dict, List, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from physml_md.config.types import KEY, ConfigError, Name, Path, Section, got, unknown_key


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
        description="runs are written to <default_root_dir>/version_N/; a relative path starts at the config file's "
        "folder (at the working directory when given with --set)",
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
