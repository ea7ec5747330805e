#!/usr/bin/env bash
# Every CUDA-only test and the GPU benchmark, in one go, on a machine with an NVIDIA GPU (under 8 minutes on an
# H100). `make gpu-check` runs it with the project's .venv; any other Python that has physml-md's requirements
# works too: `scripts/gpu_check.sh /path/to/python [OUTPUT_FOLDER]`.
# The tests are those marked `gpu` (tests.helpers.requires_cuda marks them): they skip themselves, with the
# reason, where torch sees no CUDA device, so on such a machine this script stops with a sentence instead.
set -uo pipefail
cd "$(dirname "$0")/.."
python="${1:-.venv/bin/python}"
out="${2:-gpu_check_output}"
mkdir -p "$out"
if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu-check: torch ($python) sees no CUDA device; run this on a machine with an NVIDIA GPU" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null | tee "$out/gpu.txt"
status=0
# -p no:cacheprovider: the checkout may be read-only or shared
"$python" -m pytest -m gpu -ra -p no:cacheprovider --junitxml="$out/gpu_tests.xml" 2>&1 | tee "$out/gpu_tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
"$python" benchmarks/bench_gpu.py ${GPU_BENCH_ARGS:-} 2>&1 | tee "$out/bench_gpu.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "gpu-check: logs in $out/ (exit $status)"
exit $status
