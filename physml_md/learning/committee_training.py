"""Train a committee: N members of one configuration, then one exported file that evaluates them all (README.md,
"Committees"). Member k trains in ``<default_root_dir>/member_<k>/`` with seeds ``model.seed + k`` and
``training.seed + k`` (the bootstrap seed too), ``committee_processes`` at a time; a finished member leaves
``member.json``, so a run started again skips it. The committee's file is ``<default_root_dir>/model.pt``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import torch

from physml_md.atomic_write import atomic_write_text
from physml_md.config.load import Config, ConfigError, config_to_dict
from physml_md.export.checkpoint import committee_from_checkpoints
from physml_md.integrations.engine_agreement import export_model
from physml_md.md.uncertainty import committee_errors
from physml_md.training.datamodule import AtomsDataModule
from physml_md.training.run import EXPORT_NAME, TrainResult, datamodule_kwargs, evaluation_split, train

__all__ = ["CommitteeResult", "member_config", "train_committee", "MEMBER_RECORD"]

MEMBER_RECORD = "member.json"


@dataclass
class CommitteeResult:
    """Where a committee run put its outputs: the members' runs, the committee's file and its test metrics."""

    root: Path
    members: List[TrainResult]
    model_path: Path | None
    test_metrics: Dict[str, float] = field(default_factory=dict)


def member_config(config: Config, index: int) -> Config:
    """The configuration of member ``index``: its seeds and its own directory under the committee's."""
    root = Path(config.trainer["default_root_dir"])
    model = config.model.model_copy(update={"seed": config.model.seed + index})
    training = config.training.model_copy(update={"seed": config.training.seed + index, "committee": 1})
    trainer = {**config.trainer, "default_root_dir": str(root / f"member_{index}")}
    return config.model_copy(update={"model": model, "training": training, "trainer": trainer})


