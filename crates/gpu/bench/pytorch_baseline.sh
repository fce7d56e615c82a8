#!/usr/bin/env bash
# The PyTorch CPU baseline for `cargo run --release -p trainmesh-gpu --example bench`.
#
#   crates/gpu/bench/pytorch_baseline.sh [--threads 1,2] [--steps 40] [--reps 3] [--probe]
#   crates/gpu/bench/pytorch_baseline.sh --transformer --dir DIR [--quality] [--speed --threads N]
#       (pytorch_transformer.py: the transformer reference, see its header)
#
# Makes a virtualenv (TRAINMESH_TORCH_VENV, default target/torch-venv in the workspace) with
# PyTorch's CPU wheel, from PyTorch's own index when it is reachable and from PyPI otherwise, then
# runs pytorch_baseline.py with OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep instead of
# spinning) and with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset for this command only (some machines
# set them to pin OpenBLAS to a slower kernel). The last line printed is one JSON object.
# TRAINMESH_TORCH_NO_INSTALL=1: fail (exit 3) instead of installing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="${TRAINMESH_TORCH_VENV:-$root/target/torch-venv}"
py="$venv/bin/python"
if ! "$py" -c 'import torch, numpy, safetensors' >/dev/null 2>&1; then
    if [[ "${TRAINMESH_TORCH_NO_INSTALL:-0}" == 1 ]]; then
        echo "pytorch_baseline: no torch in $venv (run $0 once to install it)" >&2
        exit 3
    fi
    echo "pytorch_baseline: installing torch into $venv" >&2
    python3 -m venv "$venv"
    "$py" -m pip install -q --upgrade pip >&2
    if ! "$py" -m pip install -q --retries 1 --timeout 20 torch --index-url https://download.pytorch.org/whl/cpu >&2; then
        echo "pytorch_baseline: PyTorch's CPU index unreachable; installing torch from PyPI" >&2
        "$py" -m pip install -q torch >&2
    fi
    "$py" -m pip install -q numpy safetensors >&2
fi
script="$here/pytorch_baseline.py"
if [[ "${1:-}" == --transformer ]]; then
    shift
    script="$here/pytorch_transformer.py"
fi
exec env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE \
    "$py" -W ignore "$script" "$@"
