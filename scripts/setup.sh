#!/usr/bin/env bash
# Set up a virtual environment in .venv with torch, Triton and the test tools, and build dopamine_fast into it
# (C++ CPU kernels always; CUDA kernels when a CUDA toolkit is found). Safe to run again.
#   DOPAMINE_FAST_TORCH=2.13.0   a CPU-only torch instead of the CUDA 13 build (no CUDA kernels then)
#   DOPAMINE_FAST_NO_NATIVE_BUILD=1 / DOPAMINE_FAST_NO_CUDA_BUILD=1   skip the native / CUDA build
#   TORCH_CUDA_ARCH_LIST=8.9     GPU targets (default: the GPU present, else a portable list; under CI=true 9.0)
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The package itself needs torch only; the tests also use the `experiments` extra (numpy, tqdm, matplotlib), scipy
# and Triton, and CI runs ruff (the version pinned here) before them.
python -m pip install -q "torch==${DOPAMINE_FAST_TORCH:-2.14.1}" triton numpy scipy pytest tqdm matplotlib \
    ruff==0.12.12 ninja pybind11 setuptools wheel

# The CUDA toolkit is left to setup.py (_find_cuda_home: CUDA_HOME, else nvcc's toolkit, else /usr/local/cuda*);
# the line it prints below, after the build, says which one it used.
export MAX_JOBS="${MAX_JOBS:-2}"
# Users get setup.py's default CUDA targets: the GPU present, else the portable list (8.0;8.6;8.9;9.0+PTX). CI has
# no GPU and 2 cores, where the portable list multiplies the CUDA compile time by about 3 (see README, Backends):
# it builds one architecture, enough to check that the kernels compile. DOPAMINE_FAST_CI_CUDA_ARCH changes it.
if [ -n "${CI:-}" ] && [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    export TORCH_CUDA_ARCH_LIST="${DOPAMINE_FAST_CI_CUDA_ARCH:-9.0}"
fi
echo "setup: torch $(python -c 'import torch; print(torch.__version__)'), CUDA_HOME=${CUDA_HOME:-<setup.py finds it>}," \
    "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-<setup.py default>}"
python -m pip install -q --no-build-isolation --no-deps -e .
python -c "import dopamine_fast as df; print('setup:', df.backends.native.build_summary())
print('setup: backends', df.backend_info())"
