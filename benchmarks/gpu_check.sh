#!/usr/bin/env bash
# GPU check (issue 16): fit the simulated 10,000-pair table (10 rows a pair,
# centered = "auto") on the GPU and on the CPU, 2 chains x DRAWS + DRAWS, and print both
# wall times and the worst gap R-hat / bulk ESS, one JSON line per device.
#
#   bash benchmarks/gpu_check.sh [PAIRS] [DRAWS]     # defaults: 10000 pairs, 500 draws
#
# Needs an installed environment with a CUDA JAX (`pip install -e . 'jax[cuda12]'`; the
# machine that runs it may have no network). Chains are vectorised on the GPU and one
# XLA host device a chain on the CPU (inference._chain_method). Where no GPU is visible
# the GPU line reports the error and the CPU line still runs.
set -uo pipefail
pairs=${1:-10000}
draws=${2:-500}
rows=$((pairs * 10))
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python}
echo "# gpu_check: ${pairs} pairs x 10 rows, 2 chains x ${draws} + ${draws}, $(date -u +%F)"
"$py" -c "import jax; print('# jax', jax.__version__, 'devices:', jax.devices())" || true
for device in gpu cpu; do
    if ! "$py" "$here/fit_scaling.py" --one "$pairs" "$rows" --mode auto \
            --draws "$draws" --device "$device" | tail -n 1; then
        echo "{\"device\": \"$device\", \"error\": \"fit failed (see above)\"}"
    fi
done
