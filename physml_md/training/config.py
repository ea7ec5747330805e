"""Training configuration: dataclasses validated from TOML or YAML files (physicsml/modelforge vocabulary).

``load_config`` reads a ``.toml``/``.yaml``/``.yml`` file, applies ``section.key=value`` overrides, resolves
relative paths against the file's directory and validates; ``config_from_dict`` validates a mapping. Every
problem is a ``ConfigError`` naming the full dotted key, what is wrong and how to fix it. Lengths accept a
number (angstrom) or a string with units ("5 angstrom"). ``config_to_dict`` gives plain built-in types, safe
for ``torch.load(weights_only=True)``, and ``config_from_dict(config_to_dict(c)) == c``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import importlib
import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Union

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # python 3.10
    import tomli as tomllib

from physml_md.models import MODEL_NAMES
from physml_md.training.losses import COMPONENTS
from physml_md.units import parse_quantity

LOSS_COMPONENTS = tuple(COMPONENTS)
SPLITTING_STRATEGIES = (
    "random_splitting_strategy",
    "first_come_first_serve_strategy",
    "random_record_splitting_strategy",
)
LR_SCHEDULERS = ("reduce_on_plateau", "cosine", "one_cycle")
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")

# trainer keys that are ours, not lightning.Trainer arguments (removed by ``trainer_kwargs``)
_TRAINER_SPECIAL = ("callbacks", "checkpoint")
_TRAINER_DEFAULTS = {
    "max_epochs": 100,
    "accelerator": "auto",
    "devices": 1,
    "default_root_dir": "physml_runs",
    "enable_progress_bar": True,
}
_CHECKPOINT_DEFAULTS = {"save_top_k": 1, "save_last": True, "mode": "min"}  # monitor -> training.monitor
# help of the [trainer] keys we set or treat specially, for the configuration reference
_TRAINER_HELP = {
    "max_epochs": "number of training epochs",
    "accelerator": 'lightning accelerator: "cpu", "gpu", "auto", ...',
    "devices": "number of devices (or a list of device indices)",
    "default_root_dir": "runs are written to <default_root_dir>/version_N/; relative paths start at the config file",
    "enable_progress_bar": "show Lightning's progress bar",
    "precision": "follows model.dtype; only the matching full precision is accepted (no mixed precision)",
    "inference_mode": "always false (forces need autograd during validation); the runner sets it",
    "checkpoint": "lightning.pytorch.callbacks.ModelCheckpoint arguments (best and last checkpoints)",
    "checkpoint.monitor": "metric that chooses the best checkpoint; unset: training.monitor",
    "checkpoint.save_top_k": "how many best checkpoints to keep",
    "checkpoint.save_last": "also keep the last checkpoint (last.ckpt), for --ckpt-path",
    "checkpoint.mode": 'whether the monitored metric should decrease ("min") or increase ("max")',
    "callbacks": "extra Lightning callbacks, each a table {class_path, init_args}",
    "callbacks.class_path": "dotted name of a lightning Callback class, e.g. "
    '"lightning.pytorch.callbacks.LearningRateMonitor"',
    "callbacks.init_args": "keyword arguments of the class",
}
_PRECISIONS = {32: "32-true", 64: "64-true", "32": "32-true", "64": "64-true"}
_PRECISIONS.update({"32-true": "32-true", "64-true": "64-true"})
_PRECISION_OF_DTYPE = {"float32": "32-true", "float64": "64-true"}


class ConfigError(ValueError):
    """A configuration problem; the message names the key, the problem and the fix."""


# ---------------------------------------------------------------------------------------------- value checks
def _got(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _yaml_hint(value: Any) -> str:
    """A hint for numbers that YAML 1.1 reads as strings ("1e-3" needs a dot: "1.0e-3")."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return "; write it as a number without quotes (YAML reads 1e-3 as a string: write 1.0e-3)"
    return ""


def _int(minimum: int | None = None) -> Callable[[Any, str], int]:
    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {_got(value)}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{key} must be >= {minimum}, got {value}")
        return value

    return check


