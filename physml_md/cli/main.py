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
import os
import signal
import sys
from typing import List

from physml_md._version import __version__

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
    train.set_defaults(run="train_command")

    learning = commands.add_parser(
        "learn", help="active learning: rounds of train a committee, MD, label uncertain frames, retrain"
    )
    learning.add_argument("config", help="training config with a [learning] table (.toml, .yaml or .yml)")
    learning.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="as for train")
    learning.set_defaults(run="learn_command")

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
    export.set_defaults(run="export_command")

    info = commands.add_parser("info", help="show the metadata of an exported model file, or summarise a packed folder")
    info.add_argument("model", help="exported model file (.pt or .pt2), or a packed folder (physml-md pack)")
    info.add_argument("--json", action="store_true", help="print the whole metadata document as JSON")
    info.set_defaults(run="info_command")

    evaluate = commands.add_parser("evaluate", help="run an exported model on structures (extxyz or ASE db)")
    evaluate.add_argument("model", help="exported model file (.pt or .pt2) or training checkpoint (.ckpt)")
    evaluate.add_argument("structures", help="extxyz or ASE db file")
    evaluate.add_argument("--index", default=":", help="which structures, ASE style (default ':')")
    evaluate.add_argument("--energy-key", default="energy", help="name of the reference energy in the file")
    evaluate.add_argument("--forces-key", default="forces", help="name of the reference forces in the file")
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--device", default="cpu", help="cpu or cuda")
    evaluate.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    evaluate.set_defaults(run="evaluate_command")

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
    packer.set_defaults(run="pack_command")

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
    md.set_defaults(run="md_command")

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
    check.set_defaults(run="validate_command")
    return parser


def main(argv: List[str] | None = None) -> int:
    from physml_md.cli import commands  # loads torch: only once a command runs
    from physml_md.md.control import Interrupted, Interrupts

    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # SIGINT / SIGTERM anywhere in a command: one sentence, 128 + the signal's number (md stops at a frame)
        with Interrupts() as interrupts, interrupts.armed():
            if getattr(args, "threads", None):
                import torch

                torch.set_num_threads(args.threads)
            code = getattr(commands, args.run)(args)
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
