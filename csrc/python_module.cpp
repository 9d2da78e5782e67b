// The Python module dopamine_fast._C. Importing it loads the kernels' registrations (TORCH_LIBRARY_IMPL in
// csrc/cpu, csrc/cuda), linked into the same library; the module itself is empty, so it needs neither pybind11 nor
// libtorch_python (torch is imported, and its libraries loaded, before it).
#include <Python.h>

PyMODINIT_FUNC PyInit__C() {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "dopamine_fast._C", "dopamine_fast's compiled kernels", -1,
                               nullptr};
  return PyModule_Create(&module);
}
