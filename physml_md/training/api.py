"""Python API in the style of physicsml: a model object built from a configuration, then ``model.train(...)``.

>>> model = PhysMLModel({"data": {"cut_off": "5 angstrom"}, "trainer": {"max_epochs": 50}})
>>> result = model.train(train_data="train.extxyz", validation_data="val.extxyz")
>>> result.model_path  # the exported file, ready for PhysMLCalculator or OpenMM
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from physml_md.atomic_write import PathLike
from physml_md.config.load import Config, ConfigError, apply_overrides, config_from_dict, load_config
from physml_md.training.run import TrainResult, train

__all__ = ["PhysMLModel", "load_from_dict"]


class PhysMLModel:
    """A potential to train: configuration in, exported model out.

    config: a ``Config``, a dict with the sections of a config file, or the path of a TOML/YAML file;
    overrides: ``"section.key=value"`` strings as on the command line.
    """

    def __init__(self, config: Config | Mapping[str, Any] | PathLike, overrides: Sequence[str] = ()):
        if isinstance(config, Config):
            if overrides:
                raise ConfigError("overrides apply to a dict or a file, not to a Config object; edit it directly")
            self.config = config
        elif isinstance(config, Mapping):
            self.config = config_from_dict(apply_overrides(dict(config), overrides), require_files=False)
        else:
            self.config = load_config(Path(config), overrides, require_files=False)
        self.result: TrainResult | None = None

    def train(
        self,
        train_data: Any = None,
        validation_data: Any = None,
        test_data: Any = None,
        ckpt_path: PathLike | None = None,
        verbose: bool = True,
    ) -> TrainResult:
        """Train (or resume from ``ckpt_path``); data are file paths or lists of ``ase.Atoms`` and replace the
        files named in the configuration. Returns where the checkpoints, exported model and plots are."""
        if train_data is None and not self.config.data.has_files():
            raise ConfigError(
                "no training data: pass train_data=... (a file or a list of ase.Atoms) or set data.source / "
                "data.train.path in the configuration"
            )
        self.result = train(
            self.config,
            ckpt_path=ckpt_path,
            train_data=train_data,
            validation_data=validation_data,
            test_data=test_data,
            verbose=verbose,
        )
        return self.result

    @property
    def model_path(self) -> Path | None:
        """The exported model of the last ``train`` call (None before training)."""
        return None if self.result is None else self.result.model_path


def load_from_dict(config: Mapping[str, Any]) -> PhysMLModel:
    """``PhysMLModel`` from a configuration dict (molflux/physicsml spelling)."""
    return PhysMLModel(config)
