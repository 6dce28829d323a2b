"""Model input from decoded images matches open_clip's own eval transform (PIL bicubic resize of the shorter side,
centre crop, normalisation) to within the difference between PIL's and torch's antialiased bicubic filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transform import image_transform
from PIL import Image

from fastclip.eval.preprocess import normalize, resize_center_crop
from tests.conftest import shared_data


@pytest.mark.parametrize("size,box", [(64, None), (48, (0, 0, 224, 150)), (40, (30, 0, 130, 224))])
def test_matches_open_clip_eval_transform(size, box):
    path = shared_data("texture-vs-shape", "cue-conflict-subset", "cat", "cat1-airplane1.png")
    image = Image.open(path).convert("RGB")
    image = image.crop(box) if box else image  # non-square crops exercise shorter-side resize + centre crop
    expected = image_transform(size, is_train=False, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)(image)
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None]
    ours = normalize(resize_center_crop(pixels, size), OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)[0]
    assert ours.shape == expected.shape == (3, size, size)
    difference = (ours - expected).abs()
    # Normalised units (1/255 of a pixel is ~0.015 here): PIL and torch bicubic differ by a few levels at most.
    assert difference.mean() < 0.01 and difference.max() < 0.1


def test_model_sized_input_is_only_converted():
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    torch.testing.assert_close(resize_center_crop(images, 16), images.float() / 255, rtol=0, atol=0)
    floats = torch.rand(2, 3, 16, 16)
    assert torch.equal(resize_center_crop(floats, 16), floats)
    resized = resize_center_crop(torch.ones(1, 3, 30, 20), 8)
    assert resized.shape == (1, 3, 8, 8) and resized.min() >= 0 and resized.max() <= 1
