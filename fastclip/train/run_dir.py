"""Whether LOGS/NAME can be (re)started, and from which checkpoint: a run is what its checkpoints hold.

A start that fails before its first checkpoint (bad data found in epoch 1, a crash, Ctrl-C) leaves out.log,
params.json and perhaps metrics.jsonl behind, but nothing that could be resumed. Such a folder does not block its
name: the same command starts the run over (out.log is appended to, the stale metrics lines are dropped), and
`--resume latest` on it starts from scratch with a message, as open_clip does when it finds no checkpoint.
A folder with a checkpoint is a run: only `--resume` continues it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastclip.models import latest_valid_checkpoint, resumable_checkpoints


@dataclass(frozen=True)
class RunStart:
    resume_path: str | None  # the checkpoint to load, if any
    note: str | None  # what happened to an earlier start, for out.log


def prepare_run_start(run_dir: Path, checkpoint_dir: Path, resume: str | None) -> RunStart:
    """Raises ValueError when `run_dir` holds a run that this command would overwrite."""
    has_checkpoint = bool(resumable_checkpoints(checkpoint_dir)) if checkpoint_dir.is_dir() else False
    earlier_start = run_dir.is_dir() and any(run_dir.iterdir())
    if resume is None:
        if has_checkpoint:
            raise ValueError(f"{run_dir} already holds a run; continue it with --resume latest, or start another "
                             "with a new --name")
        if earlier_start:
            return RunStart(None, f"{run_dir}: an earlier start left no checkpoint; starting the run over")
        return RunStart(None, None)
    if resume != "latest":
        return RunStart(resume, None)
    if not has_checkpoint:
        where = "an earlier start left no checkpoint" if earlier_start else "the run does not exist yet"
        return RunStart(None, f"--resume latest: no checkpoint in {checkpoint_dir} ({where}); starting from scratch")
    return RunStart(str(latest_valid_checkpoint(checkpoint_dir)), None)
