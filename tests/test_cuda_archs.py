"""The CUDA architecture list: parsing, what nvcc can compile, and which code of a build a GPU runs."""

from __future__ import annotations

import re

import pytest

from fastclip.cuda_archs import (
    DEFAULT_CUDA_ARCHS,
    CudaArch,
    format_cuda_archs,
    image_for,
    nvcc_gencode_flags,
    parse_cuda_archs,
    parse_nvcc_gpu_archs,
    restrict_to_supported,
)

# What `nvcc --list-gpu-arch` printed for CUDA 13.0 and for CUDA 12.4 (which has no sm_100).
NVCC_13_0 = "compute_75\ncompute_80\ncompute_86\ncompute_87\ncompute_88\ncompute_89\ncompute_90\ncompute_100\n" \
            "compute_110\ncompute_103\ncompute_120\ncompute_121\n"
NVCC_12_4 = "compute_50\ncompute_52\ncompute_53\ncompute_60\ncompute_61\ncompute_62\ncompute_70\ncompute_72\n" \
            "compute_75\ncompute_80\ncompute_86\ncompute_87\ncompute_89\ncompute_90\n"


def test_default_covers_the_gpus_people_have_with_ptx_of_the_highest():
    archs = parse_cuda_archs(DEFAULT_CUDA_ARCHS)
    assert [arch.capability for arch in archs] == [(8, 0), (8, 6), (8, 9), (9, 0), (10, 0)]
    assert [arch.ptx for arch in archs] == [False, False, False, False, True]
    assert format_cuda_archs(archs) == DEFAULT_CUDA_ARCHS


def test_parsing_accepts_torch_style_lists_and_merges_repeats():
    archs = parse_cuda_archs(" 9.0, 8.0;8.0+ptx  9.0 ")
    assert archs == [CudaArch(8, 0, ptx=True), CudaArch(9, 0)]


@pytest.mark.parametrize("text", ["sm_90", "9", "9.0+SASS", "90", "9.0.1"])
def test_a_malformed_entry_is_named_with_the_variable(text):
    with pytest.raises(ValueError, match=re.escape(f"FASTCLIP_CUDA_ARCHS: '{text}' is not a compute capability")):
        parse_cuda_archs(f"8.0;{text}")


def test_an_empty_list_is_an_error():
    with pytest.raises(ValueError, match="no compute capability"):
        parse_cuda_archs(" ; ")


def test_gencode_flags_embed_sass_for_each_and_ptx_where_asked():
    assert nvcc_gencode_flags(parse_cuda_archs("8.6;10.0+PTX")) == [
        "-gencode=arch=compute_86,code=sm_86",
        "-gencode=arch=compute_100,code=sm_100",
        "-gencode=arch=compute_100,code=compute_100",
    ]


def test_nvcc_listing_is_read_as_capabilities():
    assert parse_nvcc_gpu_archs(NVCC_13_0) >= {(8, 0), (9, 0), (10, 0), (10, 3), (12, 1)}
    assert (10, 0) not in parse_nvcc_gpu_archs(NVCC_12_4)


def test_a_toolkit_without_sm_100_drops_it_and_moves_the_ptx_to_9_0():
    kept, notes = restrict_to_supported(parse_cuda_archs(DEFAULT_CUDA_ARCHS), parse_nvcc_gpu_archs(NVCC_12_4))
    assert format_cuda_archs(kept) == "8.0;8.6;8.9;9.0+PTX"
    assert "cannot compile for 10.0+PTX" in notes[0] and "dropped" in notes[0]
    assert notes[1] == "PTX embedded for 9.0 instead"


def test_a_toolkit_that_supports_everything_changes_nothing():
    archs = parse_cuda_archs(DEFAULT_CUDA_ARCHS)
    assert restrict_to_supported(archs, parse_nvcc_gpu_archs(NVCC_13_0)) == (archs, [])


@pytest.mark.parametrize(
    "capability, expected",
    [
        ((8, 0), "sm_80 machine code"),
        ((8, 6), "sm_86 machine code"),
        ((8, 7), "sm_86 machine code"),  # Orin: same major, higher minor runs sm_86
        ((9, 0), "sm_90 machine code"),
        ((10, 3), "sm_100 machine code"),
        ((12, 0), "compute_100 PTX, compiled by the driver at load"),  # newer than the build: PTX
        ((7, 5), None),  # T4: older than everything built, and PTX never runs on an older GPU
    ],
)
def test_which_code_a_gpu_runs_from_the_default_build(capability, expected):
    assert image_for(parse_cuda_archs(DEFAULT_CUDA_ARCHS), capability) == expected


def test_without_ptx_a_newer_major_has_nothing_to_run():
    assert image_for(parse_cuda_archs("8.0;9.0"), (10, 0)) is None
    assert image_for(parse_cuda_archs("8.6"), (8, 0)) is None  # SASS never runs on a lower minor
