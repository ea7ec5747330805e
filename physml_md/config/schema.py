"""The configuration schema: ``Config`` (sections in ``data``, ``training``, ``trainer``, ``learning``) and the
checks across sections, which resolve what one section takes from another as new values: ``model.cutoff`` and
``data.cut_off`` (one number), ``trainer.precision`` from ``model.dtype``, the checkpoint monitor."""

from __future__ import annotations

from typing import Annotated, Any, Dict, Mapping

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from physml_md.config.data import DataConfig, ModelConfig
from physml_md.config.learning import LearningConfig
from physml_md.config.trainer import TrainerConfig
from physml_md.config.training import TrainingConfig
from physml_md.config.types import LOSS_COMPONENT_NEEDS, ConfigError, Section, validate

_LOSS = "training.loss_parameter"


def _trainer(raw: Any) -> Dict[str, Any]:
    return validate(TrainerConfig, raw, "trainer").model_dump()


class Config(Section):
    """The whole configuration; ``trainer`` holds lightning.Trainer keyword arguments plus ``callbacks`` and
    ``checkpoint`` (see ``trainer_kwargs``); ``learning`` is read by ``physml-md learn`` only."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig, validate_default=True)
    trainer: Annotated[Dict[str, Any], BeforeValidator(_trainer)] = Field({}, validate_default=True)
    learning: LearningConfig | None = Field(None, description="physml-md learn's table (active learning)")

    @model_validator(mode="before")
    @classmethod
    def _one_cutoff(cls, raw: Any) -> Any:
        """model.cutoff and data.cut_off are one number: a value given in one section is given to both."""
        if not isinstance(raw, Mapping):
            return raw
        model, data = raw.get("model"), raw.get("data")
        model = {} if model is None else model
        data = {} if data is None else data
        if not isinstance(model, Mapping) or not isinstance(data, Mapping):
            return raw
        if "cutoff" in model and "cut_off" not in data:
            return {**raw, "data": {**data, "cut_off": model["cutoff"]}}
        if "cut_off" in data and "cutoff" not in model:
            return {**raw, "model": {**model, "cutoff": data["cut_off"]}}
        if "cutoff" not in model:
            return {**raw, "model": {**model, "cutoff": DataConfig.model_fields["cutoff"].default}}
        return raw

    @field_validator("data")
    @classmethod
    def _cutoffs_agree(cls, data: DataConfig, info: ValidationInfo) -> DataConfig:
        model = info.data.get("model")
        if model is not None and model.cutoff is not None and abs(model.cutoff - data.cutoff) > 1e-9:
            raise ConfigError(
                f"model.cutoff = {model.cutoff} angstrom disagrees with data.cut_off = {data.cutoff} angstrom; "
                "remove model.cutoff (it defaults to data.cut_off) or make them equal"
            )
        return data

    @field_validator("training")
    @classmethod
    def _labels_for_the_loss(cls, training: TrainingConfig, info: ValidationInfo) -> TrainingConfig:
        model, data = info.data.get("model"), info.data.get("data")
        if model is None or data is None:
            return training
        for component in training.loss_parameter.loss_components:
            label, needs_charges = LOSS_COMPONENT_NEEDS[component]
            if label is not None and getattr(data, label) is None:
                raise ConfigError(
                    f"{_LOSS}.loss_components includes {component!r} but data.{label} is not set; set data.{label} "
                    f"to the name of that label in your files, or remove {component!r}"
                )
            if needs_charges and not model.charges:
                raise ConfigError(
                    f"{_LOSS}.loss_components includes {component!r}, which needs the charge head; set "
                    f"model.charges = true or remove {component!r}"
                )
        return training

    @field_validator("trainer")
    @classmethod
    def _resolved_trainer(cls, trainer: Dict[str, Any], info: ValidationInfo) -> Dict[str, Any]:
        """Precision from model.dtype, the checkpoint monitor from training.monitor; a cosine schedule without
        t_max needs trainer.max_epochs."""
        model, training = info.data.get("model"), info.data.get("training")
        if model is None or training is None:
            return trainer
        scheduler = training.lr_scheduler
        if scheduler.name == "cosine" and scheduler.t_max is None and scheduler.interval == "epoch":
            max_epochs = trainer.get("max_epochs")
            if max_epochs is None or max_epochs < 1:
                raise ConfigError(
                    f"training.lr_scheduler.t_max is unset and trainer.max_epochs = {max_epochs!r} cannot stand in "
                    "for it; set training.lr_scheduler.t_max (epochs) or trainer.max_epochs"
                )
        checkpoint = dict(trainer["checkpoint"])
        if checkpoint["monitor"] is None:
            checkpoint["monitor"] = training.monitor
        return {**trainer, "precision": _precision(trainer["precision"], model.dtype), "checkpoint": checkpoint}


def _precision(value: Any, dtype: str) -> str:
    """Lightning's precision for ``model.dtype`` ("float32" -> "32-true"); a given one must agree."""
    wanted = f"{dtype.removeprefix('float')}-true"
    given = None if value is None else f"{str(value).removesuffix('-true')}-true"
    if given not in (None, wanted):
        other = "float32" if given == "32-true" else "float64"
        raise ConfigError(
            f"trainer.precision = {value!r} disagrees with model.dtype = {dtype!r}; set model.dtype = {other!r} "
            "or remove trainer.precision (it follows model.dtype)"
        )
    return wanted
