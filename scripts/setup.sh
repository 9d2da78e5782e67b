#!/usr/bin/env bash
# Set up a virtual environment in .venv with torch, Triton and the test tools, and build dopamine_fast into it
# with CMake (CMakeLists.txt: C++ CPU kernels always; CUDA kernels for the GPU present or TORCH_CUDA_ARCH_LIST).
# Safe to run again: the CMake build folder (build/cmake) is kept, so a rerun recompiles what changed only.
#   DOPAMINE_FAST_TORCH=2.13.0   a CPU-only torch instead of the CUDA 13 build (no CUDA kernels then)
#   DOPAMINE_FAST_NO_NATIVE_BUILD=1 / DOPAMINE_FAST_NO_CUDA_BUILD=1   skip the native / CUDA build
#   TORCH_CUDA_ARCH_LIST=8.9     GPU targets (default: the GPU present, else none; under CI=true 9.0)
#   DOPAMINE_FAST_CUDA=ON        CUDA kernels without a GPU or an arch list (portable targets)
#   MAX_JOBS=2                   parallel compile jobs (default: every core)
#   DOPAMINE_FAST_TESTS=1        also build the C++ tests (ctest --test-dir build/cmake)
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The package itself needs torch only; the tests also use the `experiments` extra (numpy, tqdm, matplotlib), scipy
# and Triton, and CI runs ruff (the version pinned here) before them. The build needs CMake and Ninja.
python -m pip install -q "torch==${DOPAMINE_FAST_TORCH:-2.14.1}" triton numpy scipy pytest tqdm matplotlib \
    ruff==0.12.12 ninja setuptools wheel
# CMake 3.21 or newer: the system's, else pip's cmake package.
if ! cmake --version 2>/dev/null | python -c "import re, sys
found = re.search(r'version (\d+)\.(\d+)', sys.stdin.read())
sys.exit(not found or (int(found[1]), int(found[2])) < (3, 21))"; then
    python -m pip install -q "cmake>=3.21"
fi

# Without a GPU and an arch list CMake builds the CPU kernels only (a few minutes instead of many), and the build
# summary below says how to build the CUDA ones. CI has no GPU: it compiles the CUDA kernels for one architecture,
# enough to know that they compile (DOPAMINE_FAST_CI_CUDA_ARCH changes it).
if [ -n "${CI:-}" ] && [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    export TORCH_CUDA_ARCH_LIST="${DOPAMINE_FAST_CI_CUDA_ARCH:-9.0}"
fi
export DOPAMINE_FAST_BUILD_DIR="${DOPAMINE_FAST_BUILD_DIR:-build/cmake}"
echo "setup: torch $(python -c 'import torch; print(torch.__version__)'), $(cmake --version | head -1)," \
    "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-<the GPU present, if any>}"
python -m pip install -q --no-build-isolation --no-deps -e .
python -c "import dopamine_fast as df; print('setup:', df.backends.native.build_summary())
print('setup: backends', df.backend_info())"
