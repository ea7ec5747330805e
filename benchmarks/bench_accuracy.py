"""Accuracy per CPU-second against MACE-small: ethanol/GFN2-xTB, equal training budgets, one run.

On the ethanol_xtb data (examples/ethanol_xtb/make_data.py: 1000 GFN2-xTB frames of 500 K Langevin MD) with one
fixed split (frames 0-799 train, 800-899 validation, 900-999 test: the test frames come from the latest part
of the trajectory), this script trains, one after the other on the same machine:

1. MACE-small (mace-torch 0.3.16: ``--num_channels 64 --max_L 0 --r_max 5.0 --batch_size 10 --default_dtype
   float32 --E0s average --ema``, 40 epochs), in an environment of its own that the script sets up
   (``--mace-venv``; mace-torch is never a dependency of physml-md, and its pickled model files are loaded only
   in that environment, by ``mace_worker.py``);
2. each of our recipes (``--recipes``; ``--list-recipes`` shows them), with MACE's measured training time as the
   budget: a short calibration run measures the seconds per epoch, then the recipe trains for as many epochs as
   fit in the budget, with its learning-rate schedule fitted to that many epochs.

For each it prints test energy and force MAE, epochs done, training seconds (CPU seconds of the training
process and its children, and wall seconds) and the ASE MD cost (VelocityVerlet, ms/step, ``--threads``
torch threads). Every training process runs with ``--threads`` threads (default 1); the budget is counted in
CPU seconds so that other work on a shared machine does not shorten anyone's training (``--clock wall`` to
count wall seconds instead).

    python benchmarks/bench_accuracy.py                               # MACE-small, then the default recipes
    python benchmarks/bench_accuracy.py --recipes painn painn-f32     # choose recipes
    python benchmarks/bench_accuracy.py --budget 300 --skip-mace      # a fixed budget (CPU s), no MACE

Results are also written as JSON (``--out``/results.json), one entry per model, so runs can be compared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import lightning
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "benchmarks" / "output" / "accuracy"
DEFAULT_MACE_VENV = ROOT / ".venv-mace"
MACE_VERSION = "0.3.16"
MACE_SMALL = [
    "--model=MACE",
    "--num_channels=64",
    "--max_L=0",
    "--r_max=5.0",
    "--batch_size=10",
    "--default_dtype=float32",
    "--E0s=average",
    "--ema",
]
SPLIT = {"train": (0, 800), "validation": (800, 900), "test": (900, 1000)}
CALIBRATION_EPOCHS = 3

# Our recipes: overrides of examples/ethanol_xtb/config.toml ("section.key=value", as on the command line). Each
# names its architecture, so that a change of the example's model does not change what a recipe measures.
PAINN = ["model.name=painn", "model.n_interactions=3", "model.dtype=float64"]
TENSORNET = ["model.name=tensornet", "model.n_interactions=2", "model.dtype=float64"]
TENSORNET_F32 = [*TENSORNET, "model.dtype=float32", "model.export_dtype=float64"]
RECIPES = {
    "painn": ("PaiNN (64 features, 3 interactions), float64: the example's recipe before TensorNet", PAINN),
    "painn-f32": (
        "PaiNN trained in float32, exported in float64",
        [*PAINN, "model.dtype=float32", "model.export_dtype=float64"],
    ),
    "tensornet": ("TensorNet (64 features, 2 interactions), float64", TENSORNET),
    "tensornet-f32": (
        "TensorNet (64 features, 2 interactions) trained in float32, exported in float64",
        TENSORNET_F32,
    ),
    # levers, one at a time, each against tensornet-f32
    "tensornet-f32-lr1e-3": ("tensornet-f32, learning rate 1e-3 instead of 3e-3", [*TENSORNET_F32, "training.lr=1e-3"]),
    "tensornet-f32-bs8": (
        "tensornet-f32, batches of 8 instead of 16 (twice the optimiser steps per epoch)",
        [*TENSORNET_F32, "data.train.batch_size=8"],
    ),
    "tensornet-f32-noema": ("tensornet-f32 without the EMA of the weights", [*TENSORNET_F32, "training.ema.decay=0"]),
    "tensornet-f32-nomix": (
        "tensornet-f32 without loss-weight mixing: the final weights (energy 1, forces 100) from the start",
        [
            *TENSORNET_F32,
            "training.loss_parameter.weight.per_system_energy=1.0",
            "training.loss_parameter.weight.per_atom_force=100.0",
        ],
    ),
    "tensornet-f32-rbf10": (
        "tensornet-f32, 10 radial basis functions instead of 20",
        [*TENSORNET_F32, "model.n_rbf=10"],
    ),
    "tensornet-f32-cut4": (
        "tensornet-f32, cutoff 4 angstrom instead of 5 (drops the longest pairs of ethanol)",
        [*TENSORNET_F32, "data.cut_off=4.0 angstrom"],
    ),
    "tensornet-f32-w32": ("tensornet-f32, 32 features instead of 64", [*TENSORNET_F32, "model.features=32"]),
    "tensornet-f32-w96": ("tensornet-f32, 96 features instead of 64", [*TENSORNET_F32, "model.features=96"]),
    "tensornet-f32-1int": ("tensornet-f32, 1 interaction instead of 2", [*TENSORNET_F32, "model.n_interactions=1"]),
    "tensornet-f32-3int": ("tensornet-f32, 3 interactions instead of 2", [*TENSORNET_F32, "model.n_interactions=3"]),
    # the same recipes with other seeds (initial weights, data order): how much of a lever's effect is the seed's
    "tensornet-f32-seed1": ("tensornet-f32, seeds 1", [*TENSORNET_F32, "model.seed=1", "training.seed=1"]),
    "tensornet-f32-1int-seed1": (
        "tensornet-f32-1int, seeds 1",
        [*TENSORNET_F32, "model.n_interactions=1", "model.seed=1", "training.seed=1"],
    ),
}
DEFAULT_RECIPES = ["painn", "painn-f32", "tensornet"]


# ------------------------------------------------------------------------------------------------ data
def _load_script(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem + "_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def split_files(out: Path) -> dict:
    """Make (or reuse) the ethanol xTB data and write the fixed split twice: for physml-md and for MACE."""
    from ase.io import read, write

    make_data = _load_script(ROOT / "examples" / "ethanol_xtb" / "make_data.py")
    data_dir = out / "data"
    frames_needed = SPLIT["test"][1]
    files = make_data.existing_data(data_dir, frames_needed, 1)
    if files is None:
        print(f"making GFN2-xTB data ({frames_needed} frames, tblite) in {data_dir} ...", flush=True)
        files = make_data.make_data(data_dir, frames_needed, 1)
    frames = read(files.data, ":")
    paths = {}
    for name, (begin, end) in SPLIT.items():
        part = frames[begin:end]
        ours = out / "split" / f"{name}.extxyz"
        mace = out / "split" / f"mace_{name}.extxyz"
        ours.parent.mkdir(parents=True, exist_ok=True)
        if not ours.is_file():
            write(ours, part)
        if not mace.is_file():
            relabelled = []
            for atoms in part:
                copy_ = atoms.copy()
                copy_.info = {"REF_energy": atoms.get_potential_energy()}
                copy_.arrays["REF_forces"] = atoms.get_forces().copy()
                relabelled.append(copy_)
            write(mace, relabelled)
        paths[name] = ours
        paths["mace_" + name] = mace
    return paths


# ------------------------------------------------------------------------------------------------ timing
def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(command, env=None, cwd=None, log: Path | None = None) -> dict:
    """Run ``command``; return its stdout, wall seconds and CPU seconds (the process and its children)."""
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    process = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall0, _children_cpu() - cpu0
    if log is not None:
        log.write_text(process.stdout + "\n--- stderr ---\n" + process.stderr)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({process.returncode}):\n{process.stderr[-3000:]}")
    return {"stdout": process.stdout, "wall_s": wall, "cpu_s": cpu}


def thread_env(threads: int, **extra) -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------------------ MACE
def mace_venv(path: Path) -> Path:
    """A virtual environment with mace-torch that reuses this environment's torch (a .pth file points at its
    site-packages), so only mace-torch and its small dependencies are installed; made once."""
    python = path / "bin" / "python"
    stamp = path / f".mace-{MACE_VERSION}"
    if stamp.is_file():
        return python
    import sysconfig

    print(f"setting up mace-torch {MACE_VERSION} in {path} (benchmark only) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "physml_md_base.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--progress-bar", "off", f"mace-torch=={MACE_VERSION}"],
        check=True,
    )
    stamp.touch()
    return python


def train_mace(python: Path, files: dict, out: Path, epochs: int, threads: int, seed: int) -> dict:
    work = out / "mace"
    work.mkdir(parents=True, exist_ok=True)
    command = [
        str(python.parent / "mace_run_train"),
        "--name=mace_small",
        f"--work_dir={work}",
        f"--train_file={files['mace_train']}",
        f"--valid_file={files['mace_validation']}",
        "--energy_key=REF_energy",
        "--forces_key=REF_forces",
        f"--max_num_epochs={epochs}",
        "--device=cpu",
        f"--seed={seed}",
        *MACE_SMALL,
    ]
    timing = run_timed(command, env=thread_env(threads), log=work / "train.log")
    models = sorted(work.rglob("mace_small.model"))
    if not models:
        raise RuntimeError(f"mace_run_train wrote no mace_small.model under {work}")
    evaluation = run_timed(
        [str(python), str(HERE / "mace_worker.py"), str(models[0]), str(files["mace_test"]), f"--threads={threads}"],
        env=thread_env(threads, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"),
    )
    result = json.loads(evaluation["stdout"].strip().splitlines()[-1])
    result.update(model="MACE-small", epochs=epochs, train_cpu_s=timing["cpu_s"], train_wall_s=timing["wall_s"])
    return result


# ------------------------------------------------------------------------------------------------ ours
def recipe_config(files: dict, root: Path, overrides, epochs: int) -> dict:
    """The ethanol_xtb example's configuration on the fixed split, with the recipe's overrides."""
    import tomllib

    from physml_md.config.load import apply_overrides

    example = ROOT / "examples" / "ethanol_xtb"
    with open(example / "config.toml", "rb") as stream:
        raw = tomllib.load(stream)
    data = raw["data"]
    data.pop("source", None)
    data.pop("splitting_strategy", None)
    for name in ("train", "validation", "test"):
        data.setdefault(name, {})["path"] = str(files[name])
    raw["trainer"].update(default_root_dir=str(root), enable_progress_bar=False, enable_model_summary=False)
    # the fitted epochs, the loss-weight mixing keeping its fraction of them (as the example's --epochs does)
    epochs_overrides = _load_script(example / "run.py").epoch_overrides(example / "config.toml", epochs)
    return apply_overrides(raw, [*epochs_overrides, *overrides])


class EpochClock(lightning.Callback):
    """Writes the CPU and wall clocks at each training epoch's end (the worker adds it through the config)."""

    def __init__(self, path: str):
        self.path = path

    def on_train_epoch_end(self, trainer, pl_module):
        with open(self.path, "a") as stream:
            stream.write(f"{time.process_time()} {time.perf_counter()}\n")


