"""Captions -> fixed-length int64 token tensors with the model's own open_clip tokenizer.

DALI has no text ops, so tokenisation always runs in Python: in the DataLoader workers that read the shards, or
in the loader's background thread when there are no workers, never on the training thread. An empty caption is
tokenised as the empty text (start and end tokens only), never as a placeholder string such as "nan".
"""

from __future__ import annotations

from typing import Sequence

import torch

DEFAULT_CONTEXT_LENGTH = 77


class CaptionTokenizer:
    """Batched tokenisation to (n, context_length) int64, whatever the wrapped tokenizer returns."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.context_length = int(getattr(tokenizer, "context_length", None) or DEFAULT_CONTEXT_LENGTH)

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        if not captions:
            return torch.zeros((0, self.context_length), dtype=torch.long)
        tokens = self.tokenizer(list(captions))
        if tokens.shape != (len(captions), self.context_length):
            raise ValueError(
                f"the tokenizer returned shape {tuple(tokens.shape)} for {len(captions)} captions; expected "
                f"({len(captions)}, {self.context_length})"
            )
        return tokens.to(torch.long)