def _float(
    minimum: float | None = None, positive: bool = False, below: float | None = None
) -> Callable[[Any, str], float]:
    def check(value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {_got(value)}{_yaml_hint(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be finite, got {value}")
        if positive and not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{key} must be >= {minimum}, got {value}")
        if below is not None and not value < below:
            raise ConfigError(f"{key} must be < {below}, got {value}")
        return value

    return check


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {_got(value)}")
    return value


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string, got {_got(value)}")
    return value


def _choice(*options: Any) -> Callable[[Any, str], Any]:
    def check(value: Any, key: str) -> Any:
        if not isinstance(value, str) or value not in options:
            listed = ", ".join(repr(o) for o in options)
            raise ConfigError(f"{key} must be one of {listed}, got {_got(value)}")
        return value

    return check


def _optional(inner: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    def check(value: Any, key: str) -> Any:
        return None if value is None else inner(value, key)

    return check


def _length(value: Any, key: str) -> float:
    try:
        length = parse_quantity(value, "length", name=key)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if not length > 0:
        raise ConfigError(f"{key} must be a positive length, got {value!r}")
    return length


def _quantity(kind: str) -> Callable[[Any, str], float]:
    """A non-negative quantity of ``kind`` (e.g. "300 K", "0.5 fs"), in the internal unit."""

    def check(value: Any, key: str) -> float:
        try:
            number = parse_quantity(value, kind, name=key)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        if not number >= 0:
            raise ConfigError(f"{key} must not be negative, got {value!r}")
        return number

    return check


def _path(value: Any, key: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(f"{key} must be a file path (string), got {_got(value)}")
    return str(value)


def _index(value: Any, key: str) -> Union[str, int]:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{key} must be an ASE index string such as ':' or '-10:', got {_got(value)}")
    if isinstance(value, str):
        from ase.io.formats import string2index

        try:
            selection = string2index(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key}: {value!r} is not an index ({exc}); use a string like ':' or '-10:'") from None
        if not isinstance(selection, (int, slice)):
            raise ConfigError(f"{key}: {value!r} is not an index; use a string like ':', '5' or '-10:'")
    return value


def _pbc(value: Any, key: str) -> List[bool]:
    if isinstance(value, bool):
        return [value] * 3
    if not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, bool) for v in value):
        raise ConfigError(f"{key} must be a list of 3 booleans such as [true, true, false], got {_got(value)}")
    return list(value)


def _cell(value: Any, key: str) -> List[List[float]]:
    shape_ok = isinstance(value, list) and len(value) == 3 and all(isinstance(r, list) and len(r) == 3 for r in value)
    numbers_ok = shape_ok and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for r in value for v in r
    )
    if not numbers_ok:
        raise ConfigError(f"{key} must be a 3x3 list of numbers (cell vectors as rows, angstrom), got {value!r}")
    return [[float(v) for v in row] for row in value]


def _num_workers(value: Any, key: str) -> int:
    if value == "all":
        return os.cpu_count() or 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key} must be an integer >= 0 or the string 'all', got {_got(value)}")
    return value


def _data_split(value: Any, key: str) -> List[float]:
    valid = (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value)
    )
    if not valid:
        raise ConfigError(f"{key} must be three non-negative fractions [train, validation, test], got {value!r}")
    if abs(sum(value) - 1.0) > 1e-6:
        raise ConfigError(f"{key} = {value} sums to {sum(value):.6g}; the three fractions must sum to 1")
    return [float(v) for v in value]


def _components(value: Any, key: str) -> List[str]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key} must be a non-empty list of loss components ({', '.join(LOSS_COMPONENTS)})")
    for item in value:
        if item not in LOSS_COMPONENTS:
            close = _closest(str(item), LOSS_COMPONENTS)
            hint = f"did you mean {close!r}?" if close else f"valid components: {', '.join(LOSS_COMPONENTS)}"
            raise ConfigError(f"{key}: unknown loss component {item!r}; {hint}")
    duplicates = sorted({item for item in value if value.count(item) > 1})
    if duplicates:
        raise ConfigError(f"{key} lists {', '.join(duplicates)} more than once; list each component once")
    return list(value)


def _table_of(inner: Callable[[Any, str], Any]) -> Callable[[Any, str], Dict[str, Any]]:
    """A table component -> value (names are checked against loss_components afterwards)."""

    def check(value: Any, key: str) -> Dict[str, Any]:
        table = _mapping(value, key)
        return {name: inner(item, f"{key}.{name}") for name, item in table.items()}

    return check


