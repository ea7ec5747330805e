"""Active learning: rounds of train a committee -> run MD -> select uncertain frames -> label them -> retrain.

Round k lives in ``<trainer.default_root_dir>/round_<k>/``: ``data.extxyz`` (``data.source`` plus every frame labelled
before), ``train/`` (the committee and its ``model.pt``), ``md.extxyz`` and ``md.csv`` (NVT MD from
``learning.structures``), ``uncertain.extxyz`` (frames whose largest per-atom force std exceeded the threshold),
``labelled.extxyz`` (those selected by ``select_frames`` and labelled) and ``round.json`` (written last: the round is
finished). The loop stops when a round's MD runs the whole ``md_time`` without a blow-up or a frame over the threshold
(converged), after ``rounds`` rounds, or when a blown-up round finds nothing to label. A killed loop resumes at its
round (finished rounds read back, trained members kept, MD and labelling redone). The labelling calculator is tried
on the MD start structure before the first round; a SIGINT/SIGTERM during a round's MD ends the loop unrecorded
(``LearningResult.interrupted``).

A packed folder as training data (``data.source``, else ``data.train.path``) is never written: the rounds train on a
copy, ``data.packed/`` (files hard-linked where possible), to which ``pack(..., append=True)`` adds each finished
round's ``labelled.extxyz`` (round k's holds rounds 0..k-1's frames; the last round's are added at the end). Appends
are atomic and follow the round records: a killed round added nothing, a rerun appends what the set lacks (counted).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import ase.io
from ase import Atoms

from physml_md.atomic_write import atomic_path, atomic_write_text
from physml_md.config.learning import LearningConfig
from physml_md.config.load import Config, ConfigError
from physml_md.data.collate import collate
from physml_md.data.packed.folder import PackedFolder, is_packed_folder
from physml_md.data.packed.writer import pack
from physml_md.data.structures import LabelKeys, atoms_to_dict
from physml_md.export import load_potential
from physml_md.learning.committee_training import train_committee
from physml_md.learning.labelling import LabellingError, label_frames
from physml_md.md.runner import run_md
from physml_md.md.uncertainty import committee_errors
from physml_md.units import FS_TO_PS

__all__ = ["LearningResult", "check_calculator", "learn", "select_frames", "format_rounds"]

ROUND_RECORD = "round.json"
PACKED_SET = "data.packed"


@dataclass
class LearningResult:
    """The rounds' records (``round.json`` of each) and whether the loop converged."""

    root: Path
    rounds: List[Dict[str, Any]] = field(default_factory=list)
    converged: bool = False
    model_path: Path | None = None  # the last round's committee
    interrupted: str | None = None  # "SIGINT" or "SIGTERM" when a signal stopped a round's MD (round not recorded)
    interruption: str | None = None  # what happened, in one sentence


def select_frames(frames: List[Atoms], min_spacing_fs: float, cap: int) -> List[Atoms]:
    """The most uncertain frames first (``info["max_forces_std"]``), each at least ``min_spacing_fs`` from every
    frame taken before it (``info["time_fs"]``), at most ``cap``; returned in time order."""
    taken: List[Atoms] = []
    for frame in sorted(frames, key=lambda f: -float(f.info["max_forces_std"])):
        if len(taken) >= cap:
            break
        if all(abs(float(frame.info["time_fs"]) - float(t.info["time_fs"])) >= min_spacing_fs for t in taken):
            taken.append(frame)
    return sorted(taken, key=lambda f: float(f.info["time_fs"]))


def _test_error(model_path: Path, test_frames: List[Atoms], keys) -> Dict[str, float]:
    """``committee_errors`` of the committee file on the test frames, its keys prefixed with ``test_``."""
    potential = load_potential(model_path)
    batch = collate([atoms_to_dict(atoms, keys, dtype=potential.dtype) for atoms in test_frames])
    return {f"test_{key}": value for key, value in committee_errors(potential, [batch]).items()}


def check_calculator(learning: LearningConfig, frame: Atoms, keys) -> None:
    """Import the labelling calculator and label ``frame`` with it: a ``LabellingError`` saying so when it fails."""
    try:
        label_frames([frame], learning.label.calculator, learning.label.kwargs, keys, learning.label.threads)
    except LabellingError as exc:
        raise LabellingError(
            f"[learning.label] was checked on the MD start structure before any training and failed: {exc}"
        ) from None


def _check_config(config: Config) -> LearningConfig:
    if config.learning is None:
        raise ConfigError("a [learning] table is needed for active learning: add it (see docs/configuration.md)")
    if config.training.committee < 2:
        raise ConfigError("active learning needs a committee: set [training] committee = 4 (2 or more)")
    if config.data.source is None and config.data.train.path is None:
        raise ConfigError("active learning adds frames to data.source: give the starting data set as data.source")
    return config.learning


