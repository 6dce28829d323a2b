"""The error fastclip-eval reports as a one-line message (exit status 2) rather than a traceback."""

from __future__ import annotations


class InputError(ValueError):
    """Inputs fastclip-eval cannot use; the message names the path or flag and what was expected."""
