"""`physml-md` command line: the one place that wires the layers together.

Exit status: 0 done, 1 the MD blew up, the validation failed or learning did not converge, 2 bad input, 3 `md
--stop-on-uncertainty` stopped at an uncertain frame, 130 / 143 interrupted by SIGINT / SIGTERM (`md`'s files keep
every frame up to it; `train` and `learn` go on from their finished work when run again). No command writes over a
file it did not write in this run (an existing output is refused unless ``--force``; an output that is an input,
always), and one run at a time writes into a training folder. ``--help`` and ``--version`` answer at once: the
parser does not import torch.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import List, Literal, get_args, get_origin

from physml_md._version import __version__
from physml_md.config.md import MDSettings

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
_MODEL = "exported model file (.pt or .pt2) or training checkpoint (.ckpt)"  # what md, validate, evaluate run


def _command(commands: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    """The parser of `physml-md NAME`, whose handler is ``physml_md.cli.commands.NAME_command``."""
    parser = commands.add_parser(name, help=help)
    parser.set_defaults(run=f"{name}_command")
    return parser


def _add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite output files that exist (never an input)")


def _add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help=help)


def _add_index(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", type=int, default=0, help="which structure of the file (default 0)")


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_md_options(parser: argparse.ArgumentParser) -> None:
    """Options of md and validate: one per ``MDSettings`` key (its type, choices, description and default) but
    ensemble and friction, which each command gives itself; then threads and quiet."""
    for name, info in MDSettings.model_fields.items():
        if name in ("ensemble", "friction"):
            continue
        kind, default = info.annotation, info.get_default()
        shown = "" if default is None else f" (default: {default})"  # (an unset default is described)
        options = {"default": None, "help": info.description + shown}
        if get_origin(kind) is Literal:
            options["choices"] = get_args(kind)
        elif kind is int:
            options["type"] = int
        elif bool in get_args(kind):
            options["action"] = argparse.BooleanOptionalAction
        parser.add_argument("--" + name.replace("_", "-"), **options)
    _add_threads(parser)
    _add_quiet(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="physml-md", description=__doc__.splitlines()[0], epilog=EXIT_STATUS)
    parser.add_argument("--version", action="version", version=f"physml-md {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_train_parser, _learn_parser, _export_parser, _info_parser, _evaluate_parser, _pack_parser):
        add(commands)
    _md_parser(commands)
    _validate_parser(commands)
    return parser


def _train_parser(commands: argparse._SubParsersAction) -> None:
    train = _command(commands, "train", "train a potential from a TOML or YAML config")
    train.add_argument("config", help="config file (.toml, .yaml or .yml)")
    train.add_argument("--ckpt-path", help="resume from this checkpoint (weights, optimizer, epoch, ...)")
    _add_overrides(
        train,
        "override one config value, e.g. --set trainer.max_epochs=5 (repeatable; values are TOML; a relative path "
        "starts at the working directory, one written in the config file at the file's folder)",
    )
    train.add_argument("--committee", type=int, metavar="N", help="train N models as a committee (training.committee)")
    _add_force(train)


def _learn_parser(commands: argparse._SubParsersAction) -> None:
    learn = _command(
        commands, "learn", "active learning: rounds of train a committee, MD, label uncertain frames, retrain"
    )
    learn.add_argument("config", help="training config with a [learning] table (.toml, .yaml or .yml)")
    _add_overrides(learn, "as for train")


def _export_parser(commands: argparse._SubParsersAction) -> None:
    export = _command(
        commands, "export", "export a training checkpoint to a model file (TorchScript .pt or torch.export .pt2)"
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
        help="torchscript (.pt; what OpenMM's TorchForce runs), export (a torch.export program, .pt2), "
        "aotinductor (that program compiled to a shared library, .pt2; needs a C++ compiler) or metatomic (.pt; "
        "for LAMMPS' pair_style metatomic, i-PI, torch-sim; needs physml-md[metatomic]); default: from the "
        "output's name",
    )
    export.add_argument("--no-ema", action="store_true", help="export the raw weights, not their moving average")
    export.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        help="dtype of the exported file (default: the model's; e.g. float64 for a model trained in float32)",
    )
    _add_force(export)


def _info_parser(commands: argparse._SubParsersAction) -> None:
    info = _command(commands, "info", "show the metadata of an exported model file, or summarise a packed folder")
    info.add_argument("model", help="exported model file (.pt or .pt2), or a packed folder (physml-md pack)")
    info.add_argument("--json", action="store_true", help="print the whole metadata document as JSON")


def _evaluate_parser(commands: argparse._SubParsersAction) -> None:
    evaluate = _command(commands, "evaluate", "run an exported model on structures (extxyz or ASE db)")
    evaluate.add_argument("model", help=_MODEL)
    evaluate.add_argument("structures", help="extxyz or ASE db file")
    evaluate.add_argument("--index", default=":", help="which structures, ASE style (default ':')")
    evaluate.add_argument("--energy-key", default="energy", help="name of the reference energy in the file")
    evaluate.add_argument("--forces-key", default="forces", help="name of the reference forces in the file")
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--device", default="cpu", help="cpu or cuda")
    _add_threads(evaluate)


def _pack_parser(commands: argparse._SubParsersAction) -> None:
    pack = _command(
        commands, "pack", "pack extxyz files / ASE databases into a folder that training reads lazily ([data] source)"
    )
    pack.add_argument("inputs", nargs="+", metavar="INPUT", help="extxyz files or ASE databases (.db, .json)")
    pack.add_argument("output", metavar="OUTPUT_FOLDER", help="the packed folder to write (must not exist)")
    pack.add_argument("--append", action="store_true", help="add the structures to an existing packed folder")
    for label in ("energy", "forces", "stress", "charges", "total-charge", "dipole"):  # LabelKeys' fields
        default = label if label in ("energy", "forces", "stress") else None
        pack.add_argument(
            f"--{label}-key",
            type=_key_or_none,
            default=default,
            help=f"name of the {label} label in the files, as [data] y_{label.replace('-', '_')} (default: "
            f"{default or 'none, not stored'}; 'none': not stored)",
        )
    pack.add_argument("--index", default=":", help="which structures of each file, ASE style (default ':')")
    pack.add_argument("--chunk-size", type=int, default=10_000, help="structures per chunk folder (default 10000)")
    pack.add_argument(
        "--pair-cutoff",
        type=float,
        default=None,
        help="shortest pair distances are stored within this many angstrom (default: --neighbor-cutoff when given, "
        "else 5.0; training with a longer cut-off computes them from the structures)",
    )
    pack.add_argument(
        "--neighbor-cutoff",
        type=float,
        default=None,
        help="also store each structure's neighbour list within this many angstrom: training at a cut-off up to it "
        "reads them instead of computing them (default: not stored)",
    )
    pack.add_argument(
        "--record-key",
        default="record",
        help="atoms.info key of each structure's record, for random_record_splitting_strategy (default 'record'; "
        "without it: the chemical formula)",
    )
    _add_quiet(pack)


def _key_or_none(value: str) -> str | None:  # --energy-key none: not stored
    return None if value.lower() in ("none", "null", "") else value


def _md_parser(commands: argparse._SubParsersAction) -> None:
    md = _command(commands, "md", "run molecular dynamics with a model in ASE or OpenMM")
    md.add_argument("model", help=_MODEL)
    md.add_argument("structure", help="starting structure (any file ASE reads)")
    _add_index(md)
    md.add_argument("--ensemble", choices=["nve", "nvt"], default="nvt")
    length = md.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="number of MD steps")
    length.add_argument("--time", help="simulated time, e.g. '10 ps'")
    md.add_argument("--friction", default="1/ps", help="Langevin friction for NVT (default '1/ps')")
    md.add_argument("--out", help="trajectory file: .dcd, .xtc (with a .pdb beside), .traj, .extxyz")
    md.add_argument("--log", help="CSV energy log (default: the trajectory's name with .csv)")
    md.add_argument(
        "--uncertainty-threshold",
        help="committee models: flag frames whose largest per-atom force std exceeds this, e.g. '0.1 eV/angstrom'",
    )
    md.add_argument(
        "--stop-on-uncertainty", action="store_true", help="stop at the first flagged frame (exit status 3 if it did)"
    )
    md.add_argument("--uncertain-frames", help="extxyz for the flagged frames (default: beside --out)")
    _add_md_options(md)
    _add_force(md)


def _validate_parser(commands: argparse._SubParsersAction) -> None:
    check = _command(commands, "validate", "MD validation: NVT + NVE stability, drift, structure vs reference")
    check.add_argument("model", help=_MODEL)
    check.add_argument("--structures", required=True, help="file with the starting structure (any file ASE reads)")
    _add_index(check)
    check.add_argument("--reference", help="reference MD trajectory or dataset of the same system")
    check.add_argument("--nvt-steps", type=int, default=2000)
    check.add_argument("--nve-steps", type=int, default=1000)
    check.add_argument("--friction", default="5/ps", help="Langevin friction of the NVT run (default '5/ps')")
    check.add_argument("--out", help="report directory (default: <model>_validation)")
    check.add_argument("--drift", type=float, help="NVE drift threshold, meV/atom/ps (1.0)")
    check.add_argument("--temperature-tolerance", type=float, help="relative, NVT mean T (0.1)")
    check.add_argument("--temperature-spread", type=float, help="|log2(std(T) / canonical std)| threshold (1.0)")
    check.add_argument("--uncertainty-threshold", help="committees: largest per-atom force std, e.g. '0.2 eV/angstrom'")
    check.add_argument("--rdf-threshold", type=float, help="rdf_difference threshold (0.1)")
    check.add_argument("--js-threshold", type=float, help="Jensen-Shannon threshold, bits (0.02)")
    check.add_argument(
        "--contact-threshold",
        type=float,
        help="models with training distances: closest contact of each element pair / the training data's shortest; "
        "pass when >= this (0.95)",
    )
    _add_md_options(check)
    _add_force(check)


def main(argv: List[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # (--help and --version exit here, before torch loads)
    from physml_md.cli import commands
    from physml_md.md.control import Interrupted, Interrupts

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
