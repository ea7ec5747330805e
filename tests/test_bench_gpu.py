"""benchmarks/bench_gpu.py on a tiny budget (needs a CUDA device; skipped without one)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_gpu  # noqa: E402

from tests.helpers import requires_cuda  # noqa: E402


@requires_cuda
def test_model_row_times_gpu_and_cpu_side_by_side():
    row = bench_gpu.model_row("painn", 32, "float32", repeats=2)
    assert row["atoms"] == 32 and row["gpu_ms"] > 0 and row["cpu_ms"] > 0 and row["gpu_mb"] > 0