def _mapping(value: Any, key: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a table (mapping), got {_got(value)}")
    for name in value:
        if not isinstance(name, str):
            raise ConfigError(f"{key}: keys must be strings, got {_got(name)}")
    return value


def _spec(
    check: Callable[[Any, str], Any],
    default: Any = None,
    factory: Callable[[], Any] | None = None,
    help: str = "",
):
    """A dataclass field validated by ``check(value, dotted_key)`` when read from a mapping; ``help`` describes
    it in the configuration reference (``physml_md.training.config_reference``)."""
    metadata = {"check": check, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# ---------------------------------------------------------------------------------------------- dataclasses
@dataclass
class ModelConfig:
    """``[model]``: architecture and priors. ``cutoff`` (angstrom) is filled from ``data.cut_off`` when unset."""

    name: str = _spec(
        _choice(*MODEL_NAMES),
        "painn",
        help="the potential's architecture: painn (PaiNN: scalar and vector features per atom) or tensornet "
        "(TensorNet: a 3x3 Cartesian tensor per feature channel, usually with n_interactions = 2); features, "
        "n_interactions and n_rbf size either",
    )
    cutoff: float | None = _spec(
        _optional(_length),
        None,
        help="cut-off radius of the model; unset: data.cut_off (when both are set they must agree)",
    )
    dtype: str = _spec(
        _choice("float32", "float64"),
        "float64",
        help="dtype of the parameters and of every computation; trainer.precision follows it",
    )
    export_dtype: str | None = _spec(
        _optional(_choice("float32", "float64")),
        None,
        help="dtype of the exported model file; unset: dtype (e.g. train in float32, export float64 for MD)",
    )
    features: int = _spec(_int(1), 64, help="feature channels per atom")
    n_interactions: int = _spec(_int(1), 3, help="interaction (message-passing) layers")
    n_rbf: int = _spec(_int(1), 20, help="radial basis functions that expand each interatomic distance")
    zbl: bool = _spec(_bool, False, help="add the ZBL screened nuclear repulsion as a short-range prior")
    charges: bool = _spec(_bool, False, help="add a per-atom charge head (outputs charges, total_charge and dipole)")
    coulomb: bool = _spec(
        _bool, False, help="add PhysNet's damped Coulomb energy between the predicted charges (needs charges = true)"
    )
    seed: int = _spec(_int(0), 0, help="seed of the initial weights (the global random state is left alone)")


@dataclass
class SplitConfig:
    """``[data.train]`` etc.: an optional file of its own and the batch size."""

    path: str | None = _spec(
        _optional(_path),
        None,
        help="file (extxyz or ASE db) holding this split, instead of splitting data.source; relative paths start at "
        "the config file",
    )
    batch_size: int = _spec(_int(1), 16, help="structures per batch")


@dataclass
class SplittingConfig:
    """``[data.splitting_strategy]``: how one ``data.source`` file is split into train/validation/test."""

    name: str = _spec(
        _choice(*SPLITTING_STRATEGIES),
        "random_splitting_strategy",
        help="how data.source is split (modelforge's strategy names)",
    )
    data_split: List[float] = _spec(
        _data_split,
        factory=lambda: [0.8, 0.1, 0.1],
        help="fractions [train, validation, test] of the structures (of the records for "
        "random_record_splitting_strategy)",
    )
    seed: int = _spec(_int(), 42, help="seed that splits what the test set leaves into training and validation")
    test_seed: int = _spec(
        _int(), 42, help="seed that draws the test set first, so changing seed leaves the test set unchanged"
    )
    record_key: str = _spec(
        _str,
        "record",
        help="atoms.info key naming the record (e.g. the molecule) of a structure for "
        "random_record_splitting_strategy; a structure without it counts by its chemical formula",
    )


@dataclass
class DataConfig:
    """``[data]``: where structures come from, how they are read and batched. ``cut_off`` in angstrom."""

    source: str | None = _spec(
        _optional(_path),
        None,
        help="one file (extxyz or ASE db) split into train/validation/test by [data.splitting_strategy]; relative "
        "paths start at the config file",
    )
    index: Union[str, int] = _spec(
        _index, ":", help="which structures of each file to read, as in ase.io.read (':' all, '-10:' the last ten)"
    )
    cut_off: float = _spec(_length, 5.0, help="neighbour-list cut-off radius")
    pbc: List[bool] | None = _spec(
        _optional(_pbc),
        None,
        help="periodic boundary conditions that replace those of every structure (unset: as read)",
    )
    cell: List[List[float]] | None = _spec(
        _optional(_cell), None, help="cell (vectors as rows) that replaces that of every structure (unset: as read)"
    )
    self_interaction: bool = _spec(_bool, False, help="include each atom as its own neighbour; only false is supported")
    pre_batch: str = _spec(
        _choice("in_memory", "on_disk"),
        "in_memory",
        help="where the precomputed neighbour lists are kept: in RAM, or written to cache_dir and memory-mapped",
    )
    cache_dir: str | None = _spec(
        _optional(_path), None, help='directory of the neighbour-list cache; needed with pre_batch = "on_disk"'
    )
    num_workers: int = _spec(_num_workers, 0, help='DataLoader worker processes; "all": one per CPU')
    y_energy: str | None = _spec(
        _optional(_str), "energy", help="name of the energy label in the files (training needs energies)"
    )
    y_forces: str | None = _spec(
        _optional(_str), "forces", help="name of the forces label in the files; null: not read"
    )
    y_stress: str | None = _spec(
        _optional(_str), "stress", help="name of the stress label in the files; null: not read"
    )
    y_charges: str | None = _spec(
        _optional(_str), None, help="name of the per-atom charges label in the files; unset: not read"
    )
    y_total_charge: str | None = _spec(
        _optional(_str), None, help="name of the total-charge label in the files; unset: not read"
    )
    y_dipole: str | None = _spec(_optional(_str), None, help="name of the dipole label in the files; unset: not read")
    train: SplitConfig = field(default_factory=lambda: SplitConfig(batch_size=8))
    validation: SplitConfig = field(default_factory=SplitConfig)
    test: SplitConfig = field(default_factory=SplitConfig)
    predict: SplitConfig = field(default_factory=SplitConfig)
    splitting_strategy: SplittingConfig = field(default_factory=SplittingConfig)

    def has_files(self) -> bool:
        """True when the training data come from files (``source`` or ``train.path``)."""
        return self.source is not None or self.train.path is not None

    def label_keys(self):
        """The ``physml_md.data.LabelKeys`` of the ``y_*`` fields."""
        from physml_md.data.structures import LabelKeys

        return LabelKeys(
            energy=self.y_energy,
            forces=self.y_forces,
            stress=self.y_stress,
            charges=self.y_charges,
            total_charge=self.y_total_charge,
            dipole=self.y_dipole,
        )


@dataclass
class EMAConfig:
    """``[training.ema]``: exponential moving average of the weights (decay 0 disables it)."""

    decay: float = _spec(
        _float(minimum=0.0, below=1.0),
        0.0,
        help="weight of the old average at each optimizer step; the average is validated, tested and exported",
    )


@dataclass
class LRSchedulerConfig:
    """``[training.lr_scheduler]``; ``monitor`` is filled from ``training.monitor`` when unset."""

    name: str | None = _spec(
        _optional(_choice(*LR_SCHEDULERS)), None, help="learning-rate schedule; unset: constant learning rate"
    )
    factor: float = _spec(
        _float(positive=True, below=1.0), 0.5, help="reduce_on_plateau: factor applied to the learning rate"
    )
    patience: int = _spec(_int(0), 10, help="reduce_on_plateau: epochs without improvement before reducing")
    min_lr: float = _spec(_float(minimum=0.0), 0.0, help="reduce_on_plateau: lower bound of the learning rate")
    cooldown: int = _spec(_int(0), 0, help="reduce_on_plateau: epochs to wait after a reduction")
    monitor: str | None = _spec(
        _optional(_str), None, help="reduce_on_plateau: metric watched; unset: training.monitor"
    )
    eta_min: float = _spec(_float(minimum=0.0), 0.0, help="cosine: final learning rate")
    t_max: int | None = _spec(
        _optional(_int(1)),
        None,
        help='cosine: length of the schedule in intervals; unset: trainer.max_epochs (interval = "epoch") or the '
        'total number of steps (interval = "step")',
    )
    max_lr: float | None = _spec(
        _optional(_float(positive=True)), None, help="one_cycle: peak learning rate; unset: 10 x training.lr"
    )
    pct_start: float = _spec(
        _float(positive=True, below=1.0),
        0.3,
        help="one_cycle: fraction of the steps spent increasing the learning rate",
    )
    interval: str = _spec(
        _choice("epoch", "step"),
        "epoch",
        help="whether the schedule steps every epoch or every optimizer step (one_cycle always steps)",
    )


@dataclass
class EarlyStoppingConfig:
    """``[training.early_stopping]``; ``monitor`` is filled from ``training.monitor`` when unset."""

    enabled: bool = _spec(_bool, False, help="stop training when monitor stops improving")
    monitor: str | None = _spec(_optional(_str), None, help="metric watched; unset: training.monitor")
    patience: int = _spec(_int(1), 50, help="validation checks without improvement before stopping")
    min_delta: float = _spec(_float(minimum=0.0), 0.0, help="smallest change that counts as an improvement")
    mode: str = _spec(_choice("min", "max"), "min", help='whether monitor should decrease ("min") or increase ("max")')


@dataclass
class LossConfig:
    """``[training.loss_parameter]``: loss components, their weights and how the weights move per epoch."""

    loss_components: List[str] = _spec(
        _components,
        factory=lambda: ["per_system_energy", "per_atom_force"],
        help="what the loss compares (modelforge's names); each is a masked mean squared error",
    )
    per_atom_energy: bool = _spec(
        _bool, True, help="compare energies per atom (divided by the number of atoms) in the loss"
    )
    schedule: str = _spec(
        _choice("step", "linear"),
        "step",
        help='how weights move toward target_weight: "step" adds mixing_steps after every epoch, "linear" '
        "interpolates over mixing_epochs",
    )
    weight: Dict[str, float] = _spec(
        _table_of(_float(minimum=0.0)),
        factory=dict,
        help="initial weight of each component (1.0 for a listed component not given here)",
    )
    target_weight: Dict[str, float] = _spec(
        _table_of(_float(minimum=0.0)), factory=dict, help="weight each moving component ends at"
    )
    mixing_steps: Dict[str, float] = _spec(
        _table_of(_float()),
        factory=dict,
        help='schedule = "step": signed change of the weight after every epoch, until target_weight',
    )
    mixing_epochs: Dict[str, int] = _spec(
        _table_of(_int(1)), factory=dict, help='schedule = "linear": epochs taken to reach target_weight'
    )


@dataclass
class MDValidationConfig:
    """``[training.md_validation]``: a short MD run with the current (EMA) weights every ``every_n_epochs``
    epochs (0: off), logged as md/stable, md/min_distance, md/max_force, md/drift (NVE) or md/temperature
    (NVT). ``structures``: file with the starting structure (default: the first training structure)."""

    every_n_epochs: int = _spec(_int(0), 0, help="run the MD after every n-th training epoch; 0: never")
    engine: str = _spec(_choice("ase", "openmm"), "ase", help="MD engine")
    ensemble: str = _spec(
        _choice("nve", "nvt"), "nve", help='"nve" (logs md/drift) or "nvt" (Langevin; logs md/temperature)'
    )
    steps: int = _spec(_int(1), 200, help="MD steps per run")
    report_every: int = _spec(_int(1), 10, help="steps between recorded frames (and blow-up checks)")
    temperature: float = _spec(
        _quantity("temperature"), 300.0, help="temperature of the initial velocities and of the NVT thermostat"
    )
    timestep: float = _spec(_quantity("time"), 0.5, help="MD time step")
    structures: str | None = _spec(
        _optional(_path), None, help="file with the starting structure; unset: the first training structure"
    )
    index: int = _spec(_int(0), 0, help="which structure of that file")
    stop_on_blowup: bool = _spec(_bool, False, help="stop training when the MD blows up (otherwise it is only logged)")
    min_distance: float = _spec(_length, 0.5, help="blow-up when two atoms come closer than this")
    max_force: float = _spec(_float(positive=True), 100.0, help="blow-up when a force exceeds this, in eV/angstrom")


@dataclass
class TrainingConfig:
    """``[training]``: optimiser, normalisation, seed and the sub-tables."""

    lr: float = _spec(_float(positive=True), 1e-3, help="learning rate (the initial one when a schedule is set)")
    optimizer: str = _spec(_choice("adam", "adamw"), "adam", help="torch optimizer: Adam or AdamW")
    weight_decay: float = _spec(_float(minimum=0.0), 0.0, help="optimizer weight decay")
    monitor: str = _spec(
        _str,
        "val/loss",
        help="metric that chooses the best checkpoint and drives lr_scheduler and early_stopping; without validation "
        "data its train/ twin is used",
    )
    remove_self_energies: bool = _spec(
        _bool,
        True,
        help="fit per-element self-energies to the training split (least squares) and subtract them before training; "
        "they are added back in the model",
    )
    scale_by_force_rms: bool = _spec(_bool, True, help="scale the network output by the RMS of the training forces")
    seed: int = _spec(
        _int(0),
        42,
        help="global seed (lightning.seed_everything), training-data shuffling and MD validation velocities",
    )
    ema: EMAConfig = field(default_factory=EMAConfig)
    lr_scheduler: LRSchedulerConfig = field(default_factory=LRSchedulerConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    loss_parameter: LossConfig = field(default_factory=LossConfig)
    md_validation: MDValidationConfig = field(default_factory=MDValidationConfig)


@dataclass
class Config:
    """The whole configuration; ``trainer`` holds lightning.Trainer keyword arguments plus ``callbacks`` and
    ``checkpoint`` (see ``trainer_kwargs``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    trainer: Dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- unknown keys
def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _closest(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate most like ``name``; a dotted one is compared by whole and last part, and ranks a little
    below a direct key of the section (so 'modle' suggests 'model', not 'training.early_stopping.mode')."""
    best, best_score = None, 0.0
    lowered = name.lower()
    for candidate in candidates:
        leaf = candidate.rsplit(".", 1)[-1]
        score = max(
            difflib.SequenceMatcher(None, lowered, candidate.lower()).ratio(),
            difflib.SequenceMatcher(None, lowered, leaf.lower()).ratio(),
        )
        if "." in candidate:
            score *= 0.9
        if score > best_score:
            best, best_score = candidate, score
    return best if best_score >= 0.6 else None


def _unknown_message(name: str, candidates: Sequence[str], prefix: str) -> str:
    """ "unknown key 'prefix.name'; did you mean 'prefix.closest'?" (or the list of valid keys)."""
    shown = f"unknown key {_join(prefix, name)!r}"
    suggestion = _closest(name, candidates)
    if suggestion is not None:
        return f"{shown}; did you mean {_join(prefix, suggestion)!r}?"
    direct = [c for c in candidates if "." not in c]
    where = f" in [{prefix}]" if prefix else ""
    return f"{shown}; valid keys{where}: {', '.join(direct)}"


def _section_keys(cls: type, base: Any) -> List[str]:
    """Valid keys of a section: its fields first, then the dotted keys of its sub-sections."""
    names = [f.name for f in dataclasses.fields(cls)]
    nested = []
    for f in dataclasses.fields(cls):
        value = getattr(base, f.name)
        if dataclasses.is_dataclass(value):
            nested += [f"{f.name}.{sub}" for sub in _section_keys(type(value), value)]
    return names + nested


def _reject_unknown(raw: Mapping, candidates: Sequence[str], prefix: str) -> None:
    valid = {c for c in candidates if "." not in c}
    for name in raw:
        if name not in valid:
            raise ConfigError(_unknown_message(name, candidates, prefix))


def _build(cls: type, raw: Any, prefix: str, base: Any) -> Any:
    """Validate ``raw`` (a mapping; None counts as empty) into ``cls``; missing keys take the values of ``base``."""
    raw = _mapping({} if raw is None else raw, prefix)
    _reject_unknown(raw, _section_keys(cls, base), prefix)
    values = {}
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        default = getattr(base, f.name)
        if dataclasses.is_dataclass(default):
            values[f.name] = _build(type(default), raw.get(f.name, {}), key, default)
        elif f.name in raw:
            values[f.name] = f.metadata["check"](raw[f.name], key)
        else:
            values[f.name] = copy.deepcopy(default)
    return cls(**values)


# ---------------------------------------------------------------------------------------------- cross checks
# loss component -> (data label field, needs model.charges)
_COMPONENT_NEEDS = {
    "per_system_energy": ("y_energy", False),
    "per_atom_force": ("y_forces", False),
    "per_system_stress": ("y_stress", False),
    "per_atom_charge": ("y_charges", True),
    "per_system_dipole_moment": ("y_dipole", True),
    "per_system_total_charge": (None, True),
}
_LOSS = "training.loss_parameter"


def _check_loss_tables(loss: LossConfig) -> None:
    listed = loss.loss_components
    for table in ("weight", "target_weight", "mixing_steps", "mixing_epochs"):
        for name in getattr(loss, table):
            key = f"{_LOSS}.{table}.{name}"
            if name not in LOSS_COMPONENTS:
                raise ConfigError(_unknown_message(name, LOSS_COMPONENTS, f"{_LOSS}.{table}"))
            if name not in listed:
                raise ConfigError(
                    f"{key} is set but {name!r} is not in {_LOSS}.loss_components; add it there or remove this key"
                )
    loss.weight = {name: loss.weight.get(name, 1.0) for name in listed}
    wrong_table = {"step": "mixing_epochs", "linear": "mixing_steps"}[loss.schedule]
    right_table = {"step": "mixing_steps", "linear": "mixing_epochs"}[loss.schedule]
    if getattr(loss, wrong_table):
        raise ConfigError(
            f"{_LOSS}.{wrong_table} is not used with schedule = {loss.schedule!r}; use {_LOSS}.{right_table} "
            f"or set schedule = {'linear' if loss.schedule == 'step' else 'step'!r}"
        )
    moves = getattr(loss, right_table)
    for name in moves:
        if name not in loss.target_weight:
            raise ConfigError(f"{_LOSS}.{right_table}.{name} is set but {_LOSS}.target_weight.{name} is not; set both")
    for name, target in loss.target_weight.items():
        if name not in moves:
            raise ConfigError(
                f"{_LOSS}.target_weight.{name} is set but {_LOSS}.{right_table}.{name} is not "
                f"(schedule = {loss.schedule!r}); set how the weight moves there"
            )
        start = loss.weight[name]
        if loss.schedule == "step" and target != start and not (target - start) * moves[name] > 0:
            direction = "positive" if target > start else "negative"
            raise ConfigError(
                f"{_LOSS}.mixing_steps.{name} = {moves[name]} never takes the weight from {start} to the target "
                f"{target}; use a {direction} step"
            )
    if not any(weight > 0 for weight in loss.weight.values()):
        raise ConfigError(f"{_LOSS}.weight: every weight is 0; give at least one loss component a positive weight")


def _check_cross(config: Config, cut_off_given: bool) -> None:
    model, data, training = config.model, config.data, config.training
    if model.cutoff is not None and not cut_off_given:
        data.cut_off = model.cutoff  # only model.cutoff given: the neighbour list follows it
    if model.cutoff is not None and abs(model.cutoff - data.cut_off) > 1e-9:
        raise ConfigError(
            f"model.cutoff = {model.cutoff} angstrom disagrees with data.cut_off = {data.cut_off} angstrom; "
            "remove model.cutoff (it defaults to data.cut_off) or make them equal"
        )
    model.cutoff = data.cut_off
    if model.coulomb and not model.charges:
        raise ConfigError("model.coulomb = true needs model.charges = true (the Coulomb term uses predicted charges)")
    if data.self_interaction:
        raise ConfigError(
            "data.self_interaction = true is not supported (PaiNN cannot take zero-length edges); set it to false"
        )
    if data.pbc is not None and data.cell is not None:
        for axis, periodic in enumerate(data.pbc):
            if periodic and not any(data.cell[axis]):
                raise ConfigError(f"data.pbc is periodic along axis {axis} but data.cell row {axis} is zero")
    for component in training.loss_parameter.loss_components:
        label, needs_charges = _COMPONENT_NEEDS[component]
        if label is not None and getattr(data, label) is None:
            raise ConfigError(
                f"{_LOSS}.loss_components includes {component!r} but data.{label} is not set; set data.{label} "
                f"to the name of that label in your files, or remove {component!r}"
            )
        if needs_charges and not model.charges:
            raise ConfigError(
                f"{_LOSS}.loss_components includes {component!r}, which needs the charge head; set model.charges = "
                f"true or remove {component!r}"
            )
    _check_loss_tables(training.loss_parameter)
    if training.lr_scheduler.monitor is None:
        training.lr_scheduler.monitor = training.monitor
    if training.early_stopping.monitor is None:
        training.early_stopping.monitor = training.monitor


def _check_scheduler(raw_scheduler: Any, config: Config) -> None:
    scheduler = config.training.lr_scheduler
    key = "training.lr_scheduler"
    if scheduler.name == "one_cycle":
        if isinstance(raw_scheduler, Mapping) and raw_scheduler.get("interval") == "epoch":
            raise ConfigError(f"{key}.interval = 'epoch' cannot be used with one_cycle (it steps per batch); remove it")
        scheduler.interval = "step"
    if scheduler.name == "cosine" and scheduler.t_max is None and scheduler.interval == "epoch":
        max_epochs = config.trainer.get("max_epochs")
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
            raise ConfigError(
                f"{key}.t_max is unset and trainer.max_epochs = {max_epochs!r} cannot stand in for it; "
                f"set {key}.t_max (epochs) or trainer.max_epochs"
            )


# ---------------------------------------------------------------------------------------------- trainer
@functools.cache
def _parameters(target: str) -> tuple:
    import lightning.pytorch as pl

    obj = {"trainer": pl.Trainer, "checkpoint": pl.callbacks.ModelCheckpoint}[target]
    return tuple(name for name in inspect.signature(obj.__init__).parameters if name != "self")


def _precision(value: Any, dtype: str) -> str:
    wanted = _PRECISION_OF_DTYPE[dtype]
    if value is None:
        return wanted
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"trainer.precision must be 32, 64, '32-true' or '64-true', got {_got(value)}")
    normalised = _PRECISIONS.get(value)
    if normalised is None:
        if any(part in str(value) for part in ("16", "mixed", "transformer")):
            raise ConfigError(
                f"trainer.precision = {value!r} is not supported: forces need float32 or float64; "
                "use '32-true' or '64-true' (or remove it: it follows model.dtype)"
            )
        raise ConfigError(f"trainer.precision must be 32, 64, '32-true' or '64-true', got {value!r}")
    if normalised != wanted:
        other = "float32" if normalised == "32-true" else "float64"
        raise ConfigError(
            f"trainer.precision = {value!r} disagrees with model.dtype = {dtype!r}; set model.dtype = {other!r} "
            "or remove trainer.precision (it follows model.dtype)"
        )
    return normalised


def _callback_specs(value: Any, key: str) -> List[Dict[str, Any]]:
    if not isinstance(value, list):
        example = "{class_path = 'module.Class', init_args = {...}}"
        raise ConfigError(f"{key} must be a list of tables {example}, got {value!r}")
    specs = []
    for i, spec in enumerate(value):
        item = f"{key}[{i}]"
        spec = _mapping(spec, item)
        _reject_unknown(spec, ("class_path", "init_args"), item)
        class_path = spec.get("class_path")
        if not isinstance(class_path, str) or "." not in class_path.strip(".") or " " in class_path:
            raise ConfigError(
                f"{item}.class_path must be a dotted name such as 'lightning.pytorch.callbacks.LearningRateMonitor', "
                f"got {_got(class_path)}"
            )
        init_args = dict(_mapping(spec.get("init_args", {}), f"{item}.init_args"))
        specs.append({"class_path": class_path, "init_args": copy.deepcopy(init_args)})
    return specs


def _checkpoint(value: Any, monitor: str) -> Dict[str, Any]:
    raw = _mapping(value, "trainer.checkpoint")
    _reject_unknown(raw, _parameters("checkpoint"), "trainer.checkpoint")
    return {"monitor": monitor, **_CHECKPOINT_DEFAULTS, **copy.deepcopy(dict(raw))}


def _check_trainer(raw: Any, config: Config) -> Dict[str, Any]:
    raw = _mapping({} if raw is None else raw, "trainer")
    valid = _parameters("trainer") + tuple(k for k in _TRAINER_SPECIAL if k not in _parameters("trainer"))
    _reject_unknown(raw, valid, "trainer")
    trainer = {**_TRAINER_DEFAULTS, **copy.deepcopy(dict(raw))}
    if "inference_mode" in raw and raw["inference_mode"] is not False:
        raise ConfigError(
            f"trainer.inference_mode = {raw['inference_mode']!r} is not allowed: forces need autograd during "
            "validation; remove it (the runner sets it to false)"
        )
    if "logger" in raw:
        raise ConfigError(
            "trainer.logger is set by physml-md (a CSV logger, and TensorBoard when it is installed, under "
            "trainer.default_root_dir); remove it, and add other loggers' callbacks through trainer.callbacks"
        )
    if "default_root_dir" in raw:
        trainer["default_root_dir"] = _path(raw["default_root_dir"], "trainer.default_root_dir")
    trainer["precision"] = _precision(raw.get("precision"), config.model.dtype)
    trainer["callbacks"] = _callback_specs(raw.get("callbacks", []), "trainer.callbacks")
    trainer["checkpoint"] = _checkpoint(raw.get("checkpoint", {}), config.training.monitor)
    return trainer


def trainer_kwargs(config: Config) -> Dict[str, Any]:
    """Keyword arguments for ``lightning.Trainer``: ``config.trainer`` without ``callbacks``/``checkpoint``,
    with ``inference_mode=False``."""
    kwargs = {k: copy.deepcopy(v) for k, v in config.trainer.items() if k not in _TRAINER_SPECIAL}
    kwargs["inference_mode"] = False
    return kwargs


def instantiate_callbacks(specs: list) -> list:
    """Build Lightning callbacks from ``[{class_path = "module.Class", init_args = {...}}, ...]``."""
    import lightning.pytorch as pl

    callbacks = []
    for i, spec in enumerate(_callback_specs(specs, "trainer.callbacks")):
        item = f"trainer.callbacks[{i}]"
        module_name, _, class_name = spec["class_path"].rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"{item}.class_path = {spec['class_path']!r}: cannot import module {module_name!r} ({exc}); "
                "check the spelling or install the package"
            ) from None
        cls = getattr(module, class_name, None)
        if cls is None:
            close = difflib.get_close_matches(class_name, [n for n in dir(module) if not n.startswith("_")], n=1)
            hint = f"; did you mean '{module_name}.{close[0]}'?" if close else ""
            raise ConfigError(f"{item}.class_path: module {module_name!r} has no attribute {class_name!r}{hint}")
        if not (isinstance(cls, type) and issubclass(cls, pl.Callback)):
            raise ConfigError(f"{item}.class_path = {spec['class_path']!r} is not a lightning Callback class")
        try:
            callbacks.append(cls(**spec["init_args"]))
        except Exception as exc:  # whatever the class raises, report it against the config key
            raise ConfigError(f"{item}: {class_name}(**init_args) failed: {exc}; check {item}.init_args") from exc
    return callbacks


# ---------------------------------------------------------------------------------------------- sources
def _check_source_conflicts(data: DataConfig) -> None:
    split_paths = [name for name in ("train", "validation", "test") if getattr(data, name).path is not None]
    if data.source is not None and split_paths:
        keys = ", ".join(f"data.{name}.path" for name in split_paths)
        raise ConfigError(
            f"data.source and {keys} are both set; give either one file to split (data.source) or separate "
            "files (data.train.path and optionally data.validation.path / data.test.path)"
        )
    if data.train.path is None and any(getattr(data, n).path is not None for n in ("validation", "test")):
        raise ConfigError("data.validation.path / data.test.path are set but data.train.path is not; set it too")


def validate_sources(config: Config) -> None:
    """Check that the training data come from existing files of a supported type (``data.source`` or
    ``data.train.path``, not both). ``config_from_dict`` calls it unless ``require_files=False``."""
    from physml_md.data.readers import SUPPORTED_SUFFIXES

    data = config.data
    _check_source_conflicts(data)
    if not data.has_files():
        raise ConfigError(
            "no training data: set data.source (one file split by data.splitting_strategy) or data.train.path"
        )
    for key, path in [("data.source", data.source)] + [
        (f"data.{name}.path", getattr(data, name).path) for name in ("train", "validation", "test", "predict")
    ]:
        if path is None:
            continue
        if Path(path).suffix.lower() not in SUPPORTED_SUFFIXES:
            raise ConfigError(f"{key} = {path!r}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}")
        if not Path(path).is_file():
            raise ConfigError(f"{key} = {path!r}: no such file; fix the path (relative paths start at the config file)")


# ---------------------------------------------------------------------------------------------- entry points
_SECTIONS = ("model", "data", "training", "trainer")


def config_from_dict(raw: Mapping, *, require_files: bool = True) -> Config:
    """Validate a mapping with sections model, data, training, trainer into a ``Config``.

    ``require_files=False`` skips ``validate_sources`` (for data passed as objects through the Python API).
    """
    raw = _mapping(raw, "config")
    defaults = Config()
    candidates = list(_SECTIONS) + [c for c in _section_keys(Config, defaults) if "." in c]
    _reject_unknown(raw, candidates, "")
    config = Config(
        model=_build(ModelConfig, raw.get("model", {}), "model", defaults.model),
        data=_build(DataConfig, raw.get("data", {}), "data", defaults.data),
        training=_build(TrainingConfig, raw.get("training", {}), "training", defaults.training),
    )
    cut_off_given = isinstance(raw.get("data"), Mapping) and "cut_off" in raw["data"]
    _check_cross(config, cut_off_given)
    config.trainer = _check_trainer(raw.get("trainer", {}), config)
    _check_scheduler(_nested(raw, "training", "lr_scheduler"), config)
    _check_source_conflicts(config.data)
    if require_files:
        validate_sources(config)
    return config


def _nested(raw: Mapping, *keys: str) -> Any:
    for key in keys:
        if not isinstance(raw, Mapping):
            return None
        raw = raw.get(key)
    return raw


def _plain(value: Any, key: str) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    raise ConfigError(
        f"{key} = {value!r} ({type(value).__name__}) cannot be stored in a checkpoint; use plain values "
        "(str, int, float, bool, list, table) or pass objects to the runner directly"
    )


def config_to_dict(config: Config) -> Dict[str, Any]:
    """The configuration as plain built-in types (str/int/float/bool/None/list/dict)."""
    return {
        "model": _plain(dataclasses.asdict(config.model), "model"),
        "data": _plain(dataclasses.asdict(config.data), "data"),
        "training": _plain(dataclasses.asdict(config.training), "training"),
        "trainer": _plain(config.trainer, "trainer"),
    }


def _set_dotted(raw: Dict[str, Any], dotted: str, value: Any, override: str) -> None:
    parts = dotted.split(".")
    if not all(part.strip() for part in parts):
        raise ConfigError(f"override {override!r}: {dotted!r} is not a dotted key such as 'training.lr'")
    table = raw
    for depth, part in enumerate(parts[:-1]):
        part = part.strip()
        if part not in table:
            table[part] = {}
        elif not isinstance(table[part], dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"override {override!r}: {where!r} is a value, not a table")
        table = table[part]
    table[parts[-1].strip()] = value


def _parse_value(text: str) -> Any:
    """A TOML value when ``text`` is one ("3", "true", "[1, 2]", "'x'"), ``null`` -> None, else the string."""
    if text.strip() == "null":
        return None
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """Return a copy of ``raw`` with ``"section.key=value"`` overrides applied (``value`` read as a TOML value
    when possible, ``null`` as None, else kept as a string); missing tables on the way are created."""
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of 'section.key=value' strings, got the string {overrides!r}")
    result = copy.deepcopy(dict(raw))
    for override in overrides:
        if not isinstance(override, str) or "=" not in override:
            raise ConfigError(f"malformed override {override!r}: write 'section.key=value', e.g. 'training.lr=1e-4'")
        dotted, _, text = override.partition("=")
        _set_dotted(result, dotted.strip(), _parse_value(text.strip()), override)
    return result


def _read_file(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ConfigError(f"config file {str(path)!r}: unsupported suffix {suffix!r}; use .toml, .yaml or .yml")
    try:
        if suffix == ".toml":
            with open(path, "rb") as stream:
                raw = tomllib.load(stream)
        else:
            with open(path, encoding="utf-8") as stream:
                raw = yaml.safe_load(stream)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid {suffix[1:].upper()}: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table of sections, got {type(raw).__name__}")
    return raw


# (section, key) chains of the path-valued settings resolved by load_config
_PATH_KEYS = (
    ("data", "source"),
    ("data", "cache_dir"),
    ("data", "train", "path"),
    ("data", "validation", "path"),
    ("data", "test", "path"),
    ("data", "predict", "path"),
    ("trainer", "default_root_dir"),
    ("trainer", "checkpoint", "dirpath"),
    ("training", "md_validation", "structures"),
)


def _resolve_paths(raw: Dict[str, Any], base: Path) -> None:
    for chain in _PATH_KEYS:
        table = _nested(raw, *chain[:-1])
        if isinstance(table, dict) and isinstance(table.get(chain[-1]), str):
            path = Path(table[chain[-1]]).expanduser()
            table[chain[-1]] = str(path if path.is_absolute() else (base / path).resolve())


def load_config(path: Union[str, os.PathLike], overrides: Sequence[str] = (), *, require_files: bool = True) -> Config:
    """Read a ``.toml``/``.yaml``/``.yml`` configuration, apply ``overrides`` and validate it.

    Relative paths in the file (data.source, data.*.path, data.cache_dir, trainer.default_root_dir,
    trainer.checkpoint.dirpath) are taken relative to the file's directory; relative paths given in
    ``overrides`` relative to the working directory.
    """
    path = Path(path)
    raw = _read_file(path)
    _resolve_paths(raw, path.resolve().parent)
    raw = apply_overrides(raw, overrides)
    _resolve_paths(raw, Path.cwd())
    return config_from_dict(raw, require_files=require_files)
