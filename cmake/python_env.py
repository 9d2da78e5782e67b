"""What CMakeLists.txt needs from the Python environment it builds for, printed as CMake ``set()`` commands:
torch's CMake prefix and CUDA version, the compute capabilities of the visible GPUs (``--gpus``), and the header
folders and libnvrtc of the pip ``nvidia-*`` wheels that CUDA builds of torch take some headers and libraries from.
"""

import argparse
import glob
import os

import torch


def _cmake(name: str, value) -> str:
    if isinstance(value, (list, tuple)):
        value = ";".join(value)
    return f'set({name} "{value}")'.replace("\\", "/")


def _nvidia_wheel_paths(pattern: str) -> list:
    try:
        import nvidia
    except ImportError:
        return []
    return sorted({p for base in getattr(nvidia, "__path__", []) for p in glob.glob(os.path.join(base, pattern))})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", action="store_true", help="also list the compute capabilities of the GPUs")
    args = parser.parse_args()
    lines = [_cmake("DF_TORCH_CMAKE_PREFIX", torch.utils.cmake_prefix_path),
             _cmake("DF_TORCH_CUDA", torch.version.cuda or ""),
             _cmake("DF_NVIDIA_INCLUDE_DIRS", [d for d in _nvidia_wheel_paths("*/include") if os.path.isdir(d)]),
             _cmake("DF_NVIDIA_NVRTC", (_nvidia_wheel_paths("*/lib/libnvrtc.so*") + [""])[0])]
    if args.gpus:
        caps = []
        if torch.version.cuda and torch.cuda.is_available():
            caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        lines.append(_cmake("DF_GPU_ARCH_LIST", [f"{major}.{minor}" for major, minor in caps]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
