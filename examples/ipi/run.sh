#!/usr/bin/env bash
# NVE MD in i-PI with a physml-md metatomic file: i-PI (the server: integrator, thermostat, output) and i-PI's
# Python driver (the client: `i-pi-py_driver -m metatomic` evaluates the file) talk over a UNIX socket.
#   physml-md export run/model.ckpt model-metatomic.pt --format metatomic
#   examples/ipi/run.sh model-metatomic.pt [RUN_DIR] [STEPS]      (defaults: ipi_run, 100 steps of 2 fs)
# Needs `pip install 'physml-md[metatomic]'` (it brings ipi: the `i-pi` and `i-pi-py_driver` scripts beside
# $PYTHON, default the python on PATH; IPI_BIN=/folder/with/the/scripts overrides). The model must know Cu (the
# start structure, init.xyz: 32 fcc Cu atoms, a = 3.61 angstrom, ASE's rattle(0.05, seed=1), 12 decimals).
# Writes RUN_DIR/sim.out (step, time, conserved energy, temperature, potential energy), sim.for_0.bin (forces),
# sim.pos_0.xyz, and the two programs' logs; exits non-zero when either fails or the run takes over $IPI_TIMEOUT s.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ $# -lt 1 ]; then
    echo "usage: $0 MODEL.pt [RUN_DIR] [STEPS]" >&2
    exit 2
fi
MODEL="$(realpath "$1")"
RUN="${2:-ipi_run}"
STEPS="${3:-100}"
PY="$(command -v "${PYTHON:-python}")"
PY="$(realpath -s "$PY")"  # absolute (the run goes on in RUN_DIR), a venv's symlink kept
TIMEOUT="${IPI_TIMEOUT:-600}"
BIN="${IPI_BIN:-$(dirname "$(command -v "$PY")")}"
for script in i-pi i-pi-py_driver; do
    if [ ! -f "$BIN/$script" ]; then
        echo "no $script in $BIN: pip install 'physml-md[metatomic]' (or ipi), or set IPI_BIN" >&2
        exit 2
    fi
done

mkdir -p "$RUN"
RUN="$(realpath "$RUN")"
cp "$HERE/init.xyz" "$RUN/"
sed "s#<total_steps>[0-9]*</total_steps>#<total_steps>$STEPS</total_steps>#" "$HERE/input.xml" >"$RUN/input.xml"
cd "$RUN"
rm -f sim.* RESTART EXIT
PREFIX="$RUN/ipi_"  # the socket: $RUN/ipi_physml-md (a path under 108 characters)
SOCKET="${PREFIX}physml-md"
rm -f "$SOCKET"

"$PY" "$BIN/i-pi" -S "$PREFIX" input.xml >ipi.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do  # i-PI opens the socket once it has read the input (a few seconds)
    [ -S "$SOCKET" ] && break
    if ! kill -0 $SERVER 2>/dev/null; then
        echo "i-PI stopped before opening its socket: $RUN/ipi.log" >&2
        tail -20 ipi.log >&2
        exit 1
    fi
    sleep 0.1
done
[ -S "$SOCKET" ] || { echo "i-PI opened no socket at $SOCKET within 60 s" >&2; exit 1; }

"$PY" "$BIN/i-pi-py_driver" -u -a physml-md -S "$PREFIX" -m metatomic \
    -o "template=init.xyz,model=$MODEL" >driver.log 2>&1 &
CLIENT=$!
trap 'kill $SERVER $CLIENT 2>/dev/null || true' EXIT
# i-PI ends the run and tells the driver to exit; a driver that dies leaves i-PI waiting for another, and an i-PI
# that dies can leave the driver waiting on the socket: so watch both
deadline=$((SECONDS + TIMEOUT))
client_done=0
while kill -0 $SERVER 2>/dev/null; do
    if [ $client_done -eq 0 ] && ! kill -0 $CLIENT 2>/dev/null; then
        client_status=0
        wait $CLIENT || client_status=$?
        client_done=1  # exit 0: i-PI sent its exit message and is writing its last output
        if [ $client_status -ne 0 ]; then
            echo "the driver failed (exit $client_status): $RUN/driver.log" >&2
            tail -20 driver.log >&2
            exit 1
        fi
    fi
    if [ $SECONDS -ge $deadline ]; then
        echo "the run took over $TIMEOUT s (IPI_TIMEOUT): $RUN/ipi.log, $RUN/driver.log" >&2
        exit 1
    fi
    sleep 0.2
done
status=0
wait $SERVER || status=$?
if [ $status -ne 0 ] || ! grep -q "I-PI reports success" ipi.log; then
    echo "i-PI failed (exit $status): $RUN/ipi.log" >&2
    tail -20 ipi.log >&2
    exit 1
fi
for _ in $(seq 100); do  # the driver leaves on i-PI's exit message
    kill -0 $CLIENT 2>/dev/null || break
    sleep 0.1
done
trap - EXIT
kill $CLIENT 2>/dev/null || true
echo "i-PI ran $STEPS steps: $RUN/sim.out"
