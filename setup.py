"""Builds the native module ``dopamine_fast._C``: the C++ CPU kernels always, the CUDA kernels when they can be.

Environment switches:
  DOPAMINE_FAST_NO_NATIVE_BUILD=1  build no extension (pure-Python install; the PyTorch reference serves every op)
  DOPAMINE_FAST_NO_CUDA_BUILD=1    build the CPU kernels only
  CUDA_HOME                        the CUDA toolkit to use (otherwise nvcc is looked for, see _find_cuda_home; the
                                   build log and dopamine_fast/_build_config.py say which one was used)
  TORCH_CUDA_ARCH_LIST             GPU architectures, e.g. "9.0" (default: the GPUs present at build time, else
                                   PORTABLE_CUDA_ARCH_LIST below). The list built is recorded beside the
                                   module, in dopamine_fast/_build_config.py, so that the package can tell
                                   at import whether the GPU it runs on has a kernel image (else Triton or
                                   the reference serves)
  MAX_JOBS                         parallel compile jobs (read by torch.utils.cpp_extension)
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# A100 (8.0), RTX 30xx / A10 / A40 (8.6), L4 / L40 / RTX 40xx (8.9), H100 / H200 (9.0); PTX of 9.0 for newer GPUs.
PORTABLE_CUDA_ARCH_LIST = "8.0;8.6;8.9;9.0+PTX"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _version() -> str:
    with open(os.path.join(ROOT, "dopamine_fast", "__init__.py")) as f:
        return re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', f.read(), re.M).group(1)


def _sources(pattern: str) -> list:
    # Relative paths: setuptools rejects absolute source paths in some install modes.
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _find_cuda_home():
    """The CUDA toolkit directory, or None. The one search for it: scripts/setup.sh and bench/gpu/run.sh leave it
    to this function, and the build log (and dopamine_fast/_build_config.py) says which toolkit it chose.

    ``which nvcc`` may be a wrapper script outside any toolkit (e.g. /usr/local/bin/nvcc exec-ing the real one),
    so its parent is trusted only when it holds include/cuda_runtime.h; otherwise the usual install places are
    searched, newest first.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return home

    def version_key(path):
        return [int(n) for n in re.findall(r"\d+", path)]

    candidates = sorted(glob.glob("/usr/local/cuda*/bin/nvcc") + glob.glob("/opt/cuda*/bin/nvcc"),
                        key=version_key, reverse=True)
    for nvcc in candidates:
        home = os.path.dirname(os.path.dirname(nvcc))
        if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return home
    return None


def _pip_cuda_include_dirs() -> list:
    """Header dirs of the pip ``nvidia-*`` wheels that CUDA builds of torch include (cu13 layout and older)."""
    try:
        import nvidia
    except ImportError:
        return []
    dirs = []
    for base in getattr(nvidia, "__path__", []):
        dirs += glob.glob(os.path.join(base, "cu*", "include")) + glob.glob(os.path.join(base, "*", "include"))
    return sorted({d for d in dirs if os.path.isdir(d)})


def _cpu_flags() -> list:
    # The C++ standard is left to torch.utils.cpp_extension (it follows the torch version).
    # Portable flags only (the wheel may run on another x86-64 machine): the noise loops carry their own
    # AVX2/AVX-512 clones (csrc/cpu/normals.cpp). -fno-math-errno lets sqrt vectorise. -fopenmp is needed because
    # at::parallel_for is inlined from torch's headers as an OpenMP loop: without it the kernels run on one core.
    if sys.platform == "win32":
        return ["/O2", "/openmp"]
    return ["-O3", "-fopenmp", "-fno-math-errno"]


def _cuda_arch_list(torch) -> str:
    """TORCH_CUDA_ARCH_LIST when set; else the compute capabilities of the GPUs this machine has; else portable."""
    given = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if given:
        return given
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return ";".join(f"{major}.{minor}" for major, minor in caps)
    return PORTABLE_CUDA_ARCH_LIST


def _recording_build_ext(base, cuda_arch_list, cuda_home):
    """``base`` (torch's BuildExtension) that also writes, beside the built module, what its CUDA kernels were
    compiled for (the package reads it to tell whether the GPU at hand has a kernel image) and with which toolkit."""

    class BuildExt(base):
        def run(self):
            super().run()
            folder = os.path.dirname(self.get_ext_fullpath("dopamine_fast._C"))
            with open(os.path.join(folder, "_build_config.py"), "w") as f:
                f.write("# Written by setup.py when it built dopamine_fast._C (not tracked by git).\n"
                        f"CUDA_ARCH_LIST = {cuda_arch_list!r}  # of the CUDA kernels; None: none built\n"
                        f"CUDA_HOME = {cuda_home!r}  # the toolkit that compiled them (setup.py's _find_cuda_home)\n")
    return BuildExt


def _extensions():
    if _flag("DOPAMINE_FAST_NO_NATIVE_BUILD"):
        print("dopamine_fast: DOPAMINE_FAST_NO_NATIVE_BUILD set, building no native module", file=sys.stderr)
        return [], {}
    import torch

    sources = _sources("csrc/ops.cpp") + _sources("csrc/cpu/*.cpp")
    cuda_sources = _sources("csrc/cuda/*.cu")
    cuda_home = None
    if not _flag("DOPAMINE_FAST_NO_CUDA_BUILD") and torch.version.cuda and cuda_sources:
        cuda_home = _find_cuda_home()
    if cuda_home is not None:
        # torch.utils.cpp_extension reads CUDA_HOME when it is imported (next line); it must agree with the toolkit
        # found (it is also set on the module below, in case something imported it earlier).
        os.environ["CUDA_HOME"] = cuda_home
    from torch.utils import cpp_extension

    if cuda_home is None and cuda_sources and not _flag("DOPAMINE_FAST_NO_CUDA_BUILD"):
        print("dopamine_fast: no CUDA toolkit or CPU-only torch, building the CPU kernels only", file=sys.stderr)

    include_dirs = [os.path.join(ROOT, "csrc")]
    extra = {"cxx": _cpu_flags()}
    link_args = [] if sys.platform == "win32" else ["-fopenmp"]
    if cuda_home is None:
        ext = cpp_extension.CppExtension("dopamine_fast._C", sources, include_dirs=include_dirs,
                                         extra_compile_args=extra, extra_link_args=link_args)
    else:
        cpp_extension.CUDA_HOME = cuda_home
        os.environ["TORCH_CUDA_ARCH_LIST"] = _cuda_arch_list(torch)
        print(f"dopamine_fast: CUDA kernels for TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}, "
              f"with the toolkit at CUDA_HOME={cuda_home}", file=sys.stderr)
        include_dirs += _pip_cuda_include_dirs()
        extra["nvcc"] = ["-O3"]
        ext = cpp_extension.CUDAExtension("dopamine_fast._C", sources + cuda_sources, include_dirs=include_dirs,
                                          extra_compile_args=extra, extra_link_args=link_args)
    arch_list = None if cuda_home is None else os.environ["TORCH_CUDA_ARCH_LIST"]
    return [ext], {"build_ext": _recording_build_ext(cpp_extension.BuildExtension, arch_list, cuda_home)}


ext_modules, cmdclass = _extensions()

setup(
    version=_version(),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
