"""Triton kernel for fastclip.ops.toyworld_render: scene parameters in, pixels out, one launch for the batch.

Each program renders BLOCK pixels of one image with the closed form documented in fastclip/ops/toyworld_render.py
(silhouette signed distance -> anti-aliased coverage, two-wave texture, seeded background grating, lerps), reading
only that image's parameter row and the constant shape/texture tables. The maths is the reference's, evaluated
per pixel instead of as batched matmuls: |f - c| is computed directly, atan2 is Cephes' float32 arctangent (the
interpreter has no libdevice) and round is half-to-even as torch.round, so pixels agree to float rounding.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import Capability, LaunchConfig, device_capability



def launch_config(capability: Capability | None = None) -> LaunchConfig:
    """The launch configuration on a GPU of this compute capability (None: the CPU interpreter)."""
    # 102 regs, no spills (32 B of stack: sin/cos range reduction), 2 KiB smem, 16 warps/SM on sm_90 (audit, triton
    # 3.8). The closed form is arithmetic-bound and its goal asks for 0.2% of the roofline, so registers are spent on
    # keeping the per-pixel maths in flight rather than on occupancy.
    return LaunchConfig(block=256, num_warps=4, num_stages=3)


@triton.jit
def _round_half_even(x):
    rounded = tl.floor(x + 0.5)
    # floor(x + 0.5) rounds halves up; torch.round sends an exact half to the even neighbour.
    is_half = (rounded - x) == 0.5
    is_odd = (rounded - 2.0 * tl.floor(rounded * 0.5)) == 1.0
    return tl.where(is_half & is_odd, rounded - 1.0, rounded)


@triton.jit
def _atan2(y, x):
    """Four-quadrant arctangent of y/x in float32 (Cephes atanf on the octant, then reflections)."""
    ax = tl.abs(x)
    ay = tl.abs(y)
    big = tl.maximum(ax, ay)
    small = tl.minimum(ax, ay)
    a = tl.where(big > 0.0, small / tl.where(big > 0.0, big, 1.0), 0.0)  # in [0, 1]
    reduced = a > 0.41421356237309503  # tan(pi / 8): shift by pi/4 to keep the polynomial's argument small
    t = tl.where(reduced, (a - 1.0) / (a + 1.0), a)
    z = t * t
    poly = (((8.05374449538e-2 * z - 1.38776856032e-1) * z + 1.99777106478e-1) * z - 3.33329491539e-1) * z * t + t
    angle = tl.where(reduced, poly + 0.7853981633974483, poly)
    angle = tl.where(ay > ax, 1.5707963267948966 - angle, angle)
    angle = tl.where(x < 0.0, 3.141592653589793 - angle, angle)
    return tl.where(y < 0.0, -angle, angle)


@triton.jit
def _mix32(x):
    """lowbias32 on uint32 (wrapping products), as fastclip.ops.toyworld_render.mix32."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def _uniform(h):
    return (h >> 8).to(tl.float32) * (1.0 / 16777216.0)


@triton.jit
def _wave(qx, qy, q_norm, waves_ptr):
    """One texture wave in [0, 1] from its table row
    (angle, f_lin, f_rad, warp_amp, warp_freq, warp_sine, gain, bias)."""
    angle = tl.load(waves_ptr + 0)
    f_lin = tl.load(waves_ptr + 1)
    f_rad = tl.load(waves_ptr + 2)
    warp_amp = tl.load(waves_ptr + 3)
    warp_freq = tl.load(waves_ptr + 4)
    warp_sine = tl.load(waves_ptr + 5)
    gain = tl.load(waves_ptr + 6)
    bias = tl.load(waves_ptr + 7)
    cos_a = tl.cos(angle)
    sin_a = tl.sin(angle)
    along = (cos_a * qx + sin_a * qy) * (f_lin * 0.5)
    across = (cos_a * qy - sin_a * qx) * (warp_freq * 0.5)
    triangle = tl.abs(across - _round_half_even(across)) * 4.0 - 1.0
    sine = tl.sin(across * 6.283185307179586)
    warp = triangle + warp_sine * (sine - triangle)
    phase = along + (f_rad * 0.5) * q_norm + warp_amp * warp
    wave = (tl.cos(phase * 6.283185307179586) - bias) * gain + 0.5
    return tl.minimum(tl.maximum(wave, 0.0), 1.0)


