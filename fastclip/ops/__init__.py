"""fastclip's operators. Each op has a plain-PyTorch `<op>_ref` beside one dispatcher `<op>(..., backend=...)`."""

from fastclip.ops.rank_average import rank_average, rank_average_ref

__all__ = ["rank_average", "rank_average_ref"]
