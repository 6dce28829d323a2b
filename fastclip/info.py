"""`python -m fastclip.info`: versions, devices, extension / Triton / DALI status, the CUDA archs the extension was
built for and the CUDA toolkits found (with why one is not used), and the backend of every op."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import platform
import sys

import torch

import fastclip
from fastclip import _ext, _triton, cuda_toolkit
from fastclip.cuda_archs import format_cuda_archs, image_for


def _dali_status() -> str:
    if importlib.util.find_spec("nvidia.dali") is None:
        return "not installed (pip install nvidia-dali-cuda130; Linux x86_64)"
    try:
        import nvidia.dali as dali
    except Exception as exc:
        return f"installed but not importable: {type(exc).__name__}: {exc}"
    return f"{dali.__version__}"


def _open_clip_status() -> str:
    try:
        import open_clip
    except Exception as exc:
        return f"not importable: {type(exc).__name__}: {exc}"
    return open_clip.__version__


def _extension_cuda_lines(cuda_devices: int) -> list[str]:
    """What the extension's CUDA part was built for, and which code of it each visible GPU runs."""
    archs = _ext.built_cuda_archs()
    if archs is None:
        return ["cuda archs    unknown: this build predates fastclip recording them; rebuild to see them"]
    if not archs:
        return [f"cuda archs    none: CPU-only build ({_ext.cpu_only_reason() or 'no reason recorded'})"]
    lines = [f"cuda archs    {format_cuda_archs(archs)} (compiled with CUDA {_ext.built_cuda_version()})"]
    for index in range(cuda_devices):
        capability = tuple(torch.cuda.get_device_capability(index))
        image = image_for(archs, capability)
        runs = image if image is not None else (
            "NO code for this GPU: ops fall back to their next backend; " + _ext.rebuild_hint(capability))
        lines.append(f"              cuda:{index} (compute capability {capability[0]}.{capability[1]}) runs {runs}")
    return lines


def _toolkit_lines() -> list[str]:
    """Every CUDA toolkit found and whether it can build the CUDA kernels: a mismatch is reported, not skipped."""
    toolkits = cuda_toolkit.find_toolkits()
    if not toolkits:
        return ["cuda toolkit  none found (CUDA_HOME, CUDA_PATH, /usr/local/cuda, nvcc on PATH): CPU-only builds"]
    lines = []
    for toolkit in toolkits:
        reason = cuda_toolkit.why_not_usable(toolkit, torch.version.cuda)
        verdict = "can build the CUDA kernels" if reason is None else f"NOT usable: {reason}"
        label = "cuda toolkit" if not lines else ""
        lines.append(f"{label:<14}{toolkit.home} ({toolkit.version_text}, found by {toolkit.found_by}): {verdict}")
    return lines


def load_all_ops() -> dict:
    """Import every fastclip.ops module so that each registers its dispatcher."""
    import fastclip.ops as ops_package
    from fastclip.ops._dispatch import REGISTRY

    for module in pkgutil.iter_modules(ops_package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"fastclip.ops.{module.name}")
    return REGISTRY


def report() -> str:
    lines = [
        f"fastclip      {fastclip.__version__}",
        f"python        {sys.version.split()[0]} ({platform.machine()}, {platform.system()})",
        f"torch         {torch.__version__} (built with CUDA {torch.version.cuda})",
        f"open_clip     {_open_clip_status()}",
    ]
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda_devices:
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(cuda_devices))
        lines.append(f"devices       cpu ({torch.get_num_threads()} threads), cuda x{cuda_devices}: {names}")
    else:
        lines.append(f"devices       cpu ({torch.get_num_threads()} threads); no CUDA device visible")
    error = _ext.load_error()
    if error is None:
        lines.append("extension     fastclip._C loaded")
        lines.extend(_extension_cuda_lines(cuda_devices))
    else:
        lines.append(f"extension     NOT loaded: {error}")
        lines.append(f"              {_ext.BUILD_HINT}")
    triton_error = _triton.triton_import_error()
    if triton_error is None:
        mode = " (TRITON_INTERPRET=1: kernels run on the CPU)" if _triton.interpreter_enabled() else ""
        lines.append(f"triton        {_triton.triton_version()}{mode}")
    else:
        lines.append(f"triton        not importable: {triton_error}")
    lines.extend(_toolkit_lines())
    lines.append(f"dali          {_dali_status()}")
    lines.append("")
    lines.append("op backends (what backend='auto' picks):")
    registry = load_all_ops()
    devices = ["cpu"] + (["cuda"] if cuda_devices else [])
    width = max(map(len, registry), default=10)
    for name in sorted(registry):
        dispatcher = registry[name]
        choices = "; ".join(f"{device}: {dispatcher.describe(device)}" for device in devices)
        lines.append(f"  {name:<{width}}  [{', '.join(dispatcher.backends)}]  {choices}")
    if not cuda_devices:
        lines.append("  (on a CUDA device the ops would prefer: "
                     + "; ".join(f"{n}: {registry[n].auto_order.get('cuda', ('reference',))[0]}" for n in sorted(registry))
                     + ")")
    return "\n".join(lines)


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()
