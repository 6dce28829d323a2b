// The fastclip operator library. Each op declares its schema in csrc/<op>.cpp with TORCH_LIBRARY_FRAGMENT and
// registers its kernels in csrc/cpu/<op>.cpp and csrc/cuda/<op>.cu; this file only makes the library exist and
// makes `import fastclip._C` possible (the ops are reached through torch.ops.fastclip, not through this module).
// The module also carries what the build compiled (build_info.h, written by setup.py), so that the dispatcher
// and `python -m fastclip.info` know which GPUs the CUDA kernels have machine code or PTX for.
#include <Python.h>
#include <torch/library.h>

#include "build_info.h"

TORCH_LIBRARY(fastclip, m) {}

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "fastclip compiled operators", -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  // cuda_archs: "8.0;8.6;9.0+PTX" as compiled, "" for a CPU-only build; cuda_note: why the CUDA part was left out.
  if (PyModule_AddStringConstant(module, "cuda_archs", FASTCLIP_BUILD_CUDA_ARCHS) < 0 ||
      PyModule_AddStringConstant(module, "cuda_version", FASTCLIP_BUILD_CUDA_VERSION) < 0 ||
      PyModule_AddStringConstant(module, "cuda_note", FASTCLIP_BUILD_CUDA_NOTE) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}
