"""The ``[model]`` and ``[data]`` sections of the configuration schema (pydantic models)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Mapping

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from physml_md.config.types import (
    KEY,
    Cell,
    ConfigError,
    DataSplit,
    Index,
    Length,
    Name,
    NumWorkers,
    Path,
    Pbc,
    Section,
)
from physml_md.data.splits import DEFAULT_DATA_SPLIT, RANDOM, STRATEGIES
from physml_md.data.structures import LabelKeys
from physml_md.models import MAX_CUTOFF, MODEL_NAMES


def _cutoff(value: Any) -> float:
    """The bound of model.cutoff and data.cut_off (one number, copied between them: one message for both)."""
    if value > MAX_CUTOFF:
        raise ValueError(
            f"the cut-off (data.cut_off, model.cutoff) = {value:.6g} angstrom is longer than {MAX_CUTOFF:g} "
            "angstrom, more than any potential uses (short-range models use 4-6 angstrom; long-range electrostatics "
            "is model.coulomb): check the unit, e.g. '5 angstrom'"
        )
    return value


Cutoff = Annotated[Length, AfterValidator(_cutoff)]
TRAIN_BATCH_SIZE = 8  # the other splits: SplitConfig's default


def _train_split(raw: Any) -> Any:
    """[data.train] keys left out take the training split's defaults."""
    raw = {} if raw is None else raw
    return {"batch_size": TRAIN_BATCH_SIZE, **raw} if isinstance(raw, Mapping) else raw


Dtype = Literal["float32", "float64"]
SPLITS = ("train", "validation", "test", "predict")


class ModelConfig(Section):
    """``[model]``: architecture and priors. ``cutoff`` (angstrom) is filled from ``data.cut_off`` when unset."""

    name: Literal[MODEL_NAMES] = Field(
        "painn",
        description="the potential's architecture: painn (PaiNN: scalar and vector features per atom) or tensornet "
        "(TensorNet: a 3x3 Cartesian tensor per feature channel; use n_interactions = 1, which beat 2 per CPU-second "
        "on ethanol, see the README's Architectures); features, n_interactions and n_rbf size either",
    )
    cutoff: Cutoff | None = Field(
        None,
        description=f"cut-off radius of the model, at most {MAX_CUTOFF:g} angstrom; unset: data.cut_off (when both are "
        "set they must agree)",
    )
    dtype: Dtype = Field(
        "float64", description="dtype of the parameters and of every computation; trainer.precision follows it"
    )
    export_dtype: Dtype | None = Field(
        None,
        description="dtype of the exported model file; unset: dtype (e.g. train in float32, export float64 for MD)",
    )
    features: int = Field(64, ge=1, description="feature channels per atom")
    n_interactions: int = Field(3, ge=1, description="interaction (message-passing) layers (tensornet: 1, see name)")
    n_rbf: int = Field(20, ge=1, description="radial basis functions that expand each interatomic distance")
    zbl: bool = Field(False, description="add the ZBL screened nuclear repulsion as a short-range prior")
    charges: bool = Field(False, description="add a per-atom charge head (outputs charges, total_charge and dipole)")
    coulomb: bool = Field(
        False, description="add PhysNet's damped Coulomb energy between the predicted charges (needs charges = true)"
    )
    seed: int = Field(0, ge=0, description="seed of the initial weights (the global random state is left alone)")

    @model_validator(mode="after")
    def _coulomb_needs_charges(self) -> ModelConfig:
        if self.coulomb and not self.charges:
            raise ConfigError(
                "model.coulomb = true needs model.charges = true (the Coulomb term uses predicted charges)"
            )
        return self


class SplitConfig(Section):
    """``[data.train]`` etc.: an optional file of its own and the batch size."""

    path: Path | None = Field(
        None,
        description="file (extxyz or ASE db) or packed folder (physml-md pack) holding this split, instead of "
        "splitting data.source; a relative path starts at the config file's folder (at the working directory when "
        "given with --set)",
    )
    batch_size: int = Field(16, ge=1, description="structures per batch")


class SplittingConfig(Section):
    """``[data.splitting_strategy]``: how one ``data.source`` file is split into train/validation/test."""

    name: Literal[STRATEGIES] = Field(RANDOM, description="how data.source is split (modelforge's strategy names)")
    data_split: DataSplit = Field(
        list(DEFAULT_DATA_SPLIT),
        description="fractions [train, validation, test] of the structures (of the records for "
        "random_record_splitting_strategy)",
    )
    seed: int = Field(42, ge=0, description="seed that splits what the test set leaves into training and validation")
    test_seed: int = Field(
        42, ge=0, description="seed that draws the test set first, so changing seed leaves the test set unchanged"
    )
    record_key: Name = Field(
        "record",
        description="atoms.info key naming the record (e.g. the molecule) of a structure for "
        "random_record_splitting_strategy; a structure without it counts by its chemical formula",
    )


