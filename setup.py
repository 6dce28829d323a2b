"""Builds the one compiled extension, fastclip._C, from csrc/.

The C++ CPU sources are always compiled. The CUDA sources are compiled when a CUDA toolkit is found whose major
version matches the CUDA version torch was built with. Knobs:
  FASTCLIP_SKIP_CUDA=1      build the CPU part only
  FASTCLIP_CUDA_ARCHS="9.0+PTX"   compute capabilities to compile for (semicolon or space separated)
  CUDA_HOME                 where the toolkit is; otherwise /usr/local/cuda or the folder of `nvcc` on PATH
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "9.0+PTX"


def _say(message):
    print(f"[fastclip setup] {message}", file=sys.stderr)


def _nvcc_major_version(cuda_home):
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    if not os.path.exists(nvcc):
        return None
    try:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"release (\d+)\.(\d+)", text)
    return int(match.group(1)) if match else None


def _resolve_nvcc_on_path():
    """`nvcc` on PATH may be a wrapper script (exec /usr/local/cuda-X/bin/nvcc "$@"): follow it to the toolkit."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    real = os.path.realpath(nvcc)
    with open(real, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"#!"):
        match = re.search(rb"(/\S+/bin/nvcc)", head)
        if match:
            real = match.group(1).decode()
    return os.path.dirname(os.path.dirname(real))


def find_cuda_toolkit(torch_cuda_version):
    """Return the toolkit folder to build the CUDA sources with, or None and say why."""
    if os.environ.get("FASTCLIP_SKIP_CUDA", "0") == "1":
        _say("FASTCLIP_SKIP_CUDA=1: building the CPU extension only")
        return None
    if not torch_cuda_version:
        _say("this torch was built without CUDA: building the CPU extension only")
        return None
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda", _resolve_nvcc_on_path()]
    wanted_major = int(torch_cuda_version.split(".")[0])
    for home in filter(None, candidates):
        major = _nvcc_major_version(home)
        if major is None:
            continue
        if major == wanted_major:
            return home
        _say(f"toolkit {home} is CUDA {major}, torch needs CUDA {wanted_major}: not used")
    _say(f"no CUDA {wanted_major} toolkit found (set CUDA_HOME): building the CPU extension only")
    return None


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
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    for root in spec.submodule_search_locations if spec else []:
        for include in sorted(glob.glob(os.path.join(root, "cu*", "include"))):
            if os.path.exists(os.path.join(include, "cusparse.h")):
                return [include]
    return []


def _nvcc_arch_flags(archs):
    flags = []
    for arch in re.split(r"[;\s,]+", archs.strip()):
        if not arch:
            continue
        with_ptx = arch.endswith("+PTX")
        number = arch.replace("+PTX", "").replace(".", "")
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
        if with_ptx:
            flags.append(f"-gencode=arch=compute_{number},code=compute_{number}")
    return flags


def extension_modules():
    import torch

    cuda_home = find_cuda_toolkit(torch.version.cuda)
    if cuda_home:
        # cpp_extension reads CUDA_HOME once, at import, so it must be set first.
        os.environ["CUDA_HOME"] = cuda_home
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # torch's cpp_extension chooses the C++ standard its headers need (C++20 for torch >= 2.10).
    cxx_flags = ["-O3", "-fopenmp"]
    if cuda_home:
        archs = os.environ.get("FASTCLIP_CUDA_ARCHS", DEFAULT_CUDA_ARCHS)
        cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
        _say(f"building CPU + CUDA ({cuda_home}, archs {archs}): {len(sources)} C++ and {len(cuda_sources)} CUDA files")
        return [
            CUDAExtension(
                "fastclip._C",
                sources + cuda_sources,
                define_macros=[("FASTCLIP_WITH_CUDA", None)],
                include_dirs=_cuda_library_header_dirs(cuda_home),
                library_dirs=_cuda_runtime_dirs(cuda_home),
                extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", *_nvcc_arch_flags(archs)]},
                extra_link_args=["-fopenmp"],
            )
        ]
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

    return BuildExtension.with_options(use_ninja=True)


setup(
    packages=find_packages(include=["fastclip", "fastclip.*"]) + ["fastclip.kernels"],
    package_dir={"fastclip.kernels": "kernels"},
    package_data={"fastclip": ["model_configs/*.json", "suites/*.toml"]},
    ext_modules=extension_modules(),
    cmdclass={"build_ext": build_ext_command()},
)
