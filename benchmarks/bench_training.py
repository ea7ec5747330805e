"""Training throughput, side by side in one run: `physml-md train` (Lightning) against a plain torch loop.

Both variants train the same model (``build_model`` with ``run.build_model_kwargs``) on the same batches in the
same order (``AtomsDataModule``'s training loader), with the same optimizer and learning rate, weighted loss
(``losses.component_errors``, loss-weight mixing included), gradient clipping and EMA, in the configuration's
dtype, on the same number of torch threads. The data are EMT-labelled Cu32 frames made by
examples/cu_emt/make_data.py in a temporary directory; validation is off (``trainer.limit_val_batches=0``).

An epoch is timed from ``on_train_epoch_start`` to ``on_train_epoch_end`` (in Lightning by the ``EpochTimer``
callback, which runs before the epoch-end metric reduction and checkpointing); the first ``warmup`` epochs are
dropped and the median of the rest is reported. The plain loop leaves out the learning-rate scheduler (one call
per epoch). Throughput counts structures of the training split per second.

    python benchmarks/bench_training.py --structures 200 --epochs 3 --warmup 1 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch
from lightning.pytorch import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))  # "bench_training.EpochTimer" must be importable

try:
    from physml_md.atomic_write import atomic_write_text
except ImportError:  # a checkout that was not `pip install -e`d
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from physml_md.atomic_write import atomic_write_text
from physml_md.config.load import Config, ConfigError, load_config  # noqa: E402
from physml_md.data import keys as K  # noqa: E402
from physml_md.export.checkpoint import load_checkpoint  # noqa: E402
from physml_md.learning.committee_training import lightning_quiet  # noqa: E402
from physml_md.models import build_model  # noqa: E402
from physml_md.training import run as runner  # noqa: E402
from physml_md.training.callbacks import LossWeightMixing  # noqa: E402
from physml_md.training.datamodule import AtomsDataModule  # noqa: E402
from physml_md.training.losses import component_errors  # noqa: E402
from physml_md.training.module import ema_decay  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "examples" / "cu_emt" / "config.toml"
MAKE_DATA = ROOT / "examples" / "cu_emt" / "make_data.py"
TEMPERATURES = (300.0, 600.0, 900.0, 1200.0)  # K, make_data.py's defaults
DATA_SEED = 0
VARIANTS = (("physml-md train", "lightning"), ("plain torch loop", "plain"))  # (label, key in run's result)


class EpochTimer(Callback):
    """Times every training epoch (on_train_epoch_start to on_train_epoch_end) and writes the durations (s)
    and the torch thread count, as JSON, to ``path`` when training ends."""

    def __init__(self, path: str):
        self.path = str(path)
        self.seconds: List[float] = []
        self.threads: List[int] = []
        self._start: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.threads.append(torch.get_num_threads())
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)

    def on_train_end(self, trainer, pl_module) -> None:
        atomic_write_text(self.path, json.dumps({"seconds": self.seconds, "threads": self.threads}))


def make_data(out: Path, n_structures: int) -> Path:
    """EMT-labelled Cu32 frames from examples/cu_emt/make_data.py (not a package: loaded from its file)."""
    spec = importlib.util.spec_from_file_location("cu_emt_make_data", MAKE_DATA)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_data(out, n_structures, DATA_SEED, TEMPERATURES)


def benchmark_config(
    config_path: Path, data: Path, work_dir: Path, max_epochs: int, overrides: Sequence[str] = ()
) -> Config:
    """The configuration at ``config_path`` set up for timing: ``data`` as source, outputs in ``work_dir``, no
    validation (the runner then monitors train/ metrics), no progress bar or summary, ``max_epochs`` epochs, the
    EpochTimer writing work_dir/epochs.json.
    """
    timer = {"class_path": "bench_training.EpochTimer", "init_args": {"path": str(work_dir / "epochs.json")}}
    settings = [
        f"data.source={json.dumps(str(data))}",
        f"trainer.default_root_dir={json.dumps(str(work_dir / 'runs'))}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.limit_val_batches=0",
        f"trainer.max_epochs={max_epochs}",
        f"trainer.callbacks=[{{class_path = {json.dumps(timer['class_path'])}, "
        f"init_args = {{path = {json.dumps(timer['init_args']['path'])}}}}}]",
    ]
    return load_config(config_path, [*overrides, *settings])


def lightning_epochs(config: Config, work_dir: Path) -> Tuple[List[float], runner.TrainResult]:
    """Run ``runner.train(config)`` (what `physml-md train` calls); the epoch durations (s) and its result."""
    with lightning_quiet():
        result = runner.train(config, verbose=False)
    timings = json.loads((work_dir / "epochs.json").read_text())
    if any(n != torch.get_num_threads() for n in timings["threads"]):
        raise RuntimeError(f"Lightning epochs ran on {timings['threads']} torch threads, expected the same as here")
    return timings["seconds"], result


@dataclass
class PlainRun:
    """What ``plain_epochs`` returns: epoch durations (s), the trained model, its EMA (or None), training size."""

    seconds: List[float]
    model: torch.nn.Module
    ema: torch.nn.Module | None
    n_train: int


def plain_epochs(config: Config, epochs: int) -> PlainRun:
    """Train like ``PotentialModule`` does, in a hand-written torch loop, for ``epochs`` epochs."""
    datamodule = AtomsDataModule(**runner.datamodule_kwargs(config))
    datamodule.setup("fit")
    model = build_model(**runner.build_model_kwargs(config, datamodule))
    training = config.training
    loss = training.loss_parameter
    components = list(loss.loss_components)
    mixing = LossWeightMixing.from_config(loss)
    optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[training.optimizer]
    optimizer = optimizer_class(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    clip_value = config.trainer.get("gradient_clip_val")
    clip_by_value = config.trainer.get("gradient_clip_algorithm") == "value"
    decay = training.ema.decay
    ema = copy.deepcopy(model).requires_grad_(False) if decay > 0.0 else None
    updates = 0  # EMA updates so far: the warm-up of PotentialModule (ema_decay)
    loader = datamodule.train_dataloader()
    model.train()
    seconds = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        mixing.epochs_done = epoch
        weights = mixing.weights()
        start = time.perf_counter()
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            outputs = model(batch)
            errors = component_errors(components, outputs, batch, loss.per_atom_energy)
            total = outputs[K.ENERGY].sum() * 0.0
            for name, (error, _, _) in errors.items():
                total = total + weights[name] * error
            total.backward()
            if clip_value is not None:
                if clip_by_value:
                    torch.nn.utils.clip_grad_value_(model.parameters(), clip_value)
                else:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_value)
            optimizer.step()
            if ema is not None:
                with torch.no_grad():
                    current = [p.detach() for p in model.parameters()]
                    torch._foreach_lerp_(list(ema.parameters()), current, 1.0 - ema_decay(decay, updates))
                updates += 1
        seconds.append(time.perf_counter() - start)
    return PlainRun(seconds, model, ema, len(loader.dataset))


def weight_difference(checkpoint_path: Path, plain: PlainRun) -> float | None:
    """Largest |difference| between the weights (and EMA weights) in Lightning's checkpoint and the plain loop's
    after the same epochs; None without that checkpoint. Near zero when both trained the same way."""
    if not checkpoint_path.is_file():
        return None
    state = load_checkpoint(checkpoint_path)["state_dict"]
    modules = {"model": plain.model, "ema": plain.ema} if plain.ema is not None else {"model": plain.model}
    largest = 0.0
    for prefix, module in modules.items():
        for name, value in module.state_dict().items():
            if value.is_floating_point():
                other = state[f"{prefix}.{name}"].to(value.dtype)
                largest = max(largest, float((value - other).abs().max()))
    return largest


def _summary(seconds: List[float], warmup: int, n_train: int) -> Dict[str, Any]:
    timed = seconds[warmup:]
    median = statistics.median(timed)
    return {"epoch_seconds": seconds, "epochs_timed": len(timed), "median_s": median, "per_s": n_train / median}


def check_arguments(structures: int, epochs: int, warmup: int, threads: int) -> None:
    """ValueError naming the bad argument (structures, epochs and threads >= 1, warmup >= 0)."""
    for name, value, minimum in (("structures", structures, 1), ("epochs", epochs, 1), ("warmup", warmup, 0)):
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")


def run(
    structures: int = 200,
    epochs: int = 3,
    warmup: int = 1,
    threads: int = 2,
    config_path: os.PathLike | str = DEFAULT_CONFIG,
    overrides: Sequence[str] = (),
) -> Dict[str, Any]:
    """Time both variants on ``structures`` new frames (``overrides``: extra "section.key=value" settings).

    Returns {"lightning": ..., "plain": ...} (epoch_seconds, epochs_timed, median_s, per_s), "ratio"
    (Lightning throughput / plain throughput), "weight_difference" (see ``weight_difference``) and the setup
    (structures, warmup, n_train, batch_size, dtype, threads, cpu_count, config).
    """
    check_arguments(structures, epochs, warmup, threads)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
            work_dir = Path(tmp)
            data = make_data(work_dir / "cu_emt.extxyz", structures)
            config = benchmark_config(Path(config_path), data, work_dir, warmup + epochs, overrides)
            lightning_seconds, trained = lightning_epochs(config, work_dir)
            plain_run = plain_epochs(config, warmup + epochs)
            last = trained.run_dir / "checkpoints" / "last.ckpt"
            difference = weight_difference(last, plain_run)
    finally:
        torch.set_num_threads(previous_threads)
    n_train = plain_run.n_train
    lightning = _summary(lightning_seconds, warmup, n_train)
    plain = _summary(plain_run.seconds, warmup, n_train)
    return {
        "lightning": lightning,
        "plain": plain,
        "ratio": lightning["per_s"] / plain["per_s"],
        "weight_difference": difference,
        "structures": structures,
        "warmup": warmup,
        "n_train": n_train,
        "batch_size": config.data.train.batch_size,
        "dtype": config.model.dtype,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "config": str(config_path),
    }


def format_table(result: Dict[str, Any]) -> str:
    """``run``'s result as a table, with every epoch's time below it and the same-training check."""
    header = f"{'variant':<18} {'epochs timed':>12} {'median s/epoch':>15} {'structures/s':>13} {'ratio':>6}"
    lines = [
        f"training throughput ({Path(result['config']).name}, {result['dtype']}, batch size {result['batch_size']}, "
        f"{result['n_train']} training structures of {result['structures']}, validation off)",
        header,
        "-" * len(header),
    ]
    times = []
    for name, key in VARIANTS:
        row = result[key]
        ratio = row["per_s"] / result["plain"]["per_s"]
        lines.append(
            f"{name:<18} {row['epochs_timed']:>12} {row['median_s']:>15.3f} {row['per_s']:>13.1f} {ratio:>6.2f}"
        )
        seconds = " ".join(f"{t:.2f}" for t in row["epoch_seconds"])
        times.append(f"{name} epochs (s, the first {result['warmup']} not timed): {seconds}")
    lines += times
    difference = result["weight_difference"]
    shown = "n/a (no last.ckpt)" if difference is None else f"{difference:.1e}"
    lines.append(f"same training check: max |weight difference| after the last epoch {shown}")
    lines.append(
        f"ratio = throughput / plain loop's; torch threads {result['threads']}, machine threads {result['cpu_count']}"
    )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=int, default=200, help="frames made with make_data (default 200)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first epochs (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both variants (default 2)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training configuration (default: example)")
    args = parser.parse_args()
    try:
        check_arguments(args.structures, args.epochs, args.warmup, args.threads)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        result = run(args.structures, args.epochs, args.warmup, args.threads, args.config)
    except ConfigError as exc:  # the configuration file or its values
        parser.error(str(exc))
    print(format_table(result))


if __name__ == "__main__":
    main()
