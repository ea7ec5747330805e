"""Active learning end to end: 30 GFN2-xTB frames of ethanol at 300 K -> a committee potential that survives 500 K.

    python examples/active_learning/run.py                 # the defaults (see config.toml)
    python examples/active_learning/run.py --out /tmp/al --start-frames 12 --test-frames 6 --rounds 2 \
        --epochs 3 --md-time "20 fs"                       # a smoke run (the test does this)

1. Data (GFN2-xTB through tblite, examples/ethanol_xtb/make_data.py's Langevin MD): ``--start-frames`` frames at
   300 K, the starting data set, and ``--test-frames`` frames of an independent run at 500 K, never trained on:
   the test set of every round. Made only when ``--out`` does not hold them already.
2. The loop (``physml_md.learning.loop``, config.toml's [learning] table): each round trains a
   committee of 3 on the data so far, runs 500 K NVT MD with it, labels the frames where the members disagree
   most with GFN2-xTB and adds them; it stops when a whole MD run stays under the uncertainty threshold.
3. The round table: training frames, MD time and stability, largest uncertainty, frames added, and the committee's
   force error on the independent 500 K frames, round by round; summary.json holds the rounds' records.

Every output goes under ``--out`` (default examples/active_learning/output/): data/, loop/round_<k>/ (see
physml_md/learning/loop.py), summary.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from ase.io import read

from physml_md.atomic_write import atomic_path, atomic_write_text
from physml_md.config.load import load_config
from physml_md.learning.loop import learn

HERE = Path(__file__).resolve().parent
START_NAME = "ethanol_300K_start.extxyz"
TEST_NAME = "ethanol_500K_test.extxyz"
SAMPLE_EVERY = 40  # xTB MD steps (0.5 fs) between frames: 20 fs apart


def _make_data_module():
    spec = importlib.util.spec_from_file_location("ethanol_xtb_make_data", HERE.parent / "ethanol_xtb" / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_files(folder: Path, start_frames: int, test_frames: int, seed: int) -> tuple:
    """(start, test) extxyz files in ``folder``, made with GFN2-xTB unless they hold these frame counts already."""
    from ase.io import write

    make_data = _make_data_module()
    wanted = ((folder / START_NAME, start_frames, 300.0, seed), (folder / TEST_NAME, test_frames, 500.0, seed + 1))
    for path, count, temperature, frame_seed in wanted:
        if path.is_file() and len(read(path, ":")) == count and read(path).info.get("seed") == frame_seed:
            continue
        with make_data.openmp_threads(1):
            frames = make_data.sample_md(count, temperature, SAMPLE_EVERY, frame_seed)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            write(tmp, frames, format="extxyz")
    return folder / START_NAME, folder / TEST_NAME


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "output"), help="output folder (default: %(default)s)")
    parser.add_argument("--start-frames", type=int, default=30, help="300 K xTB frames to start from (30)")
    parser.add_argument("--test-frames", type=int, default=40, help="independent 500 K xTB test frames (40)")
    parser.add_argument("--rounds", type=int, default=None, help="most rounds (default: config.toml's)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per member and round (config.toml's)")
    parser.add_argument("--md-time", default=None, help="MD per round, e.g. '1 ps' (config.toml's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the xTB data")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    begin = time.perf_counter()
    print(
        f"[1/2] GFN2-xTB data: {args.start_frames} frames at 300 K, {args.test_frames} test frames at 500 K", flush=True
    )
    start, test = data_files(out / "data", args.start_frames, args.test_frames, args.seed)
    overrides = [f'data.source="{start}"', f'trainer.default_root_dir="{out / "loop"}"']
    if args.epochs is not None:
        overrides.append(f"trainer.max_epochs={args.epochs}")
    overrides += [f'learning.structures="{start}"', f'learning.test_data="{test}"']
    if args.rounds is not None:
        overrides.append(f"learning.rounds={args.rounds}")
    if args.md_time is not None:
        overrides.append(f'learning.md_time="{args.md_time}"')
    config = load_config(HERE / "config.toml", overrides)
    learning = config.learning
    print(
        f"[2/2] active learning: up to {learning.rounds} rounds, committee of {config.training.committee}", flush=True
    )
    result = learn(config)  # prints each round's line of the table as it finishes
    first, last = result.rounds[0], result.rounds[-1]
    print(
        f"{'converged' if result.converged else 'not converged'} after {len(result.rounds)} round(s) in "
        f"{time.perf_counter() - begin:.0f} s; 500 K test force MAE {first['test_force_mae_mev_per_angstrom']:.1f} -> "
        f"{last['test_force_mae_mev_per_angstrom']:.1f} meV/A; last committee: {result.model_path}"
    )
    atomic_write_text(
        out / "summary.json",
        json.dumps({"converged": result.converged, "rounds": result.rounds, "model": str(result.model_path)}, indent=2),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
