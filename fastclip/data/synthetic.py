"""open_clip's `--dataset-type synthetic`: one black image captioned "Dummy caption", repeated for
--train-num-samples samples. It measures the training step without any data cost and smoke-tests a set-up."""

from __future__ import annotations

from typing import Iterator

import torch

from fastclip.data.loader import Batch, ImageNormalizer, TrainData, batches_per_rank

SYNTHETIC_CAPTION = "Dummy caption"  # open_clip_train.data.SyntheticDataset's caption


class SyntheticTrainData(TrainData):
    def __init__(self, args, bundle, *, device, rank: int, world_size: int):
        if args.train_num_samples is None:
            raise ValueError("--dataset-type synthetic needs --train-num-samples (the images in one epoch)")
        self.num_samples = int(args.train_num_samples)
        self.batch_size = int(args.batch_size)
        self.num_batches = batches_per_rank(self.num_samples, self.batch_size, world_size,
                                            source="--dataset-type synthetic")
        size = bundle.image_size
        black = torch.zeros(self.batch_size, 3, size, size)  # any crop of a black image resizes to black
        self.images = ImageNormalizer(bundle.image_mean, bundle.image_std, device)(black)
        self.texts = bundle.tokenizer([SYNTHETIC_CAPTION] * self.batch_size).to(device)
        self.rank = rank

    def batches(self, epoch: int) -> Iterator[Batch]:
        for index in range(self.num_batches):
            first = (epoch * self.num_batches + index) * self.batch_size
            yield Batch(images=self.images, texts=self.texts, keys=torch.arange(first, first + self.batch_size))