class DataConfig(Section):
    """``[data]``: where structures come from, how they are read and batched. ``cut_off`` in angstrom."""

    source: Path | None = Field(
        None,
        description="one file (extxyz or ASE db), or a packed folder (physml-md pack; read lazily), split into "
        "train/validation/test by [data.splitting_strategy]; a relative path starts at the config file's folder (at "
        "the working directory when given with --set)",
    )
    index: Index = Field(
        ":", description="which structures of each file to read, as in ase.io.read (':' all, '-10:' the last ten)"
    )
    cutoff: Cutoff = Field(
        5.0, alias="cut_off", description=f"neighbour-list cut-off radius, at most {MAX_CUTOFF:g} angstrom"
    )
    pbc: Pbc | None = Field(
        None, description="periodic boundary conditions that replace those of every structure (unset: as read)"
    )
    cell: Cell | None = Field(
        None, description="cell (vectors as rows) that replaces that of every structure (unset: as read)"
    )
    self_interaction: bool = Field(False, description="include each atom as its own neighbour; only false is supported")
    pre_batch: Literal["in_memory", "on_disk"] = Field(
        "in_memory",
        description="where the precomputed neighbour lists are kept: in RAM, or written to cache_dir and memory-mapped",
    )
    cache_dir: Path | None = Field(
        None, description='directory of the neighbour-list cache; needed with pre_batch = "on_disk"'
    )
    num_workers: NumWorkers = Field(0, description='DataLoader worker processes; "all": one per CPU')
    y_energy: Name = Field("energy", description="name of the energy label in the files (training needs energies)")
    y_forces: Name | None = Field("forces", description="name of the forces label in the files; null: not read")
    y_stress: Name | None = Field("stress", description="name of the stress label in the files; null: not read")
    y_charges: Name | None = Field(None, description="name of the per-atom charges label in the files; unset: not read")
    y_total_charge: Name | None = Field(
        None, description="name of the total-charge label in the files; unset: not read"
    )
    y_dipole: Name | None = Field(None, description="name of the dipole label in the files; unset: not read")
    train: Annotated[SplitConfig, BeforeValidator(_train_split)] = Field(
        default_factory=lambda: SplitConfig(batch_size=TRAIN_BATCH_SIZE)
    )
    validation: SplitConfig = Field(default_factory=SplitConfig)
    test: SplitConfig = Field(default_factory=SplitConfig)
    predict: SplitConfig = Field(default_factory=SplitConfig)
    splitting_strategy: SplittingConfig = Field(default_factory=SplittingConfig)

    @field_validator("y_energy", mode="before")
    @classmethod
    def _energy_is_needed(cls, value):
        if value is None:
            raise ValueError(f"{KEY} is not set (null), but training needs energies; set it to the energy's label name")
        return value

    @field_validator("self_interaction")
    @classmethod
    def _no_self_interaction(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                f"{KEY} = true is not supported: the models cannot use zero-length edges (i, i, 0); set it to false"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        if self.pre_batch == "on_disk" and self.cache_dir is None:
            raise ConfigError(
                'data.pre_batch = "on_disk" writes its cache into data.cache_dir: give data.cache_dir (a directory)'
            )
        if self.pbc is not None and self.cell is not None:
            for axis, periodic in enumerate(self.pbc):
                if periodic and not any(self.cell[axis]):
                    raise ConfigError(f"data.pbc is periodic along axis {axis} but data.cell row {axis} is zero")
        split_paths = [name for name in ("train", "validation", "test") if getattr(self, name).path is not None]
        if self.source is not None and split_paths:
            keys = ", ".join(f"data.{name}.path" for name in split_paths)
            raise ConfigError(
                f"data.source and {keys} are both set; give either one file to split (data.source) or separate "
                "files (data.train.path and optionally data.validation.path / data.test.path)"
            )
        if self.train.path is None and any(getattr(self, n).path is not None for n in ("validation", "test")):
            raise ConfigError("data.validation.path / data.test.path are set but data.train.path is not; set it too")
        return self

    def has_files(self) -> bool:
        """True when the training data come from files (``source`` or ``train.path``)."""
        return self.source is not None or self.train.path is not None

    def label_keys(self):
        """The ``physml_md.data.LabelKeys`` of the ``y_*`` fields."""
        return LabelKeys(
            energy=self.y_energy,
            forces=self.y_forces,
            stress=self.y_stress,
            charges=self.y_charges,
            total_charge=self.y_total_charge,
            dipole=self.y_dipole,
        )
