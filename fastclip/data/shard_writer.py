"""Write webdataset shards in img2dataset's layout (`<9-digit key>.jpg/.txt/.json` + `<shard>_stats.json`).

Used to turn other image-text data into shards for the fast path, and by the tests and benchmarks to make shards.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Iterable, Mapping

from fastclip.io import atomic_path


def sample_key(shard_index: int, index_in_shard: int, samples_per_shard: int = 10_000) -> str:
    """img2dataset's key: shard id x 10^4 + index, zero-padded to 9 digits."""
    return f"{shard_index * samples_per_shard + index_in_shard:09d}"


def write_shard(path: str | Path, samples: Iterable[tuple[str, Mapping[str, bytes]]], *,
                stats: bool = True, successes: int | None = None) -> int:
    """Write `(key, {extension: bytes})` samples to a tar (members `key.extension`, in the given order).

    With `stats`, also writes `<shard>_stats.json` whose `successes` is `successes` or the number of samples.
    Returns the number of samples written.
    """
    path = Path(path)
    count = 0
    with atomic_path(path) as temporary:
        with tarfile.open(temporary, "w") as archive:
            for key, members in samples:
                for extension, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{extension}")
                    info.size = len(data)
                    info.mtime = 0
                    archive.addfile(info, io.BytesIO(data))
                count += 1
    if stats:
        written = count if successes is None else successes
        now = time.time()
        payload = {"count": written, "successes": written, "failed_to_download": 0, "failed_to_resize": 0,
                   "duration": 0.0, "start_time": now, "end_time": now, "status_dict": {"success": written}}
        with atomic_path(path.with_name(path.stem + "_stats.json")) as temporary:
            temporary.write_text(json.dumps(payload))
    return count


def caption_sample(image: bytes, caption: str, *, image_extension: str = "jpg", key: str = "") -> dict[str, bytes]:
    """The members img2dataset writes for one sample: image, caption, and a json with the caption and key."""
    return {
        image_extension: image,
        "txt": caption.encode("utf-8"),
        "json": json.dumps({"caption": caption, "key": key, "status": "success"}).encode("utf-8"),
    }