def worker(args) -> None:
    """Train one recipe in this process (``--worker``); print where the model is."""
    import torch

    torch.set_num_threads(args.threads)
    from physml_md.training import PhysMLModel

    files = json.loads(args.files)
    raw = recipe_config(files, Path(args.root), RECIPES[args.worker][1], args.epochs)
    raw["trainer"]["callbacks"] = [{"class_path": "bench_accuracy.EpochClock", "init_args": {"path": args.clock_file}}]
    result = PhysMLModel(raw).train(verbose=False)
    print(json.dumps({"model_path": str(result.model_path)}))


def _run_worker(recipe: str, files: dict, root: Path, epochs: int, threads: int) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    clock = root / f"clock-{epochs}.txt"
    clock.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        f"--worker={recipe}",
        f"--files={json.dumps({k: str(v) for k, v in files.items()})}",
        f"--root={root}",
        f"--epochs={epochs}",
        f"--threads={threads}",
        f"--clock-file={clock}",
    ]
    env = thread_env(threads, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    timing = run_timed(command, env=env, log=root / f"train-{epochs}.log")
    ticks = np.loadtxt(clock, ndmin=2)
    timing.update(json.loads(timing["stdout"].strip().splitlines()[-1]))
    timing["epoch_cpu_s"] = np.diff(ticks[:, 0]).tolist()
    timing["epoch_wall_s"] = np.diff(ticks[:, 1]).tolist()
    return timing


def md_ms_per_step(calc, atoms, steps: int, warmup: int = 20) -> float:
    """Milliseconds per VelocityVerlet step (0.5 fs, 300 K start) of ``atoms`` with ``calc``."""
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dyn.run(warmup)
    start = time.perf_counter()
    dyn.run(steps)
    return 1000 * (time.perf_counter() - start) / steps


def evaluate_ours(model_path: str, test_file: Path, threads: int, md_steps: int) -> dict:
    from ase.io import read

    from physml_md import PhysMLCalculator

    frames = read(test_file, ":")
    calc = PhysMLCalculator(model_path, num_threads=threads)
    energy_errors, force_errors = [], []
    for atoms, result in zip(frames, calc.calculate_batch(frames)):
        energy_errors.append((result["energy"] - atoms.get_potential_energy()) / len(atoms))
        force_errors.append(np.abs(result["forces"] - atoms.get_forces()).ravel())
    return {
        "energy_mae_mev_per_atom": 1000 * float(np.mean(np.abs(energy_errors))),
        "force_mae_mev_per_angstrom": 1000 * float(np.mean(np.concatenate(force_errors))),
        "md_ms_per_step": md_ms_per_step(calc, frames[0], md_steps),
    }


def model_in_format(result: dict, format: str) -> Path:
    """A stored model in another export format (``physml_md.export.FORMATS``), in the dtype of its model.pt:
    exported once from its best checkpoint (EMA weights, as the training run's export), beside model.pt."""
    from physml_md.export import export_potential, read_metadata
    from physml_md.export.checkpoint import exportable_from_checkpoint

    model_path = Path(result["model_path"])
    if format == "torchscript":
        return model_path
    target = model_path.with_name(f"model.{format}.pt2")
    if not target.is_file():
        checkpoint = next(path for path in sorted(model_path.parent.glob("*.ckpt")) if path.name != "last.ckpt")
        potential, metadata = exportable_from_checkpoint(checkpoint)
        export_potential(potential, target, metadata, dtype=read_metadata(model_path)["dtype"], format=format)
    return target


def remeasure_md(out: Path, mace_venv_path: Path, threads: int, steps: int, rounds: int, formats=("torchscript",)):
    """Time the MD step of every stored model again, in rounds that alternate between the models (so that
    every model sees the same machine); each result keeps the median of its rounds. Our models run in each of
    ``formats`` (``md_ms_per_step`` is the TorchScript file's, ``md_ms_per_step_<format>`` another's)."""
    from ase.io import read

    from physml_md import PhysMLCalculator

    results = stored_results(out)
    if not results:
        raise SystemExit(f"no stored results under {out}: run the benchmark first")
    atoms = read(out / "split" / "test.extxyz", 0)
    times = {r["model"]: [] for r in results}
    files = {}
    for r in results:
        if r["model"] != "MACE-small":
            for format in formats:
                files[r["model"], format] = model_in_format(r, format)
                times.setdefault((r["model"], format), [])
    for _ in range(rounds):
        for r in results:
            if r["model"] == "MACE-small":
                command = [
                    str(mace_venv_path / "bin" / "python"),
                    str(HERE / "mace_worker.py"),
                    str(out / "mace" / "mace_small.model"),
                    str(out / "split" / "mace_test.extxyz"),
                    f"--threads={threads}",
                    f"--md-steps={steps}",
                    "--md-only",
                ]
                env = thread_env(threads, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
                stdout = run_timed(command, env=env)["stdout"]
                times[r["model"]].append(json.loads(stdout.strip().splitlines()[-1])["md_ms_per_step"])
            else:
                for format in formats:
                    calc = PhysMLCalculator(files[r["model"], format], num_threads=threads)
                    times[r["model"], format].append(md_ms_per_step(calc, atoms, steps))
    for r in results:
        if r["model"] == "MACE-small":
            r["md_ms_per_step_rounds"] = times[r["model"]]
            r["md_ms_per_step"] = float(np.median(times[r["model"]]))
            continue
        for format in formats:
            key = "md_ms_per_step" if format == "torchscript" else f"md_ms_per_step_{format}"
            r[key + "_rounds"] = times[r["model"], format]
            r[key] = float(np.median(times[r["model"], format]))
    return results


def format_md_table(results: list, formats) -> str:
    """ms per MD step of each model in each export format, and the ratio to MACE-small's."""
    mace = next((r["md_ms_per_step"] for r in results if r["model"] == "MACE-small"), None)
    lines = [f"{'model':<22} " + " ".join(f"{format + ' ms/step':>24}" for format in formats)]
    for r in results:
        if r["model"] == "MACE-small":
            lines.append(f"{'MACE-small':<22} {r['md_ms_per_step']:>24.2f}")
            continue
        cells = []
        for format in formats:
            ms = r["md_ms_per_step" if format == "torchscript" else f"md_ms_per_step_{format}"]
            cells.append(f"{ms:>12.2f} ({ms / mace:.2f}x MACE)" if mace else f"{ms:>24.2f}")
        lines.append(f"{r['model']:<22} " + " ".join(f"{cell:>24}" for cell in cells))
    return "\n".join(lines)


def train_ours(recipe: str, files: dict, out: Path, budget: float, clock: str, threads: int, md_steps: int) -> dict:
    """Calibrate seconds per epoch, then train for as many epochs as the budget holds."""
    root = out / "ours" / recipe
    calibration = _run_worker(recipe, files, root / "calibration", CALIBRATION_EPOCHS, threads)
    key = "cpu" if clock == "cpu" else "wall"
    per_epoch = float(np.mean(calibration[f"epoch_{key}_s"][1:] or calibration[f"epoch_{key}_s"]))
    overhead = max(0.0, calibration[f"{key}_s"] - CALIBRATION_EPOCHS * per_epoch)
    epochs = max(1, int((budget - overhead) // per_epoch))
    run = _run_worker(recipe, files, root / "full", epochs, threads)
    result = evaluate_ours(run["model_path"], files["test"], threads, md_steps)
    result.update(
        model=recipe,
        description=RECIPES[recipe][0],
        epochs=epochs,
        s_per_epoch=per_epoch,
        train_cpu_s=run["cpu_s"],
        train_wall_s=run["wall_s"],
        model_path=run["model_path"],
    )
    return result


# ------------------------------------------------------------------------------------------------ report
def format_table(results, budget: float, clock: str, threads: int) -> str:
    header = (
        f"{'model':<14} {'E MAE meV/at':>12} {'F MAE meV/A':>12} {'epochs':>6} {'s/epoch':>8} "
        f"{'train cpu s':>11} {'train wall s':>12} {'MD ms/step':>10}"
    )
    lines = [
        f"ethanol GFN2-xTB, 800/100/100 frames, budget {budget:.0f} {clock} s, {threads} torch thread(s)",
        header,
        "-" * len(header),
    ]
    for r in results:
        s_per_epoch = r.get("s_per_epoch") or r["train_cpu_s"] / r["epochs"]
        lines.append(
            f"{r['model']:<14} {r['energy_mae_mev_per_atom']:>12.3f} {r['force_mae_mev_per_angstrom']:>12.2f} "
            f"{r['epochs']:>6} {s_per_epoch:>8.2f} "
            f"{r['train_cpu_s']:>11.0f} {r['train_wall_s']:>12.0f} {r['md_ms_per_step']:>10.2f}"
        )
    mace = next((r for r in results if r["model"] == "MACE-small"), None)
    if mace is not None:
        lines.append("ratios to MACE-small (force MAE, MD ms/step):")
        for r in results:
            if r is not mace:
                force = r["force_mae_mev_per_angstrom"] / mace["force_mae_mev_per_angstrom"]
                md = r["md_ms_per_step"] / mace["md_ms_per_step"]
                lines.append(f"  {r['model']:<12} force {force:.2f}x  MD {md:.2f}x")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES, choices=sorted(RECIPES))
    parser.add_argument("--list-recipes", action="store_true")
    parser.add_argument("--finish", choices=sorted(RECIPES), help="export and evaluate a trained but unfinished run")
    parser.add_argument("--report", action="store_true", help="print the table of every result stored in --out")
    parser.add_argument(
        "--remeasure-md",
        action="store_true",
        help="time the MD step of every stored model again, side by side in 3 alternating rounds, and print the table",
    )
    parser.add_argument(
        "--md-formats",
        nargs="+",
        default=["torchscript"],
        choices=["torchscript", "export", "aotinductor"],
        help="with --remeasure-md: the export formats our models' MD step is timed in (written from each run's "
        "best checkpoint)",
    )
    parser.add_argument("--budget", type=float, default=None, help="training budget in seconds (default: MACE's)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--skip-mace", action="store_true")
    parser.add_argument("--mace-epochs", type=int, default=40)
    parser.add_argument("--retrain-mace", action="store_true", help="train MACE again even if a result is stored")
    parser.add_argument("--mace-venv", type=Path, default=DEFAULT_MACE_VENV)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--md-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    # internal: one training run in a fresh process
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clock-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.finish:
        budget = args.budget
        if budget is None:
            mace = json.loads((args.out.resolve() / "mace" / "result.json").read_text())
            budget = mace["train_cpu_s"] if args.clock == "cpu" else mace["train_wall_s"]
        result = finish_recipe(args.finish, args.out.resolve(), budget, args.clock, args.threads, args.md_steps)
        print(json.dumps(result))
        return [result]
    if args.report or args.remeasure_md:
        if args.remeasure_md:
            results = remeasure_md(
                args.out.resolve(), args.mace_venv.resolve(), args.threads, args.md_steps, 3, args.md_formats
            )
            print(format_md_table(results, args.md_formats))
        else:
            results = stored_results(args.out.resolve())
        if not results:
            parser.error(f"no stored results under {args.out}: run the benchmark first")
        budgets = sorted({round(r["budget_s"]) for r in results if "budget_s" in r})
        if len(budgets) > 1:
            print(f"note: the stored recipes ran with different budgets: {budgets}")
        first = next((r for r in results if "budget_s" in r), {"budget_s": float("nan"), "clock": "?", "threads": 1})
        print(format_table(results, first["budget_s"], first["clock"], first["threads"]))
        return results
    if args.list_recipes:
        for name, (description, overrides) in RECIPES.items():
            print(f"{name:<16} {description}: {' '.join(overrides) or '(no overrides)'}")
        return None
    if args.skip_mace and args.budget is None:
        parser.error("--skip-mace needs --budget (the budget is otherwise MACE's training time)")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = split_files(out)
    results = []
    budget = args.budget
    if not args.skip_mace:
        settings = {"epochs": args.mace_epochs, "threads": args.threads, "seed": args.seed, "args": MACE_SMALL}
        stored = out / "mace" / "result.json"
        mace = json.loads(stored.read_text()) if stored.is_file() and not args.retrain_mace else None
        if mace is not None and mace.get("settings") == settings:
            print(f"MACE-small: reusing {stored} (measured {mace['measured']}; --retrain-mace to train again)")
        else:
            python = mace_venv(args.mace_venv.resolve())
            print(f"training MACE-small for {args.mace_epochs} epochs ...", flush=True)
            mace = train_mace(python, files, out, args.mace_epochs, args.threads, args.seed)
            mace.update(settings=settings, measured=time.strftime("%Y-%m-%d %H:%M"))
            stored.write_text(json.dumps(mace, indent=2))
        results.append(mace)
        print(json.dumps(mace), flush=True)
        if budget is None:
            budget = mace["train_cpu_s"] if args.clock == "cpu" else mace["train_wall_s"]
    for recipe in args.recipes:
        print(f"training {recipe} for {budget:.0f} {args.clock} s ...", flush=True)
        result = train_ours(recipe, files, out, budget, args.clock, args.threads, args.md_steps)
        result.update(budget_s=budget, clock=args.clock, threads=args.threads, measured=time.strftime("%Y-%m-%d %H:%M"))
        (out / "ours" / recipe / "result.json").write_text(json.dumps(result, indent=2))
        results.append(result)
        print(json.dumps(result), flush=True)
    print(format_table(results, budget, args.clock, args.threads))
    return results


def finish_recipe(recipe: str, out: Path, budget: float, clock: str, threads: int, md_steps: int) -> dict:
    """Export and evaluate a recipe whose full training run finished its epochs but not its export (e.g. the
    process was killed): the training seconds are read from its epoch clock (up to the last epoch's end)."""
    from physml_md.export import export_potential
    from physml_md.export.checkpoint import exportable_from_checkpoint

    root = out / "ours" / recipe
    clocks = sorted((root / "full").glob("clock-*.txt"))
    if not clocks:
        raise SystemExit(f"{root / 'full'} holds no training run of {recipe}")
    epochs = int(clocks[-1].stem.split("-")[1])
    ticks = np.loadtxt(clocks[-1], ndmin=2)
    if len(ticks) < epochs:
        raise SystemExit(f"{recipe}: the run stopped after {len(ticks)} of {epochs} epochs; train it again")
    checkpoints = sorted((root / "full").glob("version_*/checkpoints/epoch=*.ckpt"), key=lambda p: p.stat().st_mtime)
    potential, metadata = exportable_from_checkpoint(checkpoints[-1])
    overrides = dict(item.split("=", 1) for item in RECIPES[recipe][1])
    model_path = checkpoints[-1].parent / "model.pt"
    export_potential(potential, model_path, metadata, dtype=overrides.get("model.export_dtype"))
    calibration = np.loadtxt(root / "calibration" / f"clock-{CALIBRATION_EPOCHS}.txt", ndmin=2)
    column = 0 if clock == "cpu" else 1
    result = evaluate_ours(str(model_path), out / "split" / "test.extxyz", threads, md_steps)
    result.update(
        model=recipe,
        description=RECIPES[recipe][0],
        epochs=epochs,
        s_per_epoch=float(np.mean(np.diff(calibration[:, column])[1:])),
        train_cpu_s=float(ticks[-1, 0]),
        train_wall_s=float(ticks[-1, 1] - ticks[0, 1] + np.diff(ticks[:2, 1])[0]),
        model_path=str(model_path),
        budget_s=budget,
        clock=clock,
        threads=threads,
        measured=time.strftime("%Y-%m-%d %H:%M"),
        note="finished by --finish: training seconds up to the last epoch's end",
    )
    (root / "result.json").write_text(json.dumps(result, indent=2))
    return result


def stored_results(out: Path) -> list:
    """Every result stored under ``out`` (MACE first, then our recipes in the order of RECIPES)."""
    results = []
    mace = out / "mace" / "result.json"
    if mace.is_file():
        results.append(json.loads(mace.read_text()))
    for recipe in RECIPES:
        path = out / "ours" / recipe / "result.json"
        if path.is_file():
            results.append(json.loads(path.read_text()))
    return results


if __name__ == "__main__":
    main()
