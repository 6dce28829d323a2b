"""What the training data skipped and padded, summed over ranks, for metrics.jsonl and the epoch line of out.log.

Every rank counts its own skips (by reason, fastclip.data.skips) and the pads of its batches; one all-reduce at each
logged step (the one that already sums the loss) makes them global. `samples_seen` counts real samples: a pad
repeats a sample the step has already seen, so it is taken off.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastclip.data.loader import TrainData
from fastclip.data.skips import SKIP_REASONS, counts_from_vector, format_counts, skip_vector
from fastclip.train.distributed import World, all_reduce_sum


@dataclass(frozen=True)
class DataCounts:
    """Over all ranks: pads since the last logged step, skips in this epoch so far and in the run so far."""

    pads: int
    epoch_skips: dict[str, int]
    run_skips: dict[str, int]

    def metrics(self) -> dict:
        return {
            "skipped": sum(self.run_skips.values()),
            "skipped_by_reason": self.run_skips,
            "epoch_skipped": sum(self.epoch_skips.values()),
            "epoch_skipped_by_reason": self.epoch_skips,
        }

    def phrase(self) -> str:
        return f"skipped {format_counts(self.epoch_skips)} this epoch, {format_counts(self.run_skips)} in the run"


def reduce_with_counts(values: list[float], data: TrainData, pads: int, world: World) -> tuple[list[float], DataCounts]:
    """all_reduce_sum of `values` and of the data counts, in one collective."""
    reasons = len(SKIP_REASONS)
    summed = all_reduce_sum([*values, float(pads), *skip_vector(data.epoch_skip_counts),
                             *skip_vector(data.skip_counts)], world)
    head, tail = summed[:len(values)], summed[len(values):]
    counts = DataCounts(pads=int(round(tail[0])), epoch_skips=counts_from_vector(tail[1:1 + reasons]),
                        run_skips=counts_from_vector(tail[1 + reasons:]))
    return head, counts
