#!/usr/bin/env bash
# A Python 3.12 environment for torch-sim, so that a metatomic file exported by physml-md runs batched MD there
# (metatomic-torchsim needs Python >= 3.12; physml-md's .venv is 3.11). physml-md itself is not installed in it:
# the file is all torch-sim needs (examples/torchsim_replicas.py; tests/integrations/test_torchsim.py).
# Usage: scripts/setup_torchsim.sh [PYTHON3.12]   (`make torchsim` calls it)
#   PYTHON3.12: default $TORCHSIM_PYTHON, else python3.12 on PATH, else pyenv's 3.12.1.
# Creates $TORCHSIM_VENV (default .venv-torchsim) with the pins below; metatomic-torch is pinned to the version in
# .venv (the file's writer), torch to the version of .venv too: pip then resolves in one go and cannot swap torch
# for another (the environment is 7.6 GB, most of it torch's CUDA libraries; about 3 min). torch-sim-atomistic
# 0.6.2: metatomic-torchsim 0.1.7 needs >= 0.5. Nothing when the stamp says these pins are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TORCHSIM_VENV:-.venv-torchsim}"
STAMP="$VENV/.physml-md-torchsim"
PINS=(
    "torch==2.9.1"
    "metatomic-torch==0.1.19"
    "metatomic-torchsim==0.1.7"
    "torch-sim-atomistic==0.6.2"
    "ase"
)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "${PINS[*]}" ]; then
    echo "$VENV is up to date (${PINS[*]})"
    exit 0
fi

BASE="${1:-${TORCHSIM_PYTHON:-}}"
if [ -z "$BASE" ]; then
    for candidate in python3.12 "$HOME/.pyenv/versions/3.12.1/bin/python"; do
        # a pyenv shim is on PATH even where it cannot run: take the first that runs
        if "$candidate" -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1; then
            BASE="$candidate"
            break
        fi
    done
fi
if [ -z "$BASE" ] || ! "$BASE" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
    echo "metatomic-torchsim needs Python >= 3.12: give its path (scripts/setup_torchsim.sh /path/to/python3.12)" >&2
    exit 2
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    "$BASE" -m venv "$VENV"
fi
# one resolution with every pin: pip refuses rather than swapping torch for another version
"$VENV/bin/python" -m pip install --progress-bar off "${PINS[@]}"
"$VENV/bin/python" - <<'EOF'
import torch, metatomic.torch, metatomic_torchsim, torch_sim
print("torch", torch.__version__, "| metatomic-torch", metatomic.torch.__version__, "| torch-sim", torch_sim.__version__)
EOF
echo "${PINS[*]}" >"$STAMP"
echo "$VENV ready in $(($(date +%s) - start)) s"
