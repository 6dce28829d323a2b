"""GPU check and timing of the stimulus kernels against the device-to-device copy bandwidth (a step of run.py).

Each kernel is checked against its reference first (a mismatch is reported, the kernel still timed, and the step
fails at the end). Prints, last, one table: each kernel's time, GB/s (one read of the input + one write of each
output), fraction of the measured copy bandwidth, images/s and speed-up over the torch chain, with the issue's goals
beside them; every row is also recorded as a figure for device.json.
"""

from __future__ import annotations

import sys

import torch

from fastclip.ops import cue_conflict, cue_conflict_ref, gaussian_noise, gaussian_noise_ref
from fastclip.ops.toyworld_render import NUM_CATEGORIES, SceneParams, toyworld_render, toyworld_render_ref

from _common import Figures, print_markdown_table, require_cuda, time_ms

DEVICE = torch.device("cuda")
SWEEP6 = [0.04, 0.08, 0.12, 0.18, 0.26, 0.38]
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def copy_bandwidth_gb_s(num_bytes: int = 4 << 30) -> float:
    source = torch.empty(num_bytes, dtype=torch.uint8, device=DEVICE)
    target = torch.empty_like(source)
    ms = time_ms(lambda: target.copy_(source))
    return 2 * num_bytes / ms / 1e6


