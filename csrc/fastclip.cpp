// The fastclip operator library. Each op declares its schema in csrc/<op>.cpp with TORCH_LIBRARY_FRAGMENT and
// registers its kernels in csrc/cpu/<op>.cpp and csrc/cuda/<op>.cu; this file only makes the library exist and
// makes `import fastclip._C` possible (the ops are reached through torch.ops.fastclip, not through this module).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(fastclip, m) {}

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "fastclip compiled operators", -1, nullptr};
  return PyModule_Create(&module_def);
}
}