def _config_sha256(config: Config) -> str:
    return hashlib.sha256(json.dumps(config_to_dict(config), sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def lightning_quiet() -> Iterator[None]:
    """Lightning's own info lines (devices, checkpoint restores) silenced: N members would print them N times."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _train_member(
    config: Config, index: int, bootstrap: bool, data: Dict[str, Any], threads: int, initial: Path | None
) -> TrainResult:
    if threads:
        torch.set_num_threads(threads)
    seed = config.training.seed + index if bootstrap else None
    member = member_config(config, index)
    with lightning_quiet():
        result = train(member, bootstrap_seed=seed, verbose=False, initial_weights=initial, **data)
    if result.best_checkpoint is None:
        raise RuntimeError(f"committee member {index} wrote no checkpoint: check trainer.max_epochs and the data")
    record = {
        "config_sha256": _config_sha256(config),
        "run_dir": str(result.run_dir),
        "best_checkpoint": str(result.best_checkpoint),
        "model_path": str(result.model_path) if result.model_path else None,
        "test_metrics": result.test_metrics,
    }
    atomic_write_text(Path(member.trainer["default_root_dir"]) / MEMBER_RECORD, json.dumps(record, indent=2))
    return result


def _finished_member(config: Config, index: int) -> TrainResult | None:
    """The recorded result of member ``index`` if it finished with this configuration; an error if it finished
    with another."""
    path = Path(member_config(config, index).trainer["default_root_dir"]) / MEMBER_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("config_sha256") != _config_sha256(config) or not Path(record["best_checkpoint"]).is_file():
        raise ConfigError(
            f"{path.parent} holds a committee member trained with another configuration (or its checkpoint is "
            "gone): choose another trainer.default_root_dir, or remove that directory to train the committee anew"
        )
    return TrainResult(
        run_dir=Path(record["run_dir"]),
        best_checkpoint=Path(record["best_checkpoint"]),
        model_path=Path(record["model_path"]) if record.get("model_path") else None,
        test_metrics=dict(record.get("test_metrics") or {}),
    )


def _member_threads(processes: int) -> int:
    return max(1, (os.cpu_count() or 1) // processes) if processes > 1 else 0


def _with_device(config: Config, index: int, processes: int) -> Config:
    """With several processes on GPUs: member ``index`` on GPU ``index mod count``."""
    accelerator = str(config.trainer.get("accelerator", "auto"))
    if processes < 2 or accelerator not in ("gpu", "cuda") or not torch.cuda.is_available():
        return config
    trainer = {**config.trainer, "devices": [index % torch.cuda.device_count()]}
    return config.model_copy(update={"trainer": trainer})


def train_committee(
    config: Config,
    *,
    size: int | None = None,
    bootstrap: bool | None = None,
    processes: int | None = None,
    train_data: Any = None,
    validation_data: Any = None,
    test_data: Any = None,
    initial_weights: List[Path] | None = None,
    verbose: bool = True,
) -> CommitteeResult:
    """Train ``size`` members (default ``config.training.committee``) and export them as one committee file.

    bootstrap and processes default to ``config.training.bootstrap`` / ``committee_processes``; the data
    arguments are those of ``physml_md.training.run.train``. initial_weights: one checkpoint per member to start
    from (e.g. the members of the previous round of active learning), else random weights.
    """
    size = int(config.training.committee if size is None else size)
    bootstrap = bool(config.training.bootstrap if bootstrap is None else bootstrap)
    processes = int(config.training.committee_processes if processes is None else processes)
    if size < 2:
        raise ConfigError(f"a committee needs 2 or more members, got committee = {size}")
    if processes < 1:
        raise ConfigError(f"committee_processes must be 1 or more, got {processes}")
    data = {"train_data": train_data, "validation_data": validation_data, "test_data": test_data}
    if initial_weights is not None and len(initial_weights) != size:
        raise ConfigError(f"initial_weights: {len(initial_weights)} checkpoints for {size} members (one per member)")
    initial = list(initial_weights) if initial_weights is not None else [None] * size
    members = _train_members(config, bootstrap, processes, data, initial, verbose)
    committee, metadata = committee_from_checkpoints([m.best_checkpoint for m in members])
    datamodule = AtomsDataModule(**datamodule_kwargs(config), **data)
    datamodule.setup("fit")
    root = Path(config.trainer["default_root_dir"])
    result = CommitteeResult(root=root, members=members, model_path=None)
    split = evaluation_split(datamodule.splits)
    if split is not None:
        result.test_metrics = committee_errors(committee, datamodule.loader(split))
    metadata["training"]["committee_metrics"] = {"split": split, **result.test_metrics}
    export_dtype = config.model.export_dtype or config.model.dtype
    result.model_path = export_model(
        committee, root / EXPORT_NAME, metadata, dtype=export_dtype, structures=datamodule.splits.get("train")
    )
    if verbose:
        if result.test_metrics:
            print(f"committee of {size} on the {split} split:")
            for key, value in result.test_metrics.items():
                print(f"  {key:<40} {value:.4g}")
        print(f"exported committee: {result.model_path}")
    return result


def _train_members(
    config: Config, bootstrap: bool, processes: int, data: Dict[str, Any], initial: List[Path | None], verbose: bool
) -> List[TrainResult]:
    """The results of the members (one per entry of ``initial``), in order: those finished before as recorded, the
    others trained (``processes`` at a time, each in a process of its own, when more than one)."""
    size = len(initial)
    results: Dict[int, TrainResult] = {}
    for index in range(size):
        if (finished := _finished_member(config, index)) is not None:
            results[index] = finished
            if verbose:
                print(f"member {index}: finished before, {finished.best_checkpoint}")
    todo = [index for index in range(size) if index not in results]
    for index, result in _trained(config, bootstrap, processes, data, initial, todo):
        results[index] = result
        if verbose:
            print(f"member {index}: trained, {result.best_checkpoint}")
    return [results[index] for index in range(size)]


def _trained(
    config: Config, bootstrap: bool, processes: int, data: Dict[str, Any], initial: List[Path | None], todo: List[int]
) -> Iterator[Tuple[int, TrainResult]]:
    """(index, result) of each member of ``todo`` as it finishes: in this process, or ``processes`` at a time."""
    if processes < 2 or len(todo) < 2:
        yield from ((i, _train_member(config, i, bootstrap, data, 0, initial[i])) for i in todo)
        return
    threads, context = _member_threads(processes), multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(processes, len(todo)), mp_context=context) as pool:
        futures = {
            pool.submit(_train_member, _with_device(config, i, processes), i, bootstrap, data, threads, initial[i]): i
            for i in todo
        }
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()