@dataclass
class _Loop:
    """What the rounds share: the configuration, the MD start, the data so far and the last committee."""

    config: Config
    learning: LearningConfig
    start: Atoms
    keys: Any
    initial: List[Atoms]
    test_frames: List[Atoms] | None
    result: LearningResult
    added: List[Atoms] = field(default_factory=list)
    previous_members: List[Path] | None = None
    source: Path | None = None  # a packed training folder, copied into ``packed`` (the loop's packed set)
    packed: Path | None = None
    pack_options: Dict[str, Any] = field(default_factory=dict)  # the source's label keys and record key


def _sync_packed(loop: _Loop) -> int:
    """Bring the loop's packed set to its source plus the labelled frames of every finished round, in order, appending
    only the rounds it lacks (counted); the number of structures it holds."""
    if not is_packed_folder(loop.packed):  # a copy, renamed into place when whole; files hard-linked where possible
        tmp, ignore = loop.packed.with_name(f"{PACKED_SET}.tmp"), shutil.ignore_patterns(".*", "*.tmp-*")
        shutil.rmtree(tmp, ignore_errors=True)  # (a copy stopped before)
        try:
            shutil.copytree(loop.source, tmp, copy_function=os.link, ignore=ignore)
        except OSError:  # (another filesystem, or files of another user)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(loop.source, tmp, ignore=ignore)
        os.rename(tmp, loop.packed)
    held, total = len(PackedFolder(loop.packed)), len(PackedFolder(loop.source))
    for record in loop.result.rounds:
        if record["labelled_frames"] and held == total:
            labelled = loop.result.root / f"round_{record['round']}" / "labelled.extxyz"
            held += pack([labelled], loop.packed, append=True, **loop.pack_options)
        total += record["labelled_frames"]
    if held != total:
        raise ConfigError(
            f"{loop.packed} holds {held} structures, {loop.source} and the finished rounds' labelled frames {total}: "
            "it was changed outside this loop; remove it and run again (it is made again)"
        )
    return held


def learn(config: Config, verbose: bool = True) -> LearningResult:
    """Run the loop of ``config.learning`` (see the module docstring; its paths as given: ``load_config`` resolves
    those of a file). ``verbose`` prints each round's line of ``format_rounds`` (finished rounds read back too) as
    it is done."""
    learning = _check_config(config)
    root = Path(config.trainer["default_root_dir"])
    source = Path(config.data.source or config.data.train.path)
    loop = _Loop(
        config,
        learning,
        start=ase.io.read(learning.structures, index=learning.index),
        keys=config.data.label_keys(),
        initial=[] if is_packed_folder(source) else ase.io.read(source, ":"),
        test_frames=ase.io.read(learning.test_data, ":") if learning.test_data else None,
        result=LearningResult(root=root),
    )
    if is_packed_folder(source):  # labelled and appended with its label names and record key
        manifest = PackedFolder(source).manifest
        names = {**dict.fromkeys(LabelKeys().requested()), **manifest["label_keys"]}
        loop.source, loop.packed = source, root / PACKED_SET
        loop.pack_options = {"keys": LabelKeys(**names), "record_key": manifest.get("record_key", "record")}
    checked = False
    for k in range(learning.rounds):
        folder = root / f"round_{k}"
        if (folder / ROUND_RECORD).is_file():  # finished before: read it back and go on
            record = _read_round(loop, folder)
        else:
            if not checked:  # before any training: a calculator that cannot label costs seconds, not a round
                check_calculator(learning, loop.start, loop.keys)
                checked = True
            record = _round(loop, k, folder)
            if record is None:  # interrupted
                break
        if verbose:
            print(format_rounds([record], header=len(loop.result.rounds) == 1), flush=True)
        if record["converged"] or record["stop"]:
            loop.result.converged = record["converged"]
            break
    if loop.packed is not None and loop.result.rounds:  # the last round's frames too
        _sync_packed(loop)
    return loop.result


def _read_round(loop: _Loop, folder: Path) -> Dict[str, Any]:
    """A finished round's record, its labelled frames and committee taken back into the loop."""
    record = json.loads((folder / ROUND_RECORD).read_text())
    loop.result.rounds.append(record)
    labelled_path = folder / "labelled.extxyz"
    loop.added += ase.io.read(labelled_path, ":") if loop.packed is None and labelled_path.is_file() else []
    loop.previous_members = [Path(p) for p in record["members"]]
    loop.result.model_path = Path(record["model"])
    return record


