"""Reading webdataset tar shards (img2dataset's layout) and the torch path's image decoding.

A sample is a run of consecutive tar members sharing a key (the member name up to the first dot of its base
name, as webdataset defines it): `000000012.jpg`, `000000012.txt`, `000000012.json`. Extensions are compared
case-insensitively (`.JPG` is an image). Defined outcome for every kind of bad input:

| input                                   | outcome                                               |
|-----------------------------------------|-------------------------------------------------------|
| image without a .txt caption            | skipped, counted as `missing_caption`                 |
| .txt without an image                   | skipped, counted as `missing_image`                   |
| a key's image or caption twice in a row | skipped, counted as `duplicate_key` (which pairs?)    |
| the same key again, not adjacent        | a second sample (webdataset groups adjacent members)  |
| member without a key (`.jpg`, `README`) | not a sample (webdataset's rule), ignored             |
| directory entries                       | ignored                                               |
| 0-byte .txt                             | kept, empty caption (tokenised to start/end tokens)   |
| caption not UTF-8                       | kept, undecodable bytes read as U+FFFD                |
| truncated image, random bytes as .jpg   | skipped, counted as `unreadable_image`                |
| damaged tar (cut short, 0 bytes, ...)   | its samples not read are counted `unreadable_tar`:    |
|                                         | the shard's metadata count minus the samples read     |
| tar that ends cleanly short of its count| the shortfall counted as `missing_from_tar`           |
| empty tar                               | contributes nothing (alone: an error from sources.py) |
| grayscale, CMYK, RGBA/P PNG, WebP, ...  | converted to 3-channel RGB                            |
| 16-bit PNG                              | scaled to 8 bits as DALI does (round(v / 257))        |
| EXIF orientation                        | applied, as DALI does                                 |
"""

from __future__ import annotations

import io
import re
import tarfile
import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # open_clip's set; DALI decodes all four
CAPTION_EXTENSION = "txt"
_KEY_AND_EXTENSION = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


@dataclass
class RawSample:
    """One complete sample as stored: encoded image bytes and its caption. `key` is `<tar>:<offset>:<member>`
    (the form of DALI's source_info), unique per sample."""

    key: str
    image: bytes
    caption: str


@dataclass
class SkippedSample:
    """`count` samples not read, for `reason`; `detail` says what went wrong (a damaged tar's error)."""

    key: str
    reason: str
    count: int = 1
    detail: str = ""


def decode_caption(data: bytes) -> str:
    """UTF-8 caption text; an undecodable byte becomes U+FFFD instead of failing the sample."""
    return data.decode("utf-8", errors="replace")


def _key_and_extension(name: str) -> tuple[str, str] | None:
    match = _KEY_AND_EXTENSION.match(name)
    if match is None:
        return None
    return match.group(1), match.group(2).lower()


class _Group:
    def __init__(self, key: str):
        self.key = key
        self.image: tarfile.TarInfo | None = None
        self.caption: tarfile.TarInfo | None = None
        self.duplicate = False  # a second image or caption for the key: which pairs with which is unknown


def _groups(archive: tarfile.TarFile) -> Iterator[_Group]:
    """Key groups in tar order, reading headers only (the data of members is seeked over)."""
    group: _Group | None = None
    while True:
        member = archive.next()
        # TarFile remembers every member it has seen; forgetting them keeps memory flat over a 10k-sample shard.
        archive.members = []
        if member is None:
            break
        if not member.isfile():
            continue
        parsed = _key_and_extension(member.name)
        if parsed is None:
            continue
        key, extension = parsed
        if group is None or key != group.key:
            if group is not None:
                yield group
            group = _Group(key)
        if extension in IMAGE_EXTENSIONS:
            group.duplicate |= group.image is not None
            group.image = group.image or member
        elif extension == CAPTION_EXTENSION:
            group.duplicate |= group.caption is not None
            group.caption = group.caption or member
    if group is not None:
        yield group


class TruncatedTarError(tarfile.TarError):
    pass