@triton.jit
def _lerp(start, end, weight):
    """torch.lerp's formula: exact at both ends (weight 0 gives start, weight 1 gives end)."""
    difference = end - start
    return tl.where(weight < 0.5, start + weight * difference, end - difference * (1.0 - weight))


@triton.jit
def _toyworld_render_fwd_kernel(
    out_ptr,  # float32 (N, 3, S, S)
    shape_id_ptr,
    texture_id_ptr,
    center_ptr,
    scale_ptr,
    rotation_ptr,
    texture_colors_ptr,
    background_color_ptr,
    texture_phase_ptr,
    background_seed_ptr,
    fold_ptr,  # float32 (ROWS, 2)
    terms_ptr,  # float32 (ROWS, PIECES, TERMS, 6)
    waves_ptr,  # float32 (ROWS, 2, 8)
    combine_ptr,  # float32 (ROWS, 3)
    image_size,
    blocks_per_image,
    ROWS: tl.constexpr,
    PIECES: tl.constexpr,
    TERMS: tl.constexpr,
    CONTRAST: tl.constexpr,
    FREQ_MIN: tl.constexpr,
    FREQ_MAX: tl.constexpr,
    KEY: tl.constexpr,
    STREAM0: tl.constexpr,
    STREAM1: tl.constexpr,
    STREAM2: tl.constexpr,
    BLOCK: tl.constexpr,
):
    program = tl.program_id(0)
    image = program // blocks_per_image
    block = program % blocks_per_image
    pixel = block * BLOCK + tl.arange(0, BLOCK)
    num_pixels = image_size * image_size
    in_image = pixel < num_pixels
    row = pixel // image_size
    col = pixel % image_size
    x = ((col * 2 + 1).to(tl.float32) / image_size) - 1.0
    y = -(((row * 2 + 1).to(tl.float32) / image_size) - 1.0)

    # Silhouette coverage: canonical point, symmetry fold, union of intersections of terms. Id -1 selects the
    # tables' last row, as Python indexing does in the reference (whole-frame coverage, flat fill).
    shape_id = tl.load(shape_id_ptr + image)
    shape = tl.where(shape_id < 0, shape_id + ROWS, shape_id)
    scale = tl.load(scale_ptr + image)
    rotation = tl.load(rotation_ptr + image)
    cos_r = tl.cos(rotation)
    sin_r = tl.sin(rotation)
    dx = x - tl.load(center_ptr + 2 * image)
    dy = y - tl.load(center_ptr + 2 * image + 1)
    lx = (cos_r * dx + sin_r * dy) / scale
    ly = (cos_r * dy - sin_r * dx) / scale
    radius = tl.sqrt(lx * lx + ly * ly)
    sector = 6.283185307179586 / tl.load(fold_ptr + 2 * shape)
    phi = _atan2(lx, ly)
    phi = phi - sector * _round_half_even(phi / sector)
    phi = tl.where(tl.load(fold_ptr + 2 * shape + 1) > 0.5, tl.abs(phi), phi)
    fx = radius * tl.sin(phi)
    fy = radius * tl.cos(phi)
    distance = tl.full([BLOCK], float("inf"), tl.float32)
    for piece in tl.static_range(PIECES):
        inside = tl.full([BLOCK], float("-inf"), tl.float32)
        for term in tl.static_range(TERMS):
            row_ptr = terms_ptr + ((shape * PIECES + piece) * TERMS + term) * 6
            alpha = tl.load(row_ptr + 0)
            cx = tl.load(row_ptr + 1)
            cy = tl.load(row_ptr + 2)
            value = alpha * tl.sqrt((fx - cx) * (fx - cx) + (fy - cy) * (fy - cy))
            value += tl.load(row_ptr + 3) * fx + tl.load(row_ptr + 4) * fy - tl.load(row_ptr + 5)
            inside = tl.maximum(inside, value)
        distance = tl.minimum(distance, inside)
    coverage = 0.5 - distance * (scale * (image_size * 0.5))
    coverage = tl.minimum(tl.maximum(coverage, 0.0), 1.0)

    # Texture: two waves over the translated plane, combined bilinearly.
    texture_id = tl.load(texture_id_ptr + image)
    texture = tl.where(texture_id < 0, texture_id + ROWS, texture_id)
    qx = x - (2.0 * tl.load(texture_phase_ptr + 2 * image) - 1.0)
    qy = y - (2.0 * tl.load(texture_phase_ptr + 2 * image + 1) - 1.0)
    q_norm = tl.sqrt(qx * qx + qy * qy)
    t1 = _wave(qx, qy, q_norm, waves_ptr + texture * 16)
    t2 = _wave(qx, qy, q_norm, waves_ptr + texture * 16 + 8)
    w1 = tl.load(combine_ptr + 3 * texture)
    w2 = tl.load(combine_ptr + 3 * texture + 1)
    w12 = tl.load(combine_ptr + 3 * texture + 2)
    t = tl.minimum(tl.maximum(t1 * w1 + t2 * w2 + t1 * t2 * w12, 0.0), 1.0)

    # Background grating from the counter hash of background_seed.
    seed = tl.load(background_seed_ptr + image)
    low_word = (seed & 0xFFFFFFFF).to(tl.uint32)
    high_word = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    h = _mix32(_mix32(low_word ^ KEY) ^ high_word)
    direction = _uniform(_mix32(h ^ STREAM0)) * 6.283185307179586
    frequency = FREQ_MIN + _uniform(_mix32(h ^ STREAM1)) * (FREQ_MAX - FREQ_MIN)
    offset = _uniform(_mix32(h ^ STREAM2))
    grating = tl.cos(((frequency * 0.5) * (tl.cos(direction) * x + tl.sin(direction) * y) + offset) * 6.283185307179586)

    out_base = image.to(tl.int64) * 3 * num_pixels
    for channel in tl.static_range(3):
        low = tl.load(texture_colors_ptr + image * 6 + channel)
        high = tl.load(texture_colors_ptr + image * 6 + 3 + channel)
        fill = _lerp(low, high, t)
        background = tl.load(background_color_ptr + image * 3 + channel) + CONTRAST * grating
        pixel_value = tl.minimum(tl.maximum(_lerp(background, fill, coverage), 0.0), 1.0)
        tl.store(out_ptr + out_base + channel * num_pixels + pixel, pixel_value, mask=in_image)