def _round(loop: _Loop, k: int, folder: Path) -> Dict[str, Any] | None:
    """Round ``k``: train, MD, label; its record (written last), or None when a signal stopped its MD."""
    config, learning, result = loop.config, loop.learning, loop.result
    folder.mkdir(parents=True, exist_ok=True)
    data_file = loop.packed or folder / "data.extxyz"
    training_frames = _sync_packed(loop) if loop.packed else len(loop.initial) + len(loop.added)
    if loop.packed is None:
        with atomic_path(data_file) as tmp:
            ase.io.write(tmp, loop.initial + loop.added, format="extxyz")
    train = config.data.train.model_copy(update={"path": str(data_file)})  # (data.train.path: the training data)
    data = config.data.model_copy(update={"source": str(data_file)} if config.data.source else {"train": train})
    round_config = config.model_copy(
        update={
            "data": data,
            "trainer": {**config.trainer, "default_root_dir": str(folder / "train")},
        }
    )
    warm = loop.previous_members if learning.restart == "previous" else None
    committee = train_committee(round_config, initial_weights=warm, verbose=False)
    md = run_md(committee.model_path, loop.start, learning, seed=learning.seed + k, time=learning.md_time,
                trajectory=folder / "md.extxyz", log=folder / "md.csv", keep_positions=False,
                uncertainty_threshold=learning.uncertainty_threshold,
                uncertain_frames=folder / "uncertain.extxyz")  # fmt: skip
    if md.interrupted:  # the MD did not run its course: the round stays unfinished, the next run redoes it
        result.interrupted = md.interrupted
        result.interruption = (
            f"round {k} interrupted by {md.interrupted} during its MD (at {md.steps_done} of "
            f"{md.steps_requested} steps); it was not labelled nor recorded: run the same command again to redo it"
        )
        return None
    flagged = ase.io.read(folder / "uncertain.extxyz", ":") if "uncertain_frames" in md.files else []
    selected = select_frames(flagged, learning.min_spacing, learning.max_new_frames)
    label = learning.label
    keys = loop.pack_options.get("keys", loop.keys)  # (a packed set's label names: its append reads them)
    labelled = label_frames(selected, label.calculator, label.kwargs, keys, label.threads)
    if labelled:
        with atomic_path(folder / "labelled.extxyz") as tmp:
            ase.io.write(tmp, labelled, format="extxyz")
    converged = md.stable and not flagged and md.steps_done == md.steps_requested
    record = {
        "round": k,
        "training_frames": training_frames,
        "members": [str(m.best_checkpoint) for m in committee.members],
        "model": str(committee.model_path),
        "md_ps": md.steps_done * md.timestep_fs * FS_TO_PS,
        "md_stable": md.stable,
        "blow_up": None if md.blow_up is None else md.blow_up.message,
        "max_forces_std_ev_per_angstrom": max(md.max_forces_std) if md.max_forces_std else None,
        "flagged_frames": len(flagged),
        "labelled_frames": len(labelled),
        "converged": converged,
        "stop": not converged and not labelled,
        **committee.test_metrics,
    }
    if loop.test_frames is not None:
        record.update(_test_error(committee.model_path, loop.test_frames, loop.keys))
    atomic_write_text(folder / ROUND_RECORD, json.dumps(record, indent=2))
    result.rounds.append(record)
    result.model_path = committee.model_path
    loop.added += labelled if loop.packed is None else []
    loop.previous_members = [m.best_checkpoint for m in committee.members]
    return record


def format_rounds(rounds: List[Dict[str, Any]], header: bool = True) -> str:
    """The rounds as a table: data size, MD time and stability, uncertainty, frames added, test error."""
    lines = []
    if header:
        lines.append(
            f"{'round':>5} {'frames':>7} {'MD ps':>7} {'stable':>7} {'max sF eV/A':>12} {'flagged':>8} {'added':>6} "
            f"{'test F MAE meV/A':>17} {'Spearman':>8}"
        )
    for r in rounds:
        test = r.get("test_force_mae_mev_per_angstrom")
        sigma = r.get("max_forces_std_ev_per_angstrom")
        rho = r.get("test_spearman_max_force_error_vs_uncertainty")
        lines.append(
            f"{r['round']:>5} {r['training_frames']:>7} {r['md_ps']:>7.3f} {str(r['md_stable']):>7} "
            f"{'-' if sigma is None else f'{sigma:.3f}':>12} {r['flagged_frames']:>8} {r['labelled_frames']:>6} "
            f"{'-' if test is None else f'{test:.2f}':>17} {'-' if rho is None else f'{rho:.2f}':>8}"
            + ("  converged" if r["converged"] else "")
        )
    return "\n".join(lines)
