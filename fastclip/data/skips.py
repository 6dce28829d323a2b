"""Why samples are skipped, how the counts read, and the error for data with nothing usable left.

A module of its own so that the readers (webdataset, folder, CSV), the batch filler (sharding), the loaders and
the training loop share one list of reasons: the loop sums the counts over ranks in this order.
"""

from __future__ import annotations

from typing import Mapping

# reason -> what it means; the order is the order of the counts in logs and metrics.
SKIP_REASONS = {
    "missing_caption": "an image without its .txt caption",
    "missing_image": "a caption (or json) without an image",
    "duplicate_key": "a key with two images or two captions in a row (which pairs with which is unknown)",
    "unreadable_image": "an image that does not decode (truncated, not an image, a missing file)",
    "unreadable_tar": "samples lost in a damaged tar (its metadata count minus the samples read)",
    "missing_from_tar": "samples the metadata counts that a complete tar does not hold",
    "other": "any other reason",
}

# What a user can do when every sample of a rank was skipped for one reason.
FIXES = {
    "missing_caption": "the shards hold no .txt captions: img2dataset writes them only with --caption_col "
                       "(re-run it with the caption column of your table)",
    "missing_image": "the shards hold captions but no images (.jpg, .jpeg, .png or .webp members)",
    "duplicate_key": "every key repeats its members: rewrite the shards with one image and one caption per key",
    "unreadable_image": "no image decodes: check that the files are images and not cut short",
    "unreadable_tar": "the tars are damaged (cut short or empty): copy or download them again",
    "missing_from_tar": "the tars hold fewer samples than their _stats.json / sizes.json / .idx files say",
}


def known_reason(reason: str) -> str:
    return reason if reason in SKIP_REASONS else "other"


def skip_vector(counts: Mapping[str, int]) -> list[float]:
    """The counts in SKIP_REASONS order (for an all-reduce over ranks)."""
    vector = [0.0] * len(SKIP_REASONS)
    names = list(SKIP_REASONS)
    for reason, count in counts.items():
        vector[names.index(known_reason(reason))] += count
    return vector


def counts_from_vector(vector) -> dict[str, int]:
    """skip_vector's inverse, keeping only the reasons that occurred."""
    return {reason: int(round(count)) for reason, count in zip(SKIP_REASONS, vector) if round(count)}


def format_counts(counts: Mapping[str, int]) -> str:
    """`5 (missing_caption 3, unreadable_image 2)`, or `0`."""
    total = sum(counts.values())
    ordered = sorted(((reason, count) for reason, count in counts.items() if count),
                     key=lambda item: list(SKIP_REASONS).index(known_reason(item[0])))
    return f"{total}" + (" (" + ", ".join(f"{reason} {count}" for reason, count in ordered) + ")" if ordered else "")


class NoReadableSamplesError(ValueError):
    """A rank has too few usable samples to fill its batches; the message gives the skip counts and the fix."""


def no_samples_message(where: str, readable: int, batch_size: int, counts: Mapping[str, int]) -> str:
    skipped = sum(counts.values())
    if readable == 0:
        message = f"{where} read no usable sample of its {skipped}"
    else:
        message = (f"{where} read only {readable} usable sample of its {readable + skipped}, and a batch of "
                   f"{batch_size} needs 2 different samples (a contrastive loss learns nothing from one)")
    message += f"; skipped {format_counts(counts)}"
    main = max(counts, key=counts.get) if counts else None
    if main in FIXES and counts[main] >= 0.9 * skipped:
        message += f": {FIXES[main]}"
    return message