def _check_end_of_archive(archive: tarfile.TarFile) -> None:
    """tarfile takes a header that is cut short or garbled for the end of the archive; a complete tar ends with
    two zero blocks there."""
    archive.fileobj.seek(archive.offset)
    end = archive.fileobj.read(2 * tarfile.BLOCKSIZE)
    if len(end) < 2 * tarfile.BLOCKSIZE or end.count(0) != len(end):
        raise TruncatedTarError(f"no tar header and no end-of-archive blocks at byte {archive.offset} "
                                "(the file is cut short or damaged there)")


def iter_tar_samples(path: str, start: int = 0, stop: int | None = None,
                     expected: int | None = None) -> Iterator[RawSample | SkippedSample]:
    """Samples [start, stop) of a shard (stop=None: to the end); incomplete ones come back as SkippedSample.

    `expected` is the shard's sample count from metadata. When the tar is damaged (or ends short of it), the
    samples of [start, stop or expected) not read come back as one SkippedSample with their count, so that
    readers that split a shard count each lost sample exactly once between them.
    """
    end = stop if stop is not None else expected
    position = start  # the first sample of the range not yet accounted for
    try:
        with tarfile.open(path, "r:") as archive:
            for index, group in enumerate(_groups(archive)):
                if index < start:
                    continue
                if stop is not None and index >= stop:
                    break
                if group.image is None:
                    yield SkippedSample(f"{path}:{group.key}", "missing_image")
                elif group.caption is None:
                    yield SkippedSample(f"{path}:{group.image.offset_data}:{group.image.name}", "missing_caption")
                elif group.duplicate:
                    yield SkippedSample(f"{path}:{group.image.offset_data}:{group.image.name}", "duplicate_key")
                else:
                    image = archive.extractfile(group.image).read()
                    caption = decode_caption(archive.extractfile(group.caption).read())
                    yield RawSample(f"{path}:{group.image.offset_data}:{group.image.name}", image, caption)
                position = index + 1
            else:
                _check_end_of_archive(archive)
    except (tarfile.TarError, EOFError, OSError) as exc:
        lost = max(0, (end if end is not None else position + 1) - position)
        yield SkippedSample(f"{path}:{position}", "unreadable_tar", lost, f"{type(exc).__name__}: {exc}")
        return
    if end is not None and position < end:
        yield SkippedSample(f"{path}:{position}", "missing_from_tar", end - position,
                            f"the tar ends after {position} samples, its metadata counts {end}")


_JPEG_FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_structure_ok(data: bytes) -> bool:
    """Walk the marker segments up to the start of scan: every length stays inside the file, a frame header with
    sane dimensions precedes the scan, and the file ends with EOI. nvImageCodec's parser (DALI 2.4.0) can crash
    the process, not just fail, on garbage after SOI, so such files must never reach it."""
    if data[:2] != b"\xff\xd8" or b"\xff\xd9" not in data[-1024:]:
        return False
    position, size, frame = 2, len(data), False
    while position + 4 <= size:
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            position += 2
            continue
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if length < 2 or position + 2 + length > size:
            return False
        segment = data[position + 4:position + 2 + length]
        if marker in _JPEG_FRAME_MARKERS:
            if len(segment) < 6:
                return False
            precision, height, width, components = segment[0], int.from_bytes(segment[1:3], "big"), \
                int.from_bytes(segment[3:5], "big"), segment[5]
            if precision not in (8, 12, 16) or width == 0 or height == 0 or not 1 <= components <= 4 \
                    or length != 8 + 3 * components:
                return False
            frame = True
        elif marker == 0xDA:  # start of scan: entropy-coded data follows
            return frame and len(segment) >= 1 and 1 <= segment[0] <= 4 and length == 6 + 2 * segment[0]
        elif marker == 0xD9:
            return False
        position += 2 + length
    return False


