"""Small img2dataset-style shards for the data tests, including every kind of bad input the loader must survive."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from fastclip.data.shard_writer import caption_sample, sample_key, write_shard


def picture(seed: int, width: int = 40, height: int = 32) -> Image.Image:
    """A smooth RGB picture (gradients + a seeded offset), so that resampling differences stay small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, size=3)
    channels = [(base[c] + 90 * np.sin((x * (c + 1) + y * (3 - c)) / (9.0 + seed % 5))) % 255 for c in range(3)]
    return Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(seed: int, width: int = 40, height: int = 32) -> bytes:
    return encode(picture(seed, width, height), "JPEG", quality=90)


def truncated_jpeg(seed: int) -> bytes:
    data = jpeg(seed)
    return data[: len(data) // 2]


def random_bytes(seed: int, size: int = 3000) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def garbled_header_jpeg(seed: int) -> bytes:
    """SOI, then random bytes, then EOI: DALI 2.4.0's JPEG parser can crash the process on this, so the
    structural check must stop it before DALI sees it."""
    data = jpeg(seed, 64, 64)
    return data[:4] + random_bytes(seed, len(data) - 6) + data[-2:]


def bad_huffman_table_jpeg(seed: int) -> bytes:
    """Well-formed marker structure but an impossible Huffman table: only a decoder finds out, which exercises
    DALI's retry-without-the-bad-sample path."""
    data = bytearray(jpeg(seed, 64, 64))
    table = data.find(b"\xff\xc4")
    data[table + 5:table + 21] = bytes([200] * 16)  # code counts per length: far more codes than can exist
    return bytes(data)


def write_good_shards(folder: Path, sizes: list[int], *, first_shard: int = 0, stats: bool = True,
                      width: int = 40, height: int = 32) -> list[str]:
    """Shards of good JPEG samples with captions `caption <key>`; returns every sample's image member name."""
    folder.mkdir(parents=True, exist_ok=True)
    members = []
    for offset, size in enumerate(sizes):
        shard = first_shard + offset
        samples = []
        for index in range(size):
            key = sample_key(shard, index)
            samples.append((key, caption_sample(jpeg(shard * 1000 + index, width, height), f"caption {key}", key=key)))
            members.append(f"{key}.jpg")
        write_shard(folder / f"{shard:05d}.tar", samples, stats=stats)
    return members


DAMAGE = {
    "truncated": truncated_jpeg,
    "random_bytes": random_bytes,
    "garbled_header": garbled_header_jpeg,
    "bad_huffman_table": bad_huffman_table_jpeg,
}


def write_shards_with_planted_corruption(folder: Path, sizes: list[int], planted: list[int], *,
                                         width: int = 40, height: int = 32, kinds=tuple(DAMAGE)) -> None:
    """Good shards where the samples at the `planted` global positions are damaged, cycling through `kinds`."""
    folder.mkdir(parents=True, exist_ok=True)
    position = 0
    for shard, size in enumerate(sizes):
        samples = []
        for index in range(size):
            key = sample_key(shard, index)
            image = jpeg(position, width, height)
            if position in planted:
                image = DAMAGE[kinds[planted.index(position) % len(kinds)]](position)
            samples.append((key, caption_sample(image, f"caption {key}", key=key)))
            position += 1
        write_shard(folder / f"{shard:05d}.tar", samples)


# The bad-input zoo: (member-name stem, members, expected outcome). Outcomes: "kept" or a skip reason.
def zoo_samples() -> list[tuple[str, dict[str, bytes], str]]:
    image = picture(7)
    return [
        ("000000000", caption_sample(jpeg(0), "a plain photo"), "kept"),
        ("000000001", {"jpg": truncated_jpeg(1), "txt": b"truncated"}, "unreadable_image"),
        ("000000002", {"jpg": random_bytes(2), "txt": b"random bytes"}, "unreadable_image"),
        ("000000003", {"jpg": jpeg(3), "json": b"{}"}, "missing_caption"),
        ("000000004", {"txt": b"a caption without its image", "json": b"{}"}, "missing_image"),
        ("000000005", {"jpg": jpeg(5), "txt": b""}, "kept"),  # 0-byte caption: the empty text
        ("000000006", {"jpg": encode(image.convert("L"), "JPEG"), "txt": b"grayscale"}, "kept"),
        ("000000007", {"jpg": encode(image.convert("CMYK"), "JPEG"), "txt": b"cmyk"}, "kept"),
        ("000000008", {"png": encode(image.convert("RGBA"), "PNG"), "txt": b"rgba png"}, "kept"),
        ("000000009", {"jpg": encode(image, "JPEG", progressive=True), "txt": b"progressive"}, "kept"),
        ("000000010", {"webp": encode(image, "WEBP"), "txt": b"webp"}, "kept"),
        ("000000011", {"JPG": jpeg(11), "TXT": "upper-case extensions, caf\u00e9".encode()}, "kept"),
        ("000000012", caption_sample(jpeg(12), "another plain photo"), "kept"),
    ]


def write_zoo_shard(folder: Path, name: str = "00000.tar") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    write_shard(path, [(stem, members) for stem, members, _ in zoo_samples()])
    return path


def write_empty_shard(folder: Path, name: str) -> Path:
    """A valid tar with no member (what tarfile writes for an empty archive), with img2dataset stats of 0."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    write_shard(path, [])
    return path
