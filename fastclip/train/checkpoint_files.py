"""Which checkpoint files an epoch leaves in LOGS/NAME/checkpoints, with open_clip's flags: epoch_N.pt every
--save-frequency epochs and after the last, epoch_latest.pt with --save-most-recent, and the previous epoch_K.pt
deleted with --delete-previous-checkpoint. Every file is written to a temporary file and renamed."""

from __future__ import annotations

import logging
from pathlib import Path

from fastclip.models import find_checkpoints, save_checkpoint

LATEST_CHECKPOINT_NAME = "epoch_latest.pt"  # open_clip's name

_log = logging.getLogger("fastclip.train")


def epoch_checkpoint_due(completed: int, args) -> bool:
    return completed == args.epochs or (args.save_frequency > 0 and completed % args.save_frequency == 0)


def write_epoch_checkpoints(checkpoint_dir: Path, completed: int, args, **checkpoint) -> list[Path]:
    """Write what epoch `completed` (1-based) is due; `checkpoint` holds save_checkpoint's keyword arguments.

    Returns the files written.
    """
    written = []
    if epoch_checkpoint_due(completed, args):
        path = checkpoint_dir / f"epoch_{completed}.pt"
        save_checkpoint(path, epoch=completed, **checkpoint)
        written.append(path)
        if args.delete_previous_checkpoint:
            # Only once a newer one exists, so a run never holds no checkpoint (open_clip deletes epoch_{N-1}.pt
            # even in epochs that write none).
            older = [previous for epoch, previous in find_checkpoints(checkpoint_dir) if epoch < completed]
            if older:
                older[-1].unlink(missing_ok=True)
                _log.info("deleted the previous checkpoint %s", older[-1])
    if args.save_most_recent:
        path = checkpoint_dir / LATEST_CHECKPOINT_NAME
        save_checkpoint(path, epoch=completed, **checkpoint)
        written.append(path)
    return written
