"""What each `physml-md` command does (``physml_md.cli.main`` holds the parser and calls these).

Imported only once a command runs, so that ``--help`` and ``--version`` answer without loading torch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import ContextManager

from physml_md.atomic_write import check_outputs, folder_lock
from physml_md.cli.inspect import evaluate_command, info_command  # noqa: F401 (`info`, `evaluate`: main calls them here)
from physml_md.config.load import load_config
from physml_md.config.md import settings_from_args
from physml_md.data.packed.writer import pack
from physml_md.data.readers import read_structure
from physml_md.data.structures import LabelKeys
from physml_md.export import resolve_format
from physml_md.export.checkpoint import committee_from_checkpoints, exportable_from_checkpoint
from physml_md.integrations.engine_agreement import export_model
from physml_md.learning.committee_training import train_committee
from physml_md.learning.loop import learn
from physml_md.md.io.formats import topology_path
from physml_md.md.runner import run_md
from physml_md.md.uncertainty import parse_force_threshold as parse_force
from physml_md.training.run import EXPORT_NAME, train
from physml_md.units import FS_TO_PS
from physml_md.validation.metrics import energy_drift
from physml_md.validation.suite import validate

# what validate writes into its --out folder (physml_md.validation.suite's docstring; tests/cli/test_main.py checks it)
VALIDATION_FILES = ("report.json", "nvt.csv", "nve.csv", "nvt.extxyz", "energy.png", "structure.png")


def _training_lock(folder, command: str) -> ContextManager:
    """``folder_lock(folder, command)`` in the first process of a run; none in the other ranks of a distributed run
    (Lightning starts them as copies of this command, and they write where the first one writes)."""
    other_rank = any(os.environ.get(name, "0") not in ("", "0") for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))
    return contextlib.nullcontext() if other_rank else folder_lock(folder, command)


def train_command(args: argparse.Namespace) -> int:
    committee = [f"training.committee={args.committee}"] if args.committee is not None else []
    config = load_config(args.config, [*args.set, *committee])
    root = Path(config.trainer["default_root_dir"])
    if config.training.committee > 1:
        if args.ckpt_path is not None:
            raise ValueError(
                "--ckpt-path resumes one model; a committee run resumes by running the same command again (finished "
                "members are kept, unfinished ones train anew)"
            )
        check_outputs([root / EXPORT_NAME], inputs=[args.config], force=args.force)
    with _training_lock(root, "physml-md train"):
        if config.training.committee > 1:
            train_committee(config)
        else:
            train(config, ckpt_path=args.ckpt_path)
    return 0


def learn_command(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.set)
    with _training_lock(config.trainer["default_root_dir"], "physml-md learn"):  # its rounds resume there: no --force
        result = learn(config)  # prints the round table as it goes
    if result.interrupted:
        return _stopped(result)
    verdict = "converged" if result.converged else f"not converged after {len(result.rounds)} round(s)"
    print(f"{verdict}; the last committee: {result.model_path}")
    return 0 if result.converged else 1


def export_command(args: argparse.Namespace) -> int:
    path = Path(args.output)
    check_outputs([path], inputs=args.checkpoint, force=args.force)
    format = resolve_format(args.format, path)
    if len(args.checkpoint) > 1:
        potential, metadata = committee_from_checkpoints(args.checkpoint, use_ema=not args.no_ema)
    elif args.format == "metatomic" and Path(args.checkpoint[0]).suffix != ".ckpt":  # an exported .pt, converted
        from physml_md.export.metatomic import potential_from_export  # metatomic: an optional dependency

        potential, metadata = potential_from_export(args.checkpoint[0])
    else:
        potential, metadata = exportable_from_checkpoint(args.checkpoint[0], use_ema=not args.no_ema)
    export_model(potential, path, metadata, dtype=args.dtype, format=format)  # checked before it takes its name
    print(f"exported {' '.join(args.checkpoint)} -> {path} (agreement with every engine recorded: physml-md info)")
    return 0


def md_command(args: argparse.Namespace) -> int:
    log = args.log
    if log is None and args.out is not None:
        log = str(Path(args.out).with_suffix(".csv"))
    outputs = [args.out, log, _uncertain_frames(args) if args.uncertainty_threshold is not None else None]
    if args.out is not None and Path(args.out).suffix.lower() in (".dcd", ".xtc"):
        outputs.append(topology_path(args.out))
    check_outputs([p for p in outputs if p is not None], inputs=[args.model, args.structure], force=args.force)
    atoms = read_structure(args.structure, index=args.index)
    result = run_md(
        args.model,
        atoms,
        settings_from_args(args),
        steps=args.steps,
        time=args.time,
        trajectory=args.out,
        log=log,
        keep_positions=False,
        progress=not args.quiet,
        uncertainty_threshold=args.uncertainty_threshold,
        stop_on_uncertainty=args.stop_on_uncertainty,
        uncertain_frames=_uncertain_frames(args),
    )
    if result.interrupted and not len(result.temperatures_k):
        return _stopped(result)
    print(
        f"{result.engine} {result.ensemble}: {result.steps_done} of {result.steps_requested} steps "
        f"({result.steps_done * result.timestep_fs * FS_TO_PS:g} ps), {result.ns_per_day:.3g} ns/day, "
        f"mean T {sum(result.temperatures_k) / len(result.temperatures_k):.1f} K, closest atoms "
        f"{result.min_distance:.3f} Å"
    )
    if result.ensemble == "nve" and len(result.times_fs) >= 3:
        drift = energy_drift(result.times_fs, result.total_energies, result.n_atoms)
        print(f"energy drift {drift.drift_mev_per_atom_per_ps:.4g} meV/atom/ps")
    if result.max_forces_std:
        line = f"committee uncertainty: largest per-atom force std {max(result.max_forces_std):.4g} eV/Å"
        flagged = result.uncertainty
        if flagged:
            line += f"; {flagged['flagged_frames']} frame(s) over {flagged['threshold_ev_per_angstrom']:g} eV/Å"
            line += " (stopped at the first)" if flagged["stopped"] else ""
        print(line)
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    if not result.stable:
        print(f"blow-up at step {result.blow_up_step}: {result.blow_up.message}", file=sys.stderr)
        return 1
    if result.interrupted:
        return _stopped(result)
    if result.uncertainty and result.uncertainty.get("stopped"):
        print(
            f"stopped by --stop-on-uncertainty at step {result.steps_done} of {result.steps_requested} (exit status 3)",
            file=sys.stderr,
        )
        return 3
    return 0


def _stopped(result) -> int:  # a run stopped by a signal: its line, and the shell's status (128 + its number)
    print(result.interruption, file=sys.stderr)
    return 130 if result.interrupted == "SIGINT" else 143


def _uncertain_frames(args: argparse.Namespace) -> str | None:
    """Where md writes the frames over --uncertainty-threshold: --uncertain-frames, else beside --out."""
    if args.uncertainty_threshold is None or args.uncertain_frames is not None:
        return args.uncertain_frames
    return str(Path(args.out).with_suffix("")) + "_uncertain.extxyz" if args.out else "uncertain_frames.extxyz"


def validate_command(args: argparse.Namespace) -> int:
    thresholds = {
        key: value
        for key, value in (
            ("drift", args.drift),
            ("temperature_relative", args.temperature_tolerance),
            ("temperature_spread", args.temperature_spread),
            ("rdf_difference", args.rdf_threshold),
            ("jensen_shannon", args.js_threshold),
            ("max_forces_std", None if args.uncertainty_threshold is None else parse_force(args.uncertainty_threshold)),
            ("closest_contact", args.contact_threshold),
        )
        if value is not None
    }
    out = args.out or str(Path(args.model).with_suffix("")) + "_validation"
    outputs = [Path(out) / name for name in VALIDATION_FILES]
    if Path(args.model).suffix in (".pt", ".pt2"):  # the summary beside an exported file
        outputs.append(Path(args.model).with_suffix(".validation.json"))
    inputs = [args.model, args.structures] + ([args.reference] if args.reference else [])
    check_outputs(outputs, inputs=inputs, force=args.force)
    report = validate(
        args.model,
        read_structure(args.structures, index=args.index),
        reference=args.reference,
        settings=settings_from_args(args),
        nvt_steps=args.nvt_steps,
        nve_steps=args.nve_steps,
        index=args.index,
        out=out,
        thresholds=thresholds,
        progress=not args.quiet,
    )
    print(report.format())
    print(f"report: {report.files['report']}")
    return 0 if report.passed else 1


def pack_command(args: argparse.Namespace) -> int:
    keys = LabelKeys(**{f.name: getattr(args, f"{f.name}_key") for f in fields(LabelKeys)})  # --energy-key, ...
    names = ("append", "chunk_size", "pair_cutoff", "index", "record_key", "neighbor_cutoff")
    options = {name: getattr(args, name) for name in names}
    added = pack(args.inputs, args.output, keys, progress=not args.quiet, **options)
    verb = "appended" if args.append else "packed"
    print(f"{verb} {added} structures -> {args.output} (physml-md info {args.output})")
    return 0
