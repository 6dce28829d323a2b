"""--val-data: open_clip's validation (open_clip_train.train.evaluate / get_clip_metrics), on rank 0.

Every validation pair is encoded once with open_clip's inference transform (resize the shortest side, centre
crop); the val loss is CLIP's loss of each batch against itself, averaged over samples; the retrieval metrics rank,
for every image, all validation captions (and the reverse): R@1/5/10, mean and median rank (1-based), as open_clip.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fastclip.models import autocast

_log = logging.getLogger(__name__)


class ValidationDataError(ValueError):
    """--val-data that cannot be read; the message names the file."""


@dataclass
class ValidationPairs:
    """Where the validation images are (paths, or encoded bytes from tar shards) and their captions."""

    source: str
    images: list  # str paths or bytes
    captions: list[str]

    def __len__(self) -> int:
        return len(self.captions)


def _csv_pairs(args, limit: int | None) -> ValidationPairs:
    from fastclip.data.csv_dataset import read_csv_table

    table = read_csv_table(args.val_data, img_key=args.csv_img_key, caption_key=args.csv_caption_key,
                           separator=args.csv_separator)
    return ValidationPairs(args.val_data, table.image_paths[:limit], table.captions[:limit])


def _shard_pairs(args, limit: int | None) -> ValidationPairs:
    from fastclip.data.sources import expand_shard_spec, split_sources
    from fastclip.data.webdataset import RawSample, iter_tar_samples

    images, captions = [], []
    for source in split_sources(args.val_data):
        for shard in expand_shard_spec(source):
            for sample in iter_tar_samples(str(shard)):
                if isinstance(sample, RawSample):
                    images.append(sample.image)
                    captions.append(sample.caption)
                    if limit is not None and len(captions) == limit:
                        return ValidationPairs(args.val_data, images, captions)
    if not captions:
        raise ValidationDataError(f"--val-data {args.val_data}: no image-caption pairs in the shards")
    return ValidationPairs(args.val_data, images, captions)


def read_validation_pairs(args) -> ValidationPairs:
    """The pairs of --val-data (a CSV or tar shards, as the extension or else --dataset-type says)."""
    from fastclip.data.sources import DataSourceError, detect_dataset_type

    try:  # by extension first: a CSV validation set beside training shards is read as a CSV
        kind = detect_dataset_type(args.val_data)
    except DataSourceError:
        if args.dataset_type not in ("csv", "webdataset"):
            raise
        kind = args.dataset_type
    if kind == "csv":
        return _csv_pairs(args, args.val_num_samples)
    if kind == "webdataset":
        return _shard_pairs(args, args.val_num_samples)
    raise ValidationDataError(f"--val-data {args.val_data}: validation reads a CSV or tar shards, not a {kind}")


def _open_image(image) -> Image.Image:
    file = io.BytesIO(image) if isinstance(image, bytes) else image
    with Image.open(file) as opened:
        return opened.convert("RGB")


class Validation:
    """Validation pairs prepared for one model; call `run(model, epoch)` for the metrics."""

    def __init__(self, args, bundle, device: torch.device):
        from open_clip.transform import image_transform

        self.pairs = read_validation_pairs(args)
        self.transform = image_transform(bundle.image_size, is_train=False, mean=bundle.image_mean,
                                         std=bundle.image_std)
        self.tokenizer = bundle.tokenizer
        self.batch_size = int(args.batch_size)
        self.precision = args.precision
        self.device = torch.device(device)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.pairs), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            try:
                images = [self.transform(_open_image(image)) for image in self.pairs.images[chunk]]
            except (OSError, ValueError, SyntaxError) as exc:
                raise ValidationDataError(f"--val-data {self.pairs.source}: an unreadable image near pair "
                                          f"{start}: {type(exc).__name__}: {exc}") from exc
            texts = self.tokenizer(self.pairs.captions[chunk])
            yield torch.stack(images).to(self.device), texts.to(self.device)

    @torch.inference_mode()
    def run(self, model: torch.nn.Module, epoch: int) -> dict:
        """open_clip's evaluate() on the validation pairs: retrieval metrics, clip_val_loss, epoch, num_samples."""
        was_training = model.training
        model.eval()
        image_parts, text_parts = [], []
        cumulative_loss, num_samples = 0.0, 0
        try:
            for images, texts in self._batches():
                with autocast(self.precision, self.device):
                    image_features, text_features, logit_scale = model(images, texts)[:3]
                    logit_scale = logit_scale.mean()
                    logits_per_image = logit_scale * image_features @ text_features.t()
                    labels = torch.arange(len(images), device=self.device)
                    loss = (F.cross_entropy(logits_per_image, labels)
                            + F.cross_entropy(logits_per_image.t(), labels)) / 2
                image_parts.append(image_features.float().cpu())
                text_parts.append(text_features.float().cpu())
                cumulative_loss += loss.item() * len(images)
                num_samples += len(images)
        finally:
            model.train(was_training)
        metrics = clip_retrieval_metrics(torch.cat(image_parts), torch.cat(text_parts), logit_scale.float().cpu())
        return {**metrics, "clip_val_loss": cumulative_loss / num_samples, "epoch": epoch, "num_samples": num_samples}


def clip_retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale) -> dict:
    """open_clip_train.train.get_clip_metrics: 1-based ranks of the true pair in both directions."""
    logits_per_image = (logit_scale * image_features @ text_features.t()).detach().cpu()
    logits = {"image_to_text": logits_per_image, "text_to_image": logits_per_image.t()}
    ground_truth = torch.arange(len(text_features)).view(-1, 1)
    metrics = {}
    for name, logit in logits.items():
        ranking = torch.argsort(logit, descending=True)
        preds = torch.where(ranking == ground_truth)[1].double()
        metrics[f"{name}_mean_rank"] = preds.mean().item() + 1
        # numpy's median (the mean of the two middle ranks for an even count), floored, as open_clip
        metrics[f"{name}_median_rank"] = float(np.floor(np.median(preds.numpy()))) + 1
        for k in (1, 5, 10):
            metrics[f"{name}_R@{k}"] = (preds < k).double().mean().item()
    return metrics
