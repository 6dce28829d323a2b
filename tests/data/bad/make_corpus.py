"""Writes the bad-input corpus of tests/data/bad/ (see README.md there for every case and its outcome).

    .venv/bin/python tests/data/bad/make_corpus.py [OUT_DIR]      # default: this folder

Everything is generated from fixed seeds and fixed timestamps, so a re-run rewrites the same cases. The shards are
written the way img2dataset 1.47 writes them (`<9-digit key>.jpg/.txt/.json` members, `<shard>_stats.json`
beside each tar) and then damaged on purpose. Only numpy, Pillow and torch are needed (no fastclip import), so the
corpus does not change when fastclip's own writers do.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
STATS_TIME = 1_700_000_000.0  # a fixed start/end time, so that the stats files do not change between runs

# Shard cases: the samples a sample-level test expects, written down here so the tests and README share them.
TRUNCATED_SAMPLES = 30  # samples in truncated/00001.tar before it is cut at 60% of its size
TRUNCATED_KEPT = 18  # complete samples before the cut (checked when the corpus is written)
ZERO_BYTE_CLAIMED = 8  # samples the stats file of zero_byte/00001.tar claims (the tar itself has 0 bytes)


def picture(seed: int, width: int = 40, height: int = 32) -> np.ndarray:
    """A smooth RGB picture (gradients + a seeded offset): resampling and JPEG differences stay small on it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, size=3)
    channels = [(base[c] + 90 * np.sin((x * (c + 1) + y * (3 - c)) / (9.0 + seed % 5))) % 255 for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(seed: int, width: int = 40, height: int = 32) -> bytes:
    return encode(Image.fromarray(picture(seed, width, height)), "JPEG", quality=90)


def png_rgb16(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one: it keeps 8 bits per channel for RGB)."""
    height, width, _ = array.shape
    raw = b"".join(b"\0" + array[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def ramp16(width: int = 40, height: int = 32) -> np.ndarray:
    """A 16-bit ramp over the whole 0..65535 range, mid-grey on average (PIL's clipping turns it white)."""
    y, x = np.mgrid[0:height, 0:width]
    return ((x * height + y) * 65535 // (width * height - 1)).astype(np.uint16)


def exif_rotated_jpeg() -> bytes:
    """A 48x24 landscape stored with EXIF orientation 6 (rotate 90 degrees clockwise to view): shown 24x48."""
    image = Image.fromarray(picture(21, 48, 24))
    exif = image.getexif()
    exif[0x0112] = 6
    return encode(image, "JPEG", quality=92, exif=exif)


def large_jpeg() -> bytes:
    """3000 x 2000 in flat 512-px blocks (about 40 kB, aligned with JPEG's blocks; 18 MB once decoded)."""
    y, x = np.mgrid[0:2000, 0:3000]
    blocks = ((x // 512) * 37 + (y // 512) * 91) % 256
    array = np.stack([blocks, 255 - blocks, (blocks * 3) % 256], axis=-1).astype(np.uint8)
    return encode(Image.fromarray(array), "JPEG", quality=75, optimize=True)


def image_formats() -> dict[str, bytes]:
    """Every image format img2dataset can leave in a shard (file name -> bytes)."""
    rgb = Image.fromarray(picture(7))
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (32, 1))))
    return {
        "jpeg_baseline.jpg": encode(rgb, "JPEG", quality=90),
        "jpeg_progressive.jpg": encode(rgb, "JPEG", quality=90, progressive=True),
        "jpeg_grayscale.jpg": encode(rgb.convert("L"), "JPEG", quality=90),
        "jpeg_cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG", quality=90),
        "jpeg_exif_rotated.jpg": exif_rotated_jpeg(),
        "png_8bit.png": encode(rgb, "PNG"),
        "png_16bit_gray.png": encode(Image.fromarray(ramp16()), "PNG"),
        "png_16bit_rgb.png": png_rgb16(np.stack([ramp16(), 65535 - ramp16(), ramp16() // 2], axis=-1)),
        "png_palette.png": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG"),
        "png_rgba.png": encode(rgba, "PNG"),
        "webp.webp": encode(rgb, "WEBP", quality=90),
        "one_pixel.png": encode(Image.new("RGB", (1, 1), (200, 30, 90)), "PNG"),
        "one_pixel.jpg": encode(Image.new("RGB", (1, 1), (200, 30, 90)), "JPEG", quality=95),
        "large_3000x2000.jpg": large_jpeg(),
    }


def key(shard: int, index: int) -> str:
    """img2dataset's key: shard id x 10^4 + index, zero-padded to 9 digits."""
    return f"{shard * 10_000 + index:09d}"


def sample_json(sample_key: str, caption: str | None) -> bytes:
    record = {"url": f"http://127.0.0.1:8000/{sample_key}.jpg", "key": sample_key, "status": "success",
              "error_message": None, "width": 40, "height": 32, "original_width": 40, "original_height": 32}
    if caption is not None:
        record["caption"] = caption
    return json.dumps(record).encode()


def good_sample(shard: int, index: int) -> list[tuple[str, bytes]]:
    sample_key = key(shard, index)
    caption = f"a picture numbered {sample_key}"
    return [(f"{sample_key}.jpg", jpeg(shard * 1000 + index)), (f"{sample_key}.txt", caption.encode()),
            (f"{sample_key}.json", sample_json(sample_key, caption))]


def write_tar(path: Path, members: list[tuple[str, bytes | None]]) -> None:
    """Members in order; bytes None makes a directory entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime, info.uname, info.gname = 0, "", ""
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, io.BytesIO(data))


def write_stats(tar: Path, successes: int) -> None:
    """img2dataset's `<shard>_stats.json` (only the successes are written to the tar)."""
    stats = {"count": successes, "successes": successes, "failed_to_download": 0, "failed_to_resize": 0,
             "duration": 1.0, "start_time": STATS_TIME, "end_time": STATS_TIME + 1,
             "status_dict": {"success": successes}}
    tar.with_name(tar.stem + "_stats.json").write_text(json.dumps(stats, indent=4) + "\n")


def write_good_shard(path: Path, shard: int, count: int) -> None:
    write_tar(path, [member for index in range(count) for member in good_sample(shard, index)])
    write_stats(path, count)


def write_shards(out: Path) -> None:
    shards = out / "shards"

    # img2dataset without --caption_col: image and json only.
    for shard in range(2):
        members = []
        for index in range(6):
            sample_key = key(shard, index)
            members += [(f"{sample_key}.jpg", jpeg(100 + shard * 10 + index)),
                        (f"{sample_key}.json", sample_json(sample_key, None))]
        write_tar(shards / "no_captions" / f"{shard:05d}.tar", members)
        write_stats(shards / "no_captions" / f"{shard:05d}.tar", 6)

    # A shard cut at 60% of its size beside an intact one.
    write_good_shard(shards / "truncated" / "00000.tar", 0, 10)
    cut = shards / "truncated" / "00001.tar"
    write_good_shard(cut, 1, TRUNCATED_SAMPLES)
    data = cut.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    kept = complete_samples_before_cut(data, int(len(data) * 0.6))
    assert kept == TRUNCATED_KEPT, f"the cut keeps {kept} samples, TRUNCATED_KEPT says {TRUNCATED_KEPT}"

    # An interrupted write: a 0-byte tar whose stats still claim its samples.
    write_good_shard(shards / "zero_byte" / "00000.tar", 0, 10)
    empty = shards / "zero_byte" / "00001.tar"
    empty.write_bytes(b"")
    write_stats(empty, ZERO_BYTE_CLAIMED)

    # `tar cf shard.tar folder/`: a directory entry, then members under folder/.
    members = [("part/", None)] + [(f"part/{name}", data) for index in range(5)
                                   for name, data in good_sample(0, index)]
    write_tar(shards / "directory_entry" / "00000.tar", members)
    write_stats(shards / "directory_entry" / "00000.tar", 5)

    # Duplicate keys: key 1 twice in a row (ambiguous: which image goes with the caption?), key 2 again later
    # (webdataset groups consecutive members, so that is a second, separate sample).
    members = good_sample(0, 0) + good_sample(0, 1) + [(f"{key(0, 1)}.jpg", jpeg(999))] + good_sample(0, 2) \
        + good_sample(0, 3) + good_sample(0, 2)
    write_tar(shards / "duplicate_keys" / "00000.tar", members)
    write_stats(shards / "duplicate_keys" / "00000.tar", 5)  # key groups: 0, 1, 2, 3, 2

    # Members that are not complete samples, between good ones.
    members = good_sample(0, 0)
    members += [(f"{key(0, 1)}.txt", b"a caption whose image failed"), (f"{key(0, 1)}.json", b"{}")]  # no image
    members += [(f"{key(0, 2)}.jpg", jpeg(2)), (f"{key(0, 2)}.json", b"{}")]  # no caption
    members += [(".jpg", jpeg(3)), ("README", b"not a sample")]  # no key: not a sample at all
    members += good_sample(0, 4)
    write_tar(shards / "incomplete_samples" / "00000.tar", members)
    write_stats(shards / "incomplete_samples" / "00000.tar", 4)  # key groups 0, 1, 2, 4

    # Captions: Latin-1 bytes (not UTF-8), 50 kB of text, a UTF-8 character cut in half at the end.
    members = good_sample(0, 0)
    members += [(f"{key(0, 1)}.jpg", jpeg(11)), (f"{key(0, 1)}.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"))]
    members += [(f"{key(0, 2)}.jpg", jpeg(12)), (f"{key(0, 2)}.txt", ("a very long caption " * 2_500).encode())]
    members += [(f"{key(0, 3)}.jpg", jpeg(13)), (f"{key(0, 3)}.txt", "na\u00efve \u65e5\u672c".encode()[:-1])]
    write_tar(shards / "captions" / "00000.tar", members)
    write_stats(shards / "captions" / "00000.tar", 4)

    # One sample per image format, as img2dataset keeps them with --skip_reencode / --encode_format png|webp.
    members = []
    for index, (name, data) in enumerate(sorted(image_formats().items())):
        sample_key = key(0, index)
        extension = name.rsplit(".", 1)[1]
        members += [(f"{sample_key}.{extension}", data), (f"{sample_key}.txt", f"format {name}".encode())]
    write_tar(shards / "formats" / "00000.tar", members)
    write_stats(shards / "formats" / "00000.tar", len(image_formats()))


def complete_samples_before_cut(data: bytes, cut: int) -> int:
    """Key groups of the uncut tar `data` that a reader still gets whole when the file ends at byte `cut`: those
    whose members, with their padding to 512-byte blocks, all end before the cut."""
    ends: dict[str, int] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive:
            padded = -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            ends[member.name.split(".", 1)[0]] = member.offset_data + padded
    return sum(1 for end in ends.values() if end <= cut)


def write_images(out: Path) -> None:
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in image_formats().items():
        (folder / name).write_bytes(data)


def write_csvs(out: Path) -> None:
    """open_clip CSVs (tab-separated, columns filepath and title); image paths relative to the CSV's folder."""
    folder = out / "csv"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [("../images/jpeg_baseline.jpg", "a baseline jpeg"), ("../images/png_8bit.png", "an 8-bit png"),
            ("../images/webp.webp", "a webp picture"), ("../images/jpeg_cmyk.jpg", "a cmyk jpeg")]
    body = "".join(f"{path}\t{caption}\n" for path, caption in rows)
    (folder / "bom.csv").write_bytes(("\ufefffilepath\ttitle\n" + body).encode("utf-8"))
    (folder / "crlf.csv").write_bytes(("filepath\ttitle\n" + body).replace("\n", "\r\n").encode())
    quoted = "".join(f'{path}\t"{caption}\twith a tab"\n' for path, caption in rows)
    (folder / "quoted_tabs.csv").write_text("filepath\ttitle\n" + quoted)
    (folder / "missing_column.csv").write_text("filepath\tcaption\n" + body)
    (folder / "empty.csv").write_bytes(b"")


def write_checkpoints(out: Path) -> None:
    import torch

    folder = out / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    # What fastclip-train writes, for a model fastclip cannot build here from its weights alone (ViT-B-32's
    # config needs no download, but its weights would be 600 MB: a 2-tensor stand-in keeps the file small).
    checkpoint = {"epoch": 3, "name": "elsewhere", "model_name": "ViT-B-32", "samples_seen": 96,
                  "state_dict": {"logit_scale": torch.tensor(4.6052), "visual.proj": torch.zeros(4, 2)}}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    (folder / "other_model.pt").write_bytes(buffer.getvalue())
    # A bare state_dict with foreign keys (an open_clip export of some other architecture).
    buffer = io.BytesIO()
    torch.save({"encoder.weight": torch.zeros(3, 3)}, buffer)
    (folder / "foreign_state_dict.pt").write_bytes(buffer.getvalue())
    # A checkpoint cut at a third of its size (a copy or a write interrupted).
    buffer = io.BytesIO()
    torch.save({"epoch": 1, "name": "cut", "state_dict": {"weight": torch.arange(256.0)}}, buffer)
    data = buffer.getvalue()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 3])


RESULT_ROW = {"run": "tiny", "epoch": 1, "samples_seen": 32, "benchmark": "zeroshot", "dataset": "toyworld_heldout",
              "metric": "top1", "variant": "", "value": 0.25, "ci_low": 0.2, "ci_high": 0.3, "n": 64, "seconds": 1.5}


def write_results(out: Path) -> None:
    """A results.jsonl whose last line was cut mid-write (an eval killed while appending)."""
    folder = out / "results" / "truncated_mid_line"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({**RESULT_ROW, "epoch": epoch, "samples_seen": 32 * epoch}) for epoch in (1, 2, 3)]
    text = "\n".join(lines)
    (folder / "results.jsonl").write_text(text[: len(text) - len(lines[-1]) // 2])


def write_suites(out: Path) -> None:
    folder = out / "suites"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "unknown_keys.toml").write_text(
        '[suite]\nname = "typo"\n\n[datasets.heldout]\ntype = "toyworld"\n\n'
        '[benchmarks.zeroshot]\ndatasets = ["heldout"]\nresampels = 200   # typo of an option name\n'
    )


def write_folders(out: Path) -> None:
    """Image folders for --dataset-type folder that are not <root>/<class>/<image>."""
    flat = out / "folders" / "flat_images"
    flat.mkdir(parents=True, exist_ok=True)
    for index in range(3):
        (flat / f"{index}.jpg").write_bytes(jpeg(200 + index))
    empty_classes = out / "folders" / "classes_without_images"
    for classname in ("cat", "dog"):
        (empty_classes / classname).mkdir(parents=True, exist_ok=True)
        (empty_classes / classname / "labels.txt").write_text(f"{classname}\n")


def write_corpus(out: Path) -> None:
    write_images(out)
    write_shards(out)
    write_csvs(out)
    write_checkpoints(out)
    write_results(out)
    write_suites(out)
    write_folders(out)


if __name__ == "__main__":
    write_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
