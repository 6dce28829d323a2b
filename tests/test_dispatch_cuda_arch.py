"""The dispatcher never picks an extension CUDA kernel for a GPU the build has no code for.

The GPU is mocked (torch.cuda.is_available / get_device_capability / current_device / get_device_name) and so is the
extension's record of what it was built for, so this runs on the CPU-only CI machine: it exercises the real
dispatcher of rank_average (auto order on CUDA: extension, then reference).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from fastclip import _ext
from fastclip.cuda_archs import DEFAULT_CUDA_ARCHS, parse_cuda_archs
from fastclip.ops import rank_average  # noqa: F401  (registers the dispatcher)
from fastclip.ops._dispatch import REGISTRY, BackendFallbackWarning, BackendUnavailableError

DISPATCH = REGISTRY["rank_average"]


@pytest.fixture
def gpu(monkeypatch):
    """A mocked GPU whose compute capability the test sets, and an extension built with CUDA for the default archs."""
    state = {"capability": (9, 0), "name": "Mocked GPU"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: state["capability"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: state["name"])
    monkeypatch.setattr(_ext, "load", lambda: True)
    monkeypatch.setattr(_ext, "has_kernel", lambda op, device_type: True)
    monkeypatch.setattr(_ext, "built_cuda_archs", lambda: tuple(parse_cuda_archs(DEFAULT_CUDA_ARCHS)))
    monkeypatch.setattr(DISPATCH, "_warned", set())  # warnings are once per op and device: start from none
    monkeypatch.delenv("FASTCLIP_BACKEND", raising=False)
    return state


def _choose_recording_warnings(device="cuda", backend="auto"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = DISPATCH.choose(device, backend)
    return chosen.name, [w for w in caught if issubclass(w.category, BackendFallbackWarning)]


def test_an_unsupported_gpu_falls_back_with_one_warning_once(gpu):
    gpu.update(capability=(7, 5), name="Tesla T4")
    name, caught = _choose_recording_warnings()
    assert name == "reference"
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "\n" not in message
    assert message.startswith("rank_average: using backend 'reference', not 'extension': ")
    assert DEFAULT_CUDA_ARCHS in message and "Tesla T4" in message and "compute capability 7.5" in message
    assert 'FASTCLIP_CUDA_ARCHS="7.5;8.0;8.6;8.9;9.0;10.0+PTX"' in message

    # Same op, same device (however spelled): no second warning, still the fallback.
    for device in ("cuda", "cuda:0", torch.device("cuda", 0)):
        name, caught = _choose_recording_warnings(device)
        assert (name, caught) == ("reference", [])


def test_an_explicit_extension_request_raises_naming_the_build_and_the_fix(gpu):
    gpu.update(capability=(7, 5), name="Tesla T4")
    with pytest.raises(BackendUnavailableError) as error:
        DISPATCH.choose("cuda", "extension")
    message = str(error.value)
    assert f"built for {DEFAULT_CUDA_ARCHS}, none of which runs on cuda:0 (Tesla T4, compute capability 7.5)" in message
    assert "FASTCLIP_CUDA_ARCHS=" in message


@pytest.mark.parametrize("capability", [(8, 0), (8, 7), (9, 0), (10, 3), (12, 0)])
def test_a_gpu_with_machine_code_or_ptx_gets_the_extension_silently(gpu, capability):
    gpu.update(capability=capability)
    assert _choose_recording_warnings() == ("extension", [])


def test_a_build_that_predates_the_record_is_not_second_guessed(gpu, monkeypatch):
    monkeypatch.setattr(_ext, "built_cuda_archs", lambda: None)
    gpu.update(capability=(7, 5))
    assert _choose_recording_warnings() == ("extension", [])


def test_the_cpu_path_never_asks_about_gpus(gpu, monkeypatch):
    def no_gpu_questions(device=None):
        raise AssertionError("a CPU dispatch asked for a GPU's capability")

    monkeypatch.setattr(torch.cuda, "get_device_capability", no_gpu_questions)
    assert _choose_recording_warnings("cpu") == ("extension", [])
