"""Builds the one compiled extension, fastclip._C, from csrc/.

The C++ CPU sources are always compiled. The CUDA sources are compiled when a CUDA toolkit is found whose major
version matches the CUDA version torch was built with (fastclip/cuda_toolkit.py says where it looks). Knobs:
  FASTCLIP_SKIP_CUDA=1          build the CPU part only
  FASTCLIP_CUDA_ARCHS="9.0+PTX" compute capabilities to compile for (`;`, `,` or space separated; +PTX also embeds
                                PTX for newer GPUs); default fastclip.cuda_archs.DEFAULT_CUDA_ARCHS, less those the
                                nvcc at hand cannot compile
  CUDA_HOME                     where the toolkit is; otherwise CUDA_PATH, /usr/local/cuda or the `nvcc` on PATH
What was built (CUDA archs and version, or why the CUDA part was left out) is compiled into the extension, where
`python -m fastclip.info` and the op dispatcher read it.
"""

import glob
import importlib.util
import json
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _load_standalone(relative_path):
    """Execute one of fastclip's standard-library-only modules: fastclip itself is not importable before the build."""
    name = "_fastclip_setup_" + os.path.splitext(os.path.basename(relative_path))[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


cuda_archs = _load_standalone("fastclip/cuda_archs.py")
cuda_toolkit = _load_standalone("fastclip/cuda_toolkit.py")

# What this build compiles, written into build_info.h for csrc/fastclip.cpp (see BuildWithInfo).
BUILD_INFO = {"cuda_archs": "", "cuda_version": "", "cuda_note": ""}


def _say(message):
    print(f"[fastclip setup] {message}", file=sys.stderr)


def resolve_cuda_archs(toolkit):
    """FASTCLIP_CUDA_ARCHS (or the default), less the archs this toolkit's nvcc cannot compile."""
    from_env = os.environ.get("FASTCLIP_CUDA_ARCHS")
    text = from_env if from_env is not None else cuda_archs.DEFAULT_CUDA_ARCHS
    try:
        archs = cuda_archs.parse_cuda_archs(text, "FASTCLIP_CUDA_ARCHS" if from_env is not None else "DEFAULT_CUDA_ARCHS")
    except ValueError as exc:
        sys.exit(f"[fastclip setup] {exc}")
    listing = cuda_toolkit.nvcc_gpu_arch_list(toolkit)
    if listing is None:
        _say(f"`{toolkit.nvcc} --list-gpu-arch` did not answer: compiling for {text} as asked")
        return archs
    kept, notes = cuda_archs.restrict_to_supported(archs, cuda_archs.parse_nvcc_gpu_archs(listing))
    for note in notes:
        _say(note)
    if not kept:
        sys.exit(f"[fastclip setup] {toolkit.nvcc} can compile none of {text}; set FASTCLIP_CUDA_ARCHS to archs "
                 "that `nvcc --list-gpu-arch` lists, or FASTCLIP_SKIP_CUDA=1")
    return kept


def _cuda_runtime_dirs(cuda_home):
    """Some toolkits keep libcudart under lib/ rather than lib64/; link against whichever holds it."""
    dirs = []
    for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib")):
        path = os.path.join(cuda_home, sub)
        if glob.glob(os.path.join(path, "libcudart.so*")) and os.path.realpath(path) not in map(os.path.realpath, dirs):
            dirs.append(path)
    return dirs


def _cuda_library_header_dirs(cuda_home):
    """ATen's CUDA headers include cuBLAS/cuSPARSE headers. A compiler-only toolkit lacks them; torch's pip wheels
    (nvidia-*-cu13) ship them, so fall back to those."""
    if os.path.exists(os.path.join(cuda_home, "include", "cusparse.h")):
        return []
    spec = importlib.util.find_spec("nvidia")
    for root in spec.submodule_search_locations if spec else []:
        for include in sorted(glob.glob(os.path.join(root, "cu*", "include"))):
            if os.path.exists(os.path.join(include, "cusparse.h")):
                return [include]
    return []


def extension_modules():
    import torch

    toolkit, notes = cuda_toolkit.choose_toolkit(torch.version.cuda)
    for note in notes:
        _say(note)
    if toolkit:
        # cpp_extension reads CUDA_HOME once, at import, so it must be set first.
        os.environ["CUDA_HOME"] = toolkit.home
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # torch's cpp_extension chooses the C++ standard its headers need (C++20 for torch >= 2.10).
    cxx_flags = ["-O3", "-fopenmp"]
    if toolkit:
        archs = resolve_cuda_archs(toolkit)
        BUILD_INFO.update(cuda_archs=cuda_archs.format_cuda_archs(archs),
                          cuda_version="{}.{}".format(*toolkit.version))
        cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
        _say(f"building CPU + CUDA ({toolkit.home}, {toolkit.version_text}, archs {BUILD_INFO['cuda_archs']}): "
             f"{len(sources)} C++ and {len(cuda_sources)} CUDA files")
        return [
            CUDAExtension(
                "fastclip._C",
                sources + cuda_sources,
                define_macros=[("FASTCLIP_WITH_CUDA", None)],
                include_dirs=_cuda_library_header_dirs(toolkit.home),
                library_dirs=_cuda_runtime_dirs(toolkit.home),
                extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", *cuda_archs.nvcc_gencode_flags(archs)]},
                extra_link_args=["-fopenmp"],
            )
        ]
    BUILD_INFO["cuda_note"] = notes[-1]
    _say(f"building CPU only: {len(sources)} C++ files")
    return [
        CppExtension(
            "fastclip._C",
            sources,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
    ]


def build_ext_command():
    from torch.utils.cpp_extension import BuildExtension

    class BuildWithInfo(BuildExtension):
        """Writes build_info.h (what this build compiles) where csrc/fastclip.cpp includes it from, rewriting it only
        when it changes so that an unchanged build recompiles nothing."""

        def build_extensions(self):
            folder = os.path.abspath(os.path.join(self.build_temp, "fastclip_build_info"))
            os.makedirs(folder, exist_ok=True)
            # json.dumps of an ASCII string is a valid C string literal.
            text = "// Written by setup.py: what this build of fastclip._C compiled.\n" + "".join(
                f"#define FASTCLIP_BUILD_{key.upper()} {json.dumps(value, ensure_ascii=True)}\n"
                for key, value in sorted(BUILD_INFO.items())
            )
            path = os.path.join(folder, "build_info.h")
            if not os.path.exists(path) or open(path).read() != text:
                with open(path, "w") as handle:
                    handle.write(text)
            for extension in self.extensions:
                extension.include_dirs.append(folder)
            super().build_extensions()

    return BuildWithInfo.with_options(use_ninja=True)


setup(
    packages=find_packages(include=["fastclip", "fastclip.*"]) + ["fastclip.kernels"],
    package_dir={"fastclip.kernels": "kernels"},
    package_data={"fastclip": ["model_configs/*.json", "suites/*.toml"]},
    ext_modules=extension_modules(),
    cmdclass={"build_ext": build_ext_command()},
)
