"""`physml-md` command line: the one place that wires the layers together.

Commands: ``train`` (train from a TOML/YAML config, test, export, plot), ``export`` (a checkpoint to an
exported file), ``info`` (what an exported file is), ``evaluate`` (run an exported file on structures and
compare with their reference labels), ``md`` (molecular dynamics in ASE or OpenMM), ``validate`` (the MD
validation suite and its report) and ``learn`` (active learning with a committee). Exit status: 0 done, 1 the
MD blew up, the validation failed or learning did not converge, 2 bad input, 3 `md --stop-on-uncertainty` stopped
at an uncertain frame, 130 / 143 `md` (or `learn`'s MD)
interrupted by SIGINT / SIGTERM (the files keep every frame up to it; `learn` redoes that round when run again).
``train`` with ``--committee N`` trains a committee. No command writes over a file it did not write in this run
(an existing output is refused unless ``--force``; an output that is an input, always), and one run at a time
writes into a training folder. Heavy modules (torch) are imported inside the commands: ``--help`` and
``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import List

from physml_md import __version__
from physml_md.atomic import check_outputs, folder_lock

EXIT_STATUS = (
    "exit status: 0 done; 1 the MD blew up, the validation failed or learning did not converge; 2 bad input "
    "(one line on stderr); 3 md --stop-on-uncertainty stopped at an uncertain frame; 130 / 143 stopped by "
    "SIGINT / SIGTERM; 141 the reader of the output went away (a closed pipe)"
)
# what a command stopped by a signal keeps, for its one sentence
_STOPPED = {
    "train": "finished work is kept: run the same command again to go on (a committee keeps its finished members; "
    "one model resumes with --ckpt-path and its run's checkpoints/last.ckpt)",
    "learn": "finished rounds are kept: run the same command again to go on",
}


def _training_lock(folder, command: str):
    """The folder's lock (``physml_md.atomic.folder_lock``), taken by the first process of a run only: the other
    ranks of a distributed run (Lightning starts them as copies of this command) write where it writes."""
    if any(os.environ.get(name, "0") not in ("", "0") for name in ("RANK", "LOCAL_RANK", "NODE_RANK")):
        return contextlib.nullcontext()
    return folder_lock(folder, command)


def _train(args: argparse.Namespace) -> int:
    from physml_md.training.config import load_config
    from physml_md.training.run import train

    overrides = list(args.set) + ([f"training.committee={args.committee}"] if args.committee is not None else [])
    config = load_config(args.config, overrides)
    root = Path(config.trainer["default_root_dir"])
    if config.training.committee > 1:
        from physml_md.training.committee import train_committee
        from physml_md.training.run import EXPORT_NAME

        if args.ckpt_path is not None:
            raise ValueError(
                "--ckpt-path resumes one model; a committee run resumes by running the same command again (finished "
                "members are kept, unfinished ones train anew)"
            )
        check_outputs([root / EXPORT_NAME], inputs=[args.config], force=args.force)
        with _training_lock(root, "physml-md train"):
            train_committee(config)
        return 0
    with _training_lock(root, "physml-md train"):
        train(config, ckpt_path=args.ckpt_path)
    return 0


def _learn(args: argparse.Namespace) -> int:
    from physml_md.training.active_learning import learn
    from physml_md.training.config import load_config_and_section
    from physml_md.training.schema_learning import LearningConfig
    from physml_md.training.schema_types import validate as validate_section

    config, raw = load_config_and_section(args.config, "learning", args.set)
    learning = validate_section(LearningConfig, raw, "learning")
    with _training_lock(config.trainer["default_root_dir"], "physml-md learn"):  # its rounds resume there: no --force
        result = learn(config, learning, base=Path(args.config).resolve().parent)  # prints the round table as it goes
    if result.interrupted:  # the shell's convention for a signal: 128 + its number
        print(result.interruption, file=sys.stderr)
        return 130 if result.interrupted == "SIGINT" else 143
    verdict = "converged" if result.converged else f"not converged after {len(result.rounds)} round(s)"
    print(f"{verdict}; the last committee: {result.model_path}")
    return 0 if result.converged else 1


def _export(args: argparse.Namespace) -> int:
    from physml_md.atomic import atomic_path
    from physml_md.checkpoint import exportable_from_checkpoint
    from physml_md.export import export_potential, resolve_format
    from physml_md.integrations.agreement import add_engine_agreement

    path = Path(args.output)
    check_outputs([path], inputs=args.checkpoint, force=args.force)
    format = resolve_format(args.format, path)
    if len(args.checkpoint) > 1:
        from physml_md.checkpoint import committee_from_checkpoints

        potential, metadata = committee_from_checkpoints(args.checkpoint, use_ema=not args.no_ema)
    elif args.format == "metatomic" and Path(args.checkpoint[0]).suffix != ".ckpt":  # an exported .pt, converted
        from physml_md.export_metatomic import potential_from_export

        potential, metadata = potential_from_export(args.checkpoint[0])
    else:
        potential, metadata = exportable_from_checkpoint(args.checkpoint[0], use_ema=not args.no_ema)
    # written and checked under a temporary name: a failure removes only that (a --force target stays as it was)
    with atomic_path(path) as tmp:
        try:
            export_potential(potential, tmp, metadata, dtype=args.dtype, format=format)
            if args.format != "metatomic":  # (a metatomic file is checked through metatomic by export_potential)
                add_engine_agreement(tmp)  # the file against the ASE calculator and each OpenMM backend that loads here
        except Exception as exc:  # name the output, not its temporary
            if len(exc.args) == 1 and isinstance(exc.args[0], str):
                exc.args = (exc.args[0].replace(str(tmp), str(path)).replace(tmp.name, path.name),)
            raise
    print(f"exported {' '.join(args.checkpoint)} -> {path} (agreement with every engine recorded: physml-md info)")
    return 0


def _md(args: argparse.Namespace) -> int:
    import numpy as np

    from physml_md.data.readers import read_structure
    from physml_md.md.metrics import energy_drift
    from physml_md.md.runner import run_md
    from physml_md.units import FS_TO_PS

    log = args.log
    if log is None and args.out is not None:
        log = str(Path(args.out).with_suffix(".csv"))
    outputs = [args.out, log, _uncertain_frames(args) if args.uncertainty_threshold is not None else None]
    if args.out is not None and Path(args.out).suffix.lower() in (".dcd", ".xtc"):
        from physml_md.md.formats import topology_path

        outputs.append(topology_path(args.out))
    check_outputs([p for p in outputs if p is not None], inputs=[args.model, args.structure], force=args.force)
    atoms = read_structure(args.structure, index=args.index)
    result = run_md(
        args.model,
        atoms,
        engine=args.engine,
        ensemble=args.ensemble,
        temperature=args.temperature,
        timestep=args.timestep,
        steps=args.steps,
        time=args.time,
        friction=args.friction,
        report_every=args.report_every,
        trajectory=args.out,
        log=log,
        seed=args.seed,
        min_distance=args.min_distance,
        max_force=args.max_force,
        keep_positions=False,
        progress=not args.quiet,
        device=args.device,
        platform=args.platform,
        backend=args.backend,
        periodic=args.periodic,
        uncertainty_threshold=args.uncertainty_threshold,
        stop_on_uncertainty=args.stop_on_uncertainty,
        uncertain_frames=_uncertain_frames(args),
    )
    if result.interrupted and not len(result.temperatures_k):
        print(result.interruption, file=sys.stderr)
        return 130 if result.interrupted == "SIGINT" else 143
    print(
        f"{result.engine} {result.ensemble}: {result.steps_done} of {result.steps_requested} steps "
        f"({result.steps_done * result.timestep_fs * FS_TO_PS:g} ps), {result.ns_per_day:.3g} ns/day, "
        f"mean T {np.mean(result.temperatures_k):.1f} K, closest atoms {result.min_distance:.3f} Å"
    )
    if result.ensemble == "nve" and len(result.times_fs) >= 3:
        drift = energy_drift(result.times_fs, result.total_energies, result.n_atoms)
        print(f"energy drift {drift.drift_mev_per_atom_per_ps:.4g} meV/atom/ps")
    if result.max_forces_std:
        flagged = result.uncertainty or {}
        print(
            f"committee uncertainty: largest per-atom force std {max(result.max_forces_std):.4g} eV/Å"
            + (
                f"; {flagged['flagged_frames']} frame(s) over {flagged['threshold_ev_per_angstrom']:g} eV/Å"
                + (" (stopped at the first)" if flagged["stopped"] else "")
                if flagged
                else ""
            )
        )
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    if not result.stable:
        print(f"blow-up at step {result.blow_up_step}: {result.blow_up.message}", file=sys.stderr)
        return 1
    if result.interrupted:  # the shell's convention for a signal: 128 + its number
        print(result.interruption, file=sys.stderr)
        return 130 if result.interrupted == "SIGINT" else 143
    if result.uncertainty and result.uncertainty.get("stopped"):
        print(
            f"stopped by --stop-on-uncertainty at step {result.steps_done} of {result.steps_requested} (exit status 3)",
            file=sys.stderr,
        )
        return 3
    return 0


def _uncertain_frames(args: argparse.Namespace) -> str | None:
    """Where md writes the frames over --uncertainty-threshold: --uncertain-frames, else beside --out."""
    if args.uncertainty_threshold is None:
        return args.uncertain_frames
    if args.uncertain_frames is not None:
        return args.uncertain_frames
    return str(Path(args.out).with_suffix("")) + "_uncertain.extxyz" if args.out else "uncertain_frames.extxyz"


def _validate(args: argparse.Namespace) -> int:
    from physml_md.data.readers import read_structure
    from physml_md.md.uncertainty import parse_force_threshold as parse_force
    from physml_md.md.validation import validate

    thresholds = {
        key: value
        for key, value in (
            ("drift", args.drift),
            ("temperature_relative", args.temperature_tolerance),
            ("temperature_spread", args.temperature_spread),
            ("rdf_difference", args.rdf_threshold),
            ("jensen_shannon", args.js_threshold),
            ("min_distance", args.min_distance),
            ("max_force", args.max_force),
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
        engine=args.engine,
        temperature=args.temperature,
        timestep=args.timestep,
        nvt_steps=args.nvt_steps,
        nve_steps=args.nve_steps,
        friction=args.friction,
        report_every=args.report_every,
        seed=args.seed,
        index=args.index,
        out=out,
        thresholds=thresholds,
        progress=not args.quiet,
        device=args.device,
        platform=args.platform,
        backend=args.backend,
        periodic=args.periodic,
    )
    print(report.format())
    print(f"report: {report.files['report']}")
    return 0 if report.passed else 1


# what validate writes into its --out folder (physml_md.md.validation's docstring; tests/test_cli.py checks it)
VALIDATION_FILES = ("report.json", "nvt.csv", "nve.csv", "nvt.extxyz", "energy.png", "structure.png")


def _info(args: argparse.Namespace) -> int:
    from physml_md import cli_inspect

    return cli_inspect.info(args)


def _evaluate(args: argparse.Namespace) -> int:
    from physml_md import cli_inspect

    return cli_inspect.evaluate(args)


def _pack(args: argparse.Namespace) -> int:
    from physml_md.data.pack import pack
    from physml_md.data.structures import LabelKeys

    keys = LabelKeys(
        energy=args.energy_key,
        forces=args.forces_key,
        stress=args.stress_key,
        charges=args.charges_key,
        total_charge=args.total_charge_key,
        dipole=args.dipole_key,
    )
    added = pack(
        args.inputs,
        args.output,
        keys,
        append=args.append,
        chunk_size=args.chunk_size,
        pair_cutoff=args.pair_cutoff,
        index=args.index,
        progress=not args.quiet,
        record_key=args.record_key,
    )
    verb = "appended" if args.append else "packed"
    print(f"{verb} {added} structures -> {args.output} (physml-md info {args.output})")
    return 0


def _key(value: str) -> str | None:
    return None if value.lower() in ("none", "null", "") else value


def _add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite output files that exist (never an input)")


def _add_md_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by md and validate."""
    parser.add_argument("--engine", choices=["ase", "openmm"], default="ase")
    parser.add_argument("--temperature", default="300 K", help="e.g. '300 K' (default)")
    parser.add_argument("--timestep", default="0.5 fs", help="e.g. '0.5 fs' (default)")
    parser.add_argument("--report-every", type=int, default=10, help="steps between recorded frames (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and the thermostat")
    parser.add_argument("--min-distance", type=float, default=None, help="blow-up: closest atoms, angstrom (0.5)")
    parser.add_argument("--max-force", type=float, default=None, help="blow-up: largest force, eV/angstrom (100)")
    parser.add_argument(
        "--backend",
        default="auto",
        help="OpenMM backend (auto: torchforce where openmm-torch loads, else pythonforce; torchforce, pythonforce)",
    )
    parser.add_argument(
        "--periodic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="OpenMM: evaluate the model in the periodic box (--periodic) or as an isolated system "
        "(--no-periodic); default: from the model and the structure (the ASE engine follows the structure's pbc)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda")
    parser.add_argument("--platform", default=None, help="OpenMM platform (default CPU, CUDA with --device cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="physml-md", description=__doc__.splitlines()[0], epilog=EXIT_STATUS)
    parser.add_argument("--version", action="version", version=f"physml-md {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a potential from a TOML or YAML config")
    train.add_argument("config", help="config file (.toml, .yaml or .yml)")
    train.add_argument("--ckpt-path", default=None, help="resume from this checkpoint (weights, optimizer, epoch, ...)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set trainer.max_epochs=5 (repeatable; values are TOML; a relative "
        "path starts at the working directory, one written in the config file at the file's folder)",
    )
    train.add_argument(
        "--committee", type=int, default=None, metavar="N", help="train N models as a committee (training.committee)"
    )
    _add_force(train)
    train.set_defaults(run=_train)

    learning = commands.add_parser(
        "learn", help="active learning: rounds of train a committee, MD, label uncertain frames, retrain"
    )
    learning.add_argument("config", help="training config with a [learning] table (.toml, .yaml or .yml)")
    learning.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="as for train")
    learning.set_defaults(run=_learn)

    export = commands.add_parser(
        "export", help="export a training checkpoint to a model file (TorchScript .pt or torch.export .pt2)"
    )
    export.add_argument(
        "checkpoint",
        nargs="+",
        help="Lightning checkpoint written by physml-md train (.ckpt); several: a committee; with --format "
        "metatomic also an exported TorchScript file (.pt)",
    )
    export.add_argument("output", help="exported model file to write (.pt: TorchScript; .pt2: torch.export)")
    export.add_argument(
        "--format",
        choices=["torchscript", "export", "aotinductor", "metatomic"],
        default=None,
        help="torchscript (.pt; what OpenMM's TorchForce runs), export (a torch.export program, .pt2), "
        "aotinductor (that program compiled to a shared library, .pt2; needs a C++ compiler) or metatomic (.pt; "
        "for LAMMPS' pair_style metatomic, i-PI, torch-sim; needs physml-md[metatomic]); default: from the "
        "output's name",
    )
    export.add_argument("--no-ema", action="store_true", help="export the raw weights, not their moving average")
    export.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default=None,
        help="dtype of the exported file (default: the model's; e.g. float64 for a model trained in float32)",
    )
    _add_force(export)
    export.set_defaults(run=_export)

    info = commands.add_parser("info", help="show the metadata of an exported model file, or summarise a packed folder")
    info.add_argument("model", help="exported model file (.pt or .pt2), or a packed folder (physml-md pack)")
    info.add_argument("--json", action="store_true", help="print the whole metadata document as JSON")
    info.set_defaults(run=_info)

    evaluate = commands.add_parser("evaluate", help="run an exported model on structures (extxyz or ASE db)")
    evaluate.add_argument("model", help="exported model file (.pt or .pt2) or training checkpoint (.ckpt)")
    evaluate.add_argument("structures", help="extxyz or ASE db file")
    evaluate.add_argument("--index", default=":", help="which structures, ASE style (default ':')")
    evaluate.add_argument("--energy-key", default="energy", help="name of the reference energy in the file")
    evaluate.add_argument("--forces-key", default="forces", help="name of the reference forces in the file")
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--device", default="cpu", help="cpu or cuda")
    evaluate.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    evaluate.set_defaults(run=_evaluate)

    packer = commands.add_parser(
        "pack", help="pack extxyz files / ASE databases into a folder that training reads lazily ([data] source)"
    )
    packer.add_argument("inputs", nargs="+", metavar="INPUT", help="extxyz files or ASE databases (.db, .json)")
    packer.add_argument("output", metavar="OUTPUT_FOLDER", help="the packed folder to write (must not exist)")
    packer.add_argument("--append", action="store_true", help="add the structures to an existing packed folder")
    for label, default in (
        ("energy", "energy"),
        ("forces", "forces"),
        ("stress", "stress"),
        ("charges", None),
        ("total-charge", None),
        ("dipole", None),
    ):
        packer.add_argument(
            f"--{label}-key",
            type=_key,
            default=default,
            help=f"name of the {label} label in the files, as [data] y_{label.replace('-', '_')} (default: "
            f"{default or 'none, not stored'}; 'none': not stored)",
        )
    packer.add_argument("--index", default=":", help="which structures of each file, ASE style (default ':')")
    packer.add_argument("--chunk-size", type=int, default=10_000, help="structures per chunk folder (default 10000)")
    packer.add_argument(
        "--pair-cutoff",
        type=float,
        default=5.0,
        help="shortest pair distances are stored within this many angstrom (default 5.0; training with a longer "
        "cut-off computes them from the structures)",
    )
    packer.add_argument(
        "--record-key",
        default="record",
        help="atoms.info key of each structure's record, for random_record_splitting_strategy (default 'record'; "
        "without it: the chemical formula)",
    )
    packer.add_argument("--quiet", action="store_true", help="no progress bar")
    packer.set_defaults(run=_pack)

    md = commands.add_parser("md", help="run molecular dynamics with a model in ASE or OpenMM")
    md.add_argument("model", help="exported model file (.pt or .pt2) or training checkpoint (.ckpt)")
    md.add_argument("structure", help="starting structure (any file ASE reads)")
    md.add_argument("--index", type=int, default=0, help="which structure of the file (default 0)")
    md.add_argument("--ensemble", choices=["nve", "nvt"], default="nvt")
    length = md.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="number of MD steps")
    length.add_argument("--time", help="simulated time, e.g. '10 ps'")
    md.add_argument("--friction", default="1/ps", help="Langevin friction for NVT (default '1/ps')")
    md.add_argument("--out", default=None, help="trajectory file: .dcd, .xtc (with a .pdb beside), .traj, .extxyz")
    md.add_argument("--log", default=None, help="CSV energy log (default: the trajectory's name with .csv)")
    md.add_argument(
        "--uncertainty-threshold",
        default=None,
        help="committee models: flag frames whose largest per-atom force std exceeds this, e.g. '0.1 eV/angstrom'",
    )
    md.add_argument(
        "--stop-on-uncertainty", action="store_true", help="stop at the first flagged frame (exit status 3 if it did)"
    )
    md.add_argument("--uncertain-frames", default=None, help="extxyz for the flagged frames (default: beside --out)")
    _add_md_options(md)
    _add_force(md)
    md.set_defaults(run=_md)

    check = commands.add_parser("validate", help="MD validation: NVT + NVE stability, drift, structure vs reference")
    check.add_argument("model", help="exported model file (.pt or .pt2) or training checkpoint (.ckpt)")
    check.add_argument("--structures", required=True, help="file with the starting structure (any file ASE reads)")
    check.add_argument("--index", type=int, default=0, help="which structure of the file (default 0)")
    check.add_argument("--reference", default=None, help="reference MD trajectory or dataset of the same system")
    check.add_argument("--nvt-steps", type=int, default=2000)
    check.add_argument("--nve-steps", type=int, default=1000)
    check.add_argument("--friction", default="5/ps", help="Langevin friction of the NVT run (default '5/ps')")
    check.add_argument("--out", default=None, help="report directory (default: <model>_validation)")
    check.add_argument("--drift", type=float, default=None, help="NVE drift threshold, meV/atom/ps (1.0)")
    check.add_argument("--temperature-tolerance", type=float, default=None, help="relative, NVT mean T (0.1)")
    check.add_argument(
        "--temperature-spread", type=float, default=None, help="|log2(std(T) / canonical std)| threshold (1.0)"
    )
    check.add_argument(
        "--uncertainty-threshold", default=None, help="committees: largest per-atom force std, e.g. '0.2 eV/angstrom'"
    )
    check.add_argument("--rdf-threshold", type=float, default=None, help="rdf_difference threshold (0.1)")
    check.add_argument("--js-threshold", type=float, default=None, help="Jensen-Shannon threshold, bits (0.02)")
    check.add_argument(
        "--contact-threshold",
        type=float,
        default=None,
        help="models with training distances: closest contact of each element pair / the training data's shortest; "
        "pass when >= this (0.95)",
    )
    _add_md_options(check)
    _add_force(check)
    check.set_defaults(run=_validate)
    return parser


def main(argv: List[str] | None = None) -> int:
    from physml_md.md.interrupts import Interrupted, Interrupts

    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # SIGINT / SIGTERM anywhere in a command: one sentence, 128 + the signal's number (md stops at a frame)
        with Interrupts() as interrupts, interrupts.armed():
            if getattr(args, "threads", None):
                import torch

                torch.set_num_threads(args.threads)
            code = args.run(args)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
            return code
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"physml-md {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as exc:
        name = str(exc) if isinstance(exc, Interrupted) else "SIGINT"
        kept = _STOPPED.get(args.command, "no file was left half-written")
        print(f"physml-md {args.command}: stopped by {name}; {kept}", file=sys.stderr)
        return 128 + signal.Signals[name].value
    except BrokenPipeError:  # `physml-md info --json | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (Python flushes stdout again at exit)
        return 141


if __name__ == "__main__":
    sys.exit(main())