def toyworld_render_fwd(
    params,
    image_size: int,
    tables: dict[str, torch.Tensor],
    background: tuple[float, float, float, int, tuple],
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """Validated SceneParams -> float32 (N, 3, S, S) in [0, 1].

    The op passes its constant tables (float32 "fold", "terms", "waves", "combine" on params' device, last row for
    id -1) and background constants (contrast, min frequency, max frequency, hash key, three stream words).
    """
    device = params.shape_id.device
    cfg = config or launch_config(device_capability(device))
    n = len(params)
    out = torch.empty(n, 3, image_size, image_size, dtype=torch.float32, device=device)
    if n == 0:
        return out
    rows, pieces, terms = tables["terms"].shape[:3]
    contrast, freq_min, freq_max, key, streams = background
    floats = {
        name: getattr(params, name).to(torch.float32).contiguous()
        for name in ("center", "scale", "rotation", "texture_colors", "background_color", "texture_phase")
    }
    blocks_per_image = triton.cdiv(image_size * image_size, cfg.block)
    _toyworld_render_fwd_kernel[(n * blocks_per_image,)](
        out,
        params.shape_id.contiguous(),
        params.texture_id.contiguous(),
        floats["center"],
        floats["scale"],
        floats["rotation"],
        floats["texture_colors"],
        floats["background_color"],
        floats["texture_phase"],
        params.background_seed.contiguous(),
        tables["fold"].contiguous(),
        tables["terms"].contiguous(),
        tables["waves"].contiguous(),
        tables["combine"].contiguous(),
        image_size,
        blocks_per_image,
        ROWS=rows,
        PIECES=pieces,
        TERMS=terms,
        CONTRAST=contrast,
        FREQ_MIN=freq_min,
        FREQ_MAX=freq_max,
        KEY=key,
        STREAM0=streams[0],
        STREAM1=streams[1],
        STREAM2=streams[2],
        BLOCK=cfg.block,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return out
