"""Builds the native module ``dopamine_fast._C`` by running CMake (``CMakeLists.txt`` says what is compiled and
how: sources, flags, the CUDA toolkit search and the GPU targets) with Ninja, into the package.

Environment switches:
  DOPAMINE_FAST_NO_NATIVE_BUILD=1  build no extension (pure-Python install; the PyTorch reference serves every op)
  DOPAMINE_FAST_NO_CUDA_BUILD=1    build the CPU kernels only (the same as DOPAMINE_FAST_CUDA=OFF)
  DOPAMINE_FAST_CUDA=AUTO|ON|OFF   the CUDA kernels (CMakeLists.txt): AUTO (default) builds them for the GPU present
                                   or TORCH_CUDA_ARCH_LIST, ON also without either (portable targets)
  TORCH_CUDA_ARCH_LIST, CUDA_HOME  the GPU targets and the toolkit, read by CMakeLists.txt; what was built is
                                   recorded beside the module, in dopamine_fast/_build_config.py
  MAX_JOBS                         parallel compile jobs (default: every core)
  DOPAMINE_FAST_TESTS=1            also build the C++ tests; run them with `ctest --test-dir <build folder>`
  DOPAMINE_FAST_BUILD_DIR          the CMake build folder, relative to this one (default: <build_temp>/cmake, e.g.
                                   build/temp.linux-x86_64-cpython-311/cmake; pip's editable installs use a
                                   temporary one); scripts/setup.sh keeps it in build/cmake
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _version() -> str:
    with open(os.path.join(ROOT, "dopamine_fast", "__init__.py")) as f:
        return re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', f.read(), re.M).group(1)


def _tool(name: str) -> str:
    """``name`` from this interpreter's folder (where pip puts the cmake and ninja packages of a venv that is not
    activated), else from PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    found = beside if os.access(beside, os.X_OK) else shutil.which(name)
    if found is None:
        sys.exit(f"dopamine_fast: building the native module needs {name} (pip install cmake ninja), or set "
                 "DOPAMINE_FAST_NO_NATIVE_BUILD=1 for a pure-Python install")
    return found


class CMakeBuild(build_ext):
    """Configures and builds CMakeLists.txt; its module and build record are written into the package folder."""

    def build_extension(self, ext: Extension) -> None:
        package_dir = os.path.dirname(os.path.abspath(self.get_ext_fullpath(ext.name)))
        build_dir = os.environ.get("DOPAMINE_FAST_BUILD_DIR") or os.path.join(self.build_temp, "cmake")
        build_dir = os.path.join(ROOT, build_dir)
        cuda = "OFF" if _flag("DOPAMINE_FAST_NO_CUDA_BUILD") else os.environ.get("DOPAMINE_FAST_CUDA", "AUTO")
        cmake = _tool("cmake")
        subprocess.run([cmake, "-S", ROOT, "-B", build_dir, "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}",
                        f"-DPython_EXECUTABLE={sys.executable}", f"-DDOPAMINE_FAST_PACKAGE_DIR={package_dir}",
                        f"-DDOPAMINE_FAST_CUDA={cuda.upper()}",
                        f"-DDOPAMINE_FAST_TESTS={'ON' if _flag('DOPAMINE_FAST_TESTS') else 'OFF'}"], check=True)
        jobs = os.environ.get("MAX_JOBS") or str(os.cpu_count() or 1)
        subprocess.run([cmake, "--build", build_dir, "--parallel", jobs] + (["--clean-first"] if self.force else []),
                       check=True)
        self._built_package_dir = package_dir

    def copy_extensions_to_source(self) -> None:
        # --inplace and editable installs: setuptools copies the module from the build folder into the source tree;
        # its build record goes with it.
        super().copy_extensions_to_source()
        self.copy_file(os.path.join(self._built_package_dir, "_build_config.py"),
                       os.path.dirname(self.get_ext_fullpath("dopamine_fast._C")))


if _flag("DOPAMINE_FAST_NO_NATIVE_BUILD"):
    print("dopamine_fast: DOPAMINE_FAST_NO_NATIVE_BUILD set, building no native module", file=sys.stderr)
    ext_modules, cmdclass = [], {}
else:
    ext_modules, cmdclass = [Extension("dopamine_fast._C", sources=[])], {"build_ext": CMakeBuild}

setup(
    version=_version(),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
