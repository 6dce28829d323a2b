"""fastclip.ops.cue_conflict (texture-filled silhouettes, phase-amplitude swap) and fastclip-eval make-stimuli."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F

from fastclip.eval.datasets.images import decode_image
from fastclip.ops import cue_conflict, phase_amplitude_swap, silhouette_masks
from fastclip.ops._dispatch import BackendUnavailableError
from fastclip.ops.cue_conflict import all_pairs, prepare_masks, tile_textures
from tests.conftest import shared_data


def _disc_mask(size: int, radius: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    return ((coords[:, None] ** 2 + coords[None, :] ** 2) <= radius**2).float()


def test_inside_is_texture_outside_is_background_edge_is_a_mix():
    masks = _disc_mask(32, 9.5)[None]
    textures = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    background = torch.tensor([0.1, 0.7, 0.3])
    hard = cue_conflict(masks, textures, background=background)[0]
    inside = masks[0].bool()
    assert torch.equal(hard[:, inside], textures[0][:, inside])
    assert torch.equal(hard[:, ~inside], background[:, None].expand(3, int((~inside).sum())))

    soft = cue_conflict(masks, textures, background=background, feather=1.0)[0]
    coverage = cue_conflict(masks, torch.ones(1, 3, 32, 32), background=0.0, feather=1.0)[0, 0]
    edge = (coverage > 0.05) & (coverage < 0.95)
    assert edge.sum() > 40  # a ring of partial coverage around the disc
    mixed = coverage * textures[0] + (1 - coverage) * background[:, None, None]
    torch.testing.assert_close(soft, mixed, atol=1e-6, rtol=0)
    low = torch.minimum(textures[0], background[:, None, None])
    high = torch.maximum(textures[0], background[:, None, None])
    assert ((soft[:, edge] >= low[:, edge] - 1e-6) & (soft[:, edge] <= high[:, edge] + 1e-6)).all()
    far_inside = _disc_mask(32, 5.0).bool()
    torch.testing.assert_close(soft[:, far_inside], textures[0][:, far_inside], atol=1e-6, rtol=0)


def test_downsampled_binary_masks_get_anti_aliased_edges():
    masks = _disc_mask(128, 40.0)[None]
    small = cue_conflict(masks, torch.ones(1, 3, 8, 8), background=0.0, size=(37, 53))
    assert small.shape == (1, 3, 37, 53)
    coverage = cue_conflict(masks, torch.ones(1, 3, 8, 8), background=0.0, size=32)[0, 0]
    partial = ((coverage > 0.02) & (coverage < 0.98)).sum()
    assert partial > 20
    assert abs(coverage.sum() / 32**2 - masks.mean()) < 0.01  # area is preserved by the anti-aliasing filter


def test_soft_masks_blend_by_the_formula_for_every_pair():
    generator = torch.Generator().manual_seed(1)
    masks = torch.rand(3, 11, 13, generator=generator)
    textures = torch.randint(0, 256, (2, 3, 11, 13), dtype=torch.uint8, generator=generator)
    pairs = torch.tensor([[2, 1], [0, 0], [2, 0], [1, 1], [2, 1]])
    background = torch.rand(5, 3, generator=generator)
    out = cue_conflict(masks, textures, pairs, background=background, texture_fit="resize")
    for p, (s, t) in enumerate(pairs.tolist()):
        expected = masks[s] * (textures[t].float() / 255) + (1 - masks[s]) * background[p][:, None, None]
        assert torch.equal(out[p], expected)


def test_default_pairs_are_every_mask_with_every_texture_mask_major():
    assert all_pairs(2, 3).tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    masks, textures = torch.rand(2, 4, 4), torch.rand(3, 3, 4, 4)
    assert torch.equal(cue_conflict(masks, textures), cue_conflict(masks, textures, all_pairs(2, 3)))


@pytest.mark.parametrize("texture_size", [(1, 1), (5, 7), (40, 33)])
def test_tiled_textures_repeat_from_the_top_left(texture_size):
    textures = torch.rand(1, 3, *texture_size)
    out = cue_conflict(torch.ones(1, 19, 23), textures, texture_fit="tile")[0]
    for y, x in [(0, 0), (18, 22), (7, 11), (texture_size[0] % 19, 3)]:
        assert torch.equal(out[:, y, x], textures[0, :, y % texture_size[0], x % texture_size[1]])
    assert torch.equal(tile_textures(textures, (19, 23))[0], out)


def test_resized_textures_fill_the_frame():
    textures = torch.rand(1, 3, 64, 48)
    out = cue_conflict(torch.ones(1, 32, 32), textures, texture_fit="resize")[0]
    expected = F.interpolate(textures, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)[0]
    torch.testing.assert_close(out, expected.clamp(0, 1), atol=1e-6, rtol=0)


def test_uint8_and_bfloat16_outputs_round_the_float_result():
    masks, textures = torch.rand(2, 9, 9), torch.rand(2, 3, 9, 9)
    full = cue_conflict(masks, textures, background=0.5)
    rounded = torch.floor(full * 255 + 0.5).to(torch.uint8)
    assert torch.equal(cue_conflict(masks, textures, background=0.5, out_dtype=torch.uint8), rounded)
    assert torch.equal(cue_conflict(masks, textures, background=0.5, out_dtype=torch.bfloat16), full.to(torch.bfloat16))
    # The blend itself, written out in float64 (on the CPU auto is cue_conflict_ref, so it is no oracle here).
    pairs = all_pairs(2, 2, "cpu")
    mask, texture = masks.double()[pairs[:, 0]].unsqueeze(1), textures.double()[pairs[:, 1]]
    torch.testing.assert_close(full.double(), mask * texture + (1 - mask) * 0.5, atol=1e-6, rtol=0)


def test_silhouette_masks_of_the_geirhos_silhouettes():
    path = shared_data("texture-vs-shape", "filled-silhouettes", "cat", "cat1.png")
    silhouette = decode_image(path)
    mask = silhouette_masks(silhouette[None])[0]
    assert mask.shape == (224, 224)
    assert mask.min() >= 0 and mask.max() <= 1
    assert mask[0].max() == 0 and mask[:, -1].max() == 0  # cat1 sits on white ground at the top and right
    assert 0.05 < mask.mean() < 0.8
    assert ((mask > 0.02) & (mask < 0.98)).sum() > 50  # the silhouettes come anti-aliased


def test_phase_amplitude_swap_keeps_the_texture_amplitude_and_the_shape_phase():
    generator = torch.Generator().manual_seed(3)
    shape = 0.5 + 0.05 * F.avg_pool2d(torch.randn(1, 3, 36, 36, generator=generator), 5, 1)
    texture = 0.5 + 0.03 * torch.randn(1, 3, 32, 32, generator=generator)
    out = phase_amplitude_swap(shape, texture)
    assert out.shape == (1, 3, 32, 32)
    assert 0.0 < out.min() and out.max() < 1.0  # no clipping, so the spectra can be checked
    out_spectrum, shape_spectrum = torch.fft.rfft2(out), torch.fft.rfft2(shape)
    torch.testing.assert_close(out_spectrum.abs(), torch.fft.rfft2(texture).abs(), atol=1e-4, rtol=1e-4)
    strong = shape_spectrum.abs() > 1e-3
    phase_error = torch.angle(out_spectrum[strong] * shape_spectrum[strong].conj())
    assert phase_error.abs().max() < 1e-3
    same = phase_amplitude_swap(texture, texture)
    torch.testing.assert_close(same, texture.clamp(0, 1), atol=1e-5, rtol=0)


def test_phase_swap_of_grey_silhouettes_gives_rgb_pairs():
    out = phase_amplitude_swap(torch.rand(2, 16, 16), torch.rand(3, 3, 20, 20), torch.tensor([[0, 2], [1, 0]]), size=12)
    assert out.shape == (2, 3, 12, 12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(masks=torch.rand(2, 3, 4, 4)), "masks must be an \\(S,H,W\\)"),
        (dict(textures=torch.rand(2, 1, 4, 4)), "textures must be a \\(T,3,H,W\\)"),
        (dict(pairs=torch.tensor([[0, 5]])), "texture indices"),
        (dict(pairs=torch.tensor([[-1, 0]])), "mask indices"),
        (dict(pairs=torch.tensor([0, 1])), "pairs must be an integer \\(P,2\\)"),
        (dict(texture_fit="stretch"), "texture_fit"),
        (dict(background=[0.1, 0.2]), "background must be"),
        (dict(background=1.5), "background colours must lie in"),
        (dict(feather=-1.0), "feather"),
        (dict(size=0), "size must be"),
        (dict(out_dtype=torch.float16), "out_dtype"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    call = {"masks": torch.rand(2, 4, 4), "textures": torch.rand(2, 3, 4, 4), **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        cue_conflict(call.pop("masks"), call.pop("textures"), **call)


def test_triton_backend_on_cpu_says_how_to_enable_it(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
        cue_conflict(torch.rand(1, 4, 4), torch.rand(1, 3, 4, 4), backend="triton")


@pytest.mark.needs_cuda
def test_triton_matches_reference_on_cuda():
    masks = torch.rand(4, 37, 41, device="cuda")
    textures = torch.randint(0, 256, (5, 3, 13, 17), dtype=torch.uint8, device="cuda")
    for out_dtype in (torch.float32, torch.uint8):
        fused = cue_conflict(masks, textures, background=[0.2, 0.4, 0.6], out_dtype=out_dtype, backend="triton")
        reference = cue_conflict(masks, textures, background=[0.2, 0.4, 0.6], out_dtype=out_dtype, backend="reference")
        assert (fused.float() - reference.float()).abs().max() <= (1.0 if out_dtype == torch.uint8 else 1e-6)


# make-stimuli: the generated set in the Geirhos layout, read by the shape-bias loader.


def _make_set(folder, *extra: str):
    from fastclip.eval.make_stimuli import main

    out = folder / "generated"
    argv = [
        "--silhouettes", str(shared_data("texture-vs-shape", "filled-silhouettes")),
        "--textures", str(shared_data("texture-vs-shape", "cue-conflict-subset")),
        "--texture-crop", "48", "--size", "48", "--per-silhouette", "1", "--out", str(out), *extra,
    ]  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def generated_set(tmp_path_factory):
    """One texture-filled silhouette per shared silhouette (160 stimuli at 48 px), shared by the tests below."""
    return _make_set(tmp_path_factory.mktemp("stimuli"))


def test_make_stimuli_writes_the_geirhos_layout_and_the_loader_reads_it(generated_set):
    from fastclip.eval.datasets.cue_conflict import GEIRHOS_FILENAME, load_cue_conflict_folder

    out = generated_set
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 160  # one texture per silhouette
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"] == 160 and len(manifest["shapes"]) == 16
    for row in rows:
        match = GEIRHOS_FILENAME.match(row["imagename"])
        assert match and match["shape"] == row["shape"] and match["texture"] == row["texture"]
        assert row["path"] == f"{row['shape']}/{row['imagename']}"
        assert row["shape"] != row["texture"]  # --pairs conflict
        assert (out / row["path"]).is_file()
    loaded = load_cue_conflict_folder(out)
    assert len(loaded.entries) == 160 and loaded.images.shape == (160, 3, 48, 48)
    assert sorted(loaded.names) == sorted(row["imagename"] for row in rows)
    assert loaded.categories == tuple(manifest["shapes"])
    # where the silhouette has no coverage the stimulus is the white ground; where it is full, the texture
    by_name = dict(zip(loaded.names, loaded.images))
    for row in rows[::40]:
        silhouette = decode_image(row["shape_source"])
        coverage = prepare_masks(silhouette_masks(silhouette[None]), (48, 48))[0]
        stimulus = by_name[row["imagename"]]
        assert (stimulus[:, coverage == 0] == 255).all()
        texture = decode_image(row["texture_source"])[:, :48, :48]
        full = coverage == 1
        assert (stimulus[:, full] == texture[:, full]).all()


def test_make_stimuli_phase_swap_and_refusal_to_overwrite(tmp_path, capsys):
    from fastclip.eval.make_stimuli import main

    out = _make_set(tmp_path, "--method", "phase-swap", "--pairs", "all")
    assert len(list(out.glob("*/*.png"))) == 160
    with pytest.raises(SystemExit):
        main(["--silhouettes", "x", "--textures", "y", "--out", str(out)])
    assert "not empty" in capsys.readouterr().err


def test_make_stimuli_names_a_bad_category_folder(tmp_path, capsys):
    from PIL import Image

    from fastclip.eval.make_stimuli import main

    bad = tmp_path / "silhouettes" / "Teddy_Bear"
    bad.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(bad / "teddy1.png")
    folder = str(tmp_path / "silhouettes")
    status = main(["--silhouettes", folder, "--textures", folder, "--out", str(tmp_path / "o")])
    assert status == 2
    assert "Teddy_Bear" in capsys.readouterr().err


def test_generated_set_is_evaluated_by_shape_bias_end_to_end(generated_set, tmp_path, capsys):
    """make-stimuli from the shared silhouettes -> fastclip-eval --cue-conflict -> shape-bias rows and trials."""
    from fastclip.eval.benchmarks.shape_bias import shape_bias_from_trials_csv
    from fastclip.eval.cli import main as eval_main
    from fastclip.eval.results import read_results_jsonl, trials_csv_path
    from fastclip.models import create_model, save_checkpoint

    generated = generated_set
    torch.manual_seed(0)
    bundle = create_model("fc-tiny-vit")
    checkpoint = tmp_path / "run" / "checkpoints" / "epoch_1.pt"
    save_checkpoint(
        checkpoint, model=bundle.model, optimizer=None, epoch=1, name="run", model_name=bundle.model_name,
        model_cfg=bundle.model_cfg, samples_seen=0,
    )  # fmt: skip
    out = tmp_path / "eval"
    argv = [str(tmp_path / "run"), "--benchmarks", "shape_bias", "--cue-conflict", str(generated), "--out", str(out),
            "--toyworld-size", "1", "--batch-size", "160", "--device", "cpu"]  # fmt: skip
    assert eval_main(argv) == 0, capsys.readouterr().err
    rows = [row for row in read_results_jsonl(out / "results.jsonl") if row["dataset"] == "generated"]
    pooled = next(row for row in rows if row["metric"] == "shape_bias" and row["variant"] == "pooled")
    report = shape_bias_from_trials_csv(trials_csv_path(out, "generated", "run_epoch1"))
    assert report.pooled.trials == 160
    decided = report.pooled.shape_decisions + report.pooled.texture_decisions
    assert pooled["n"] == decided
    if decided:
        assert pooled["value"] == pytest.approx(report.pooled.shape_bias)
    assert {row["variant"] for row in rows} >= {"pooled", "shape_fraction", "texture_fraction", "category=cat"}


def test_toy_world_textures_as_a_texture_source():
    from fastclip.eval.make_stimuli import load_textures
    from fastclip.ops.toyworld_render import CATEGORIES

    sources, images = load_textures("toyworld", 12, 16)
    assert [source.category for source in sources] == list(CATEGORIES)
    assert all(source.index == 1 for source in sources)
    assert images.shape == (16, 3, 12, 12) and images.dtype == torch.uint8
    assert (images.float().flatten(1).std(dim=1) > 5).all()  # every crop shows a pattern, not a flat fill