def torch_chain(images: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """The chain the fused kernel replaces: each step a full pass over the tensor."""
    x = images.float() / 255
    mean = torch.tensor(MEAN, device=DEVICE)[:, None, None]
    std = torch.tensor(STD, device=DEVICE)[:, None, None]
    z = torch.randn_like(x)
    return torch.stack([(torch.floor((x + s * z).clamp(0, 1) * 255) / 255 - mean) / std for s in sigmas])


def random_scenes(n: int, seed: int = 0) -> SceneParams:
    generator = torch.Generator().manual_seed(seed)
    params = SceneParams(
        shape_id=torch.randint(-1, NUM_CATEGORIES, (n,), generator=generator),
        texture_id=torch.randint(-1, NUM_CATEGORIES, (n,), generator=generator),
        center=torch.rand(n, 2, generator=generator) * 1.2 - 0.6,
        scale=0.3 + 0.5 * torch.rand(n, generator=generator),
        rotation=torch.rand(n, generator=generator) * 6.2832,
        texture_colors=torch.rand(n, 2, 3, generator=generator),
        background_color=torch.rand(n, 3, generator=generator),
        texture_phase=torch.rand(n, 2, generator=generator),
        background_seed=torch.randint(0, 2**62, (n,), generator=generator),
    )
    return params.to(DEVICE)


def check(name: str, ok: bool) -> str:
    print(f"check {name}: {'ok' if ok else 'FAILED'}", flush=True)
    return "ok" if ok else "MISMATCH"


def main() -> int:
    require_cuda("stimuli")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    figures = Figures()
    copy = copy_bandwidth_gb_s()
    print(f"device-to-device copy: {copy:.0f} GB/s", flush=True)
    figures.add("device-to-device copy bandwidth (read + write)", copy, "GB/s")
    rows = []
    checks = {}

    def note(kernel: str, status: str) -> None:
        checks[kernel] = "MISMATCH" if "MISMATCH" in (checks.get(kernel), status) else status

    def row(kernel, size, ms, moved_bytes, images, chain_ms, goal, meets=None):
        """meets(fraction of copy, images/s, speed-up over the chain) -> whether the goal is met."""
        gb_s = moved_bytes / ms / 1e6
        per_s = images / ms * 1e3
        rows.append((kernel, size, ms, gb_s, gb_s / copy, per_s, chain_ms / ms, goal))
        figures.add(f"{kernel} {size}", ms, "ms", goal, None if meets is None else meets(gb_s / copy, per_s,
                                                                                         chain_ms / ms),
                    checks.get(kernel, ""))
        figures.add(f"{kernel} {size}: fraction of copy bandwidth", gb_s / copy, "of copy")
        figures.add(f"{kernel} {size}: speed-up over the torch chain", chain_ms / ms, "x")

    # gaussian_noise: uint8 in, float32 out, quantise + normalise (the eval configuration).
    for count, sigmas in ((256, [0.1]), (4096, [0.1]), (256, SWEEP6), (4096, SWEEP6)):
        images = torch.randint(0, 256, (count, 3, 224, 224), dtype=torch.uint8, device=DEVICE)
        kwargs = dict(seed=0, sweep=True, quantize=True, mean=MEAN, std=STD)
        fused = lambda: gaussian_noise(images, sigmas, backend="triton", **kwargs)  # noqa: E731
        if count == 256:
            out = fused()
            reference = gaussian_noise_ref(images, sigmas, **kwargs)
            # x + sigma*z may round differently (FMA) and flip a truncation level in a rare element.
            flipped = ((out - reference).abs() > 1e-4).float().mean().item()
            note("gaussian_noise", check(f"gaussian_noise K={len(sigmas)} vs reference ({flipped:.1e} differ)",
                                         flipped < 1e-3))
            del out, reference
        ms = time_ms(fused)
        chain_ms = time_ms(lambda: torch_chain(images, sigmas))
        moved = images.numel() + len(sigmas) * images.numel() * 4
        sweep = len(sigmas) == 6
        row("gaussian_noise", f"{count}x3x224x224 K={len(sigmas)}", ms, moved, count, chain_ms,
            ">=80% copy, >=3x chain" if sweep else "",
            (lambda fraction, per_s, speedup: fraction >= 0.8 and speedup >= 3) if sweep else None)
        del images
        torch.cuda.empty_cache()

    # cue_conflict: 16 masks x 16 textures at 224, P pairs, uint8 out.
    masks = torch.rand(16, 224, 224, device=DEVICE)
    textures = torch.rand(16, 3, 224, 224, device=DEVICE)
    for count in (256, 4096):
        pairs = torch.randint(0, 16, (count, 2), device=DEVICE)
        fused = lambda: cue_conflict(masks, textures, pairs, out_dtype=torch.uint8, backend="triton")  # noqa: E731
        chain = lambda: cue_conflict_ref(masks, textures, pairs, out_dtype=torch.uint8)  # noqa: E731
        note("cue_conflict", check(f"cue_conflict P={count} vs reference",
                                   (fused().int() - chain().int()).abs().max().item() <= 1))
        ms, chain_ms = time_ms(fused), time_ms(chain)
        row("cue_conflict", f"P={count} 224px", ms, count * 224 * 224 * (16 + 3), count, chain_ms, ">=20k stimuli/s",
            lambda fraction, per_s, speedup: per_s >= 20_000)

    # toyworld_render: float32 out.
    for count, size, goal, rate in ((65536, 64, ">=100k img/s", 100_000), (4096, 224, ">=10k img/s", 10_000)):
        params = random_scenes(count)
        fused = lambda: toyworld_render(params, size, backend="triton")  # noqa: E731
        chain = lambda: toyworld_render_ref(params, size)  # noqa: E731
        probe = params[0:256]
        error = (toyworld_render(probe, size, backend="triton") - toyworld_render_ref(probe, size)).abs().max().item()
        note("toyworld_render", check(f"toyworld_render {size}px vs reference (max |diff| {error:.1e})", error < 1e-3))
        ms, chain_ms = time_ms(fused, repeats=5), time_ms(chain, repeats=3, warmup=1)
        row("toyworld_render", f"{count}x{size}px", ms, count * 3 * size * size * 4, count, chain_ms, goal,
            lambda fraction, per_s, speedup, rate=rate: per_s >= rate)
        del params
        torch.cuda.empty_cache()

    print()
    print_markdown_table(
        ["kernel", "size", "ms", "GB/s", f"of copy ({copy:.0f} GB/s)", "images/s", "x torch chain", "goal"],
        [
            [kernel, size, f"{ms:.3f}", f"{gb_s:.0f}", f"{fraction:.0%}", f"{per_s:,.0f}", f"{speedup:.1f}", goal]
            for kernel, size, ms, gb_s, fraction, per_s, speedup, goal in rows
        ],
    )
    return 0 if all(status == "ok" for status in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