def _png_structure_ok(data: bytes) -> bool:
    """Every chunk's length and CRC, IHDR first, IEND last."""
    position, size, first = 8, len(data), True
    while position + 12 <= size:
        length = int.from_bytes(data[position:position + 4], "big")
        end = position + 12 + length
        if end > size:
            return False
        kind = data[position + 4:position + 8]
        if first and kind != b"IHDR":
            return False
        if zlib.crc32(data[position + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return False
        if kind == b"IEND":
            return True
        first, position = False, end
    return False


def looks_complete(data: bytes) -> bool:
    """A structural check without decoding that catches truncation, non-images and garbled headers (the DALI path
    runs it ahead, because one undecodable image fails a whole DALI batch and a garbled JPEG header can crash
    DALI outright): JPEG marker segments and EOI, PNG chunk lengths and CRCs, the WebP RIFF size."""
    if len(data) < 16:
        return False
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_structure_ok(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_structure_ok(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return int.from_bytes(data[4:8], "little") + 8 <= len(data) and data[12:15] == b"VP8"
    return False


def pil_decodes(data: bytes) -> bool:
    """A full decode with PIL: the second opinion for images that fail looks_complete."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        return True
    except Exception:
        return False


class UnreadableImageError(ValueError):
    pass


def scale_16bit_to_8bit(image):
    """16-bit grayscale (modes I;16*, I) to 8 bits the way DALI (nvImageCodec) does, round(v / 257); PIL's own
    convert("RGB") clips every value above 255 to white instead. 16-bit RGB PNGs reach PIL as 8-bit already."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")
    return image


def decode_rgb(data: bytes):
    """PIL image in RGB as DALI decodes it: the EXIF orientation applied, 16-bit scaled to 8 bits, grayscale,
    CMYK, palette and alpha images converted (alpha is dropped, as open_clip's `_convert_to_rgb`); a truncated
    or foreign file raises UnreadableImageError."""
    from PIL import Image, ImageOps

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return scale_16bit_to_8bit(image).convert("RGB")
    except Exception as exc:
        raise UnreadableImageError(f"{type(exc).__name__}: {exc}") from exc


def decode_rgb_file(path) -> "Image.Image":
    """decode_rgb of a file; a missing or unreadable file raises UnreadableImageError naming it."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UnreadableImageError(f"{type(exc).__name__}: {exc}") from exc
    return decode_rgb(data)


def random_resized_crop_box(width: int, height: int, rng, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params (10 tries, then a centre crop) drawing from `rng`
    (a random.Random), so the crop of a sample depends on its own seed, not on the worker that reads it."""
    import math

    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_transform(image, size: int, rng):
    """open_clip's training geometry: RandomResizedCrop(size, scale=(0.9, 1.0), bicubic, antialias) on PIL."""
    from PIL import Image

    top, left, h, w = random_resized_crop_box(image.width, image.height, rng)
    return image.crop((left, top, left + w, top + h)).resize((size, size), Image.BICUBIC)


def eval_transform(image, size: int):
    """open_clip's evaluation geometry: resize the shorter side to `size` (bicubic), then centre-crop."""
    import torchvision.transforms.functional as F
    from torchvision.transforms import InterpolationMode

    image = F.resize(image, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    return F.center_crop(image, [size, size])


def to_uint8_chw(image) -> np.ndarray:
    """(3, H, W) uint8; normalisation happens on the training device, on the whole batch. numpy, not torch: in a
    loaded DataLoader worker a torch copy of this size can cost 100x more (intra-op thread start-up)."""
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


def normalize_on_device(images: torch.Tensor, mean, std, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 NCHW -> (x / 255 - mean) / std on `device` in `dtype` (open_clip's ToTensor + Normalize, batched),
    as one fused x * (1 / (255 std)) - mean / std after the transfer, which moves the 4x smaller uint8 tensor."""
    images = images.to(device, non_blocking=True).to(torch.float32)
    std_t = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    scale = (1.0 / (255.0 * std_t)).to(device, torch.float32)
    shift = (-torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1) / std_t).to(device, torch.float32)
    return torch.addcmul(shift, images, scale).to(dtype)
