"""`fastclip-eval make-stimuli`: write a generated cue-conflict set in the Geirhos layout, with a manifest.

    fastclip-eval make-stimuli --silhouettes SIL_DIR --textures TEX_DIR|toyworld --out OUT [options]

    SIL_DIR/<category>/<category><i>.png      dark objects on a light ground (texture-vs-shape's filled-silhouettes)
    TEX_DIR/<category>/<anything>.png         any images; a Geirhos name <shape><i>-<texture><j>.png counts as a
                                              texture of <texture> (so a cue-conflict folder serves as a source)
    toyworld                                  the toy world's 16 full-frame textures (fastclip.data.toyworld)

    OUT/<shape>/<shape><i>-<texture><j>.png   i: the silhouette's number, j: the texture source's rank in its category
    OUT/manifest.csv                          imagename, path, shape, texture, shape_source, texture_source
    OUT/manifest.json                         the settings, the categories and the image count

Each stimulus is a silhouette filled with a texture on a plain background (fastclip.ops.cue_conflict, pairs batched
into one launch per --batch-size) or, with --method phase-swap, the silhouette's Fourier phase with the texture's
amplitude (--background and --feather do not apply there). The shape-bias benchmark reads OUT like the real set
(`fastclip-eval RUN --cue-conflict OUT`).
Category names must be lower-case letters only: the Geirhos file name separates category and number by the digits.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from fastclip.eval.datasets.images import ImageDecodeError, decode_image
from fastclip.eval.errors import InputError
from fastclip.io import atomic_path, atomic_write_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CATEGORY_NAME = re.compile(r"^[a-z]+$")
NUMBERED_NAME = re.compile(r"^(?P<category>[a-z]+)(?P<index>\d+)$")
GEIRHOS_NAME = re.compile(r"^(?P<shape>[a-z]+)\d+-(?P<texture>[a-z]+)\d+$")
TOYWORLD = "toyworld"
MANIFEST_COLUMNS = ("imagename", "path", "shape", "texture", "shape_source", "texture_source")


class StimuliError(InputError):
    """Inputs make-stimuli cannot use; the message names the path or flag and what was expected."""


@dataclass(frozen=True)
class Source:
    category: str
    index: int  # the <i> or <j> of the output name
    origin: str  # file path, or a description of a generated image


def _image_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _category_folders(root: Path, flag: str) -> list[Path]:
    if not root.is_dir():
        raise StimuliError(f"{flag} {root}: no such folder; expected {root}/<category>/<images>")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise StimuliError(f"{flag} {root}: no category folders; expected {root}/<category>/<images>")
    return folders


def _check_category(name: str, where: Path) -> str:
    if not CATEGORY_NAME.match(name):
        raise StimuliError(
            f"{where}: category {name!r} must be lower-case letters only (the Geirhos name <shape><i>-<texture><j> "
            "tells category and number apart by the digits); rename the folder"
        )
    return name


def _decode(path: Path) -> torch.Tensor:
    try:
        return decode_image(path)
    except ImageDecodeError as exc:
        raise StimuliError(str(exc)) from exc


def _stack(images: list[torch.Tensor], sources: list[Source], what: str, hint: str) -> torch.Tensor:
    sizes = {tuple(image.shape[-2:]) for image in images}
    if len(sizes) > 1:
        first = next(s for s, im in zip(sources, images) if tuple(im.shape[-2:]) == tuple(images[0].shape[-2:]))
        odd = next(s for s, im in zip(sources, images) if tuple(im.shape[-2:]) != tuple(images[0].shape[-2:]))
        raise StimuliError(
            f"{what} differ in size: {odd.origin} is {images[sources.index(odd)].shape[-2:]}, {first.origin} is "
            f"{tuple(images[0].shape[-2:])}; {hint}"
        )
    return torch.stack(images)


def load_silhouettes(root: Path) -> tuple[list[Source], torch.Tensor]:
    """Silhouette sources and their uint8 (S,3,H,W) images; <i> is the number in <category><i>.png, else the rank."""
    sources, images = [], []
    for folder in _category_folders(root, "--silhouettes"):
        category = _check_category(folder.name, folder)
        paths = _image_paths(folder)
        if not paths:
            raise StimuliError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        numbered = [NUMBERED_NAME.match(p.stem) for p in paths]
        use_numbers = all(m is not None and m["category"] == category for m in numbered)
        for rank, (path, match) in enumerate(zip(paths, numbered), start=1):
            sources.append(Source(category, int(match["index"]) if use_numbers else rank, str(path)))
            images.append(_decode(path))
    return sources, _stack(images, sources, "silhouettes", "resize them to one size first")


def _crop(image: torch.Tensor, crop: int | None, origin: str) -> torch.Tensor:
    if crop is None:
        return image
    if min(image.shape[-2:]) < crop:
        raise StimuliError(f"{origin}: {tuple(image.shape[-2:])} pixels is smaller than --texture-crop {crop}")
    return image[:, :crop, :crop]


def load_textures(spec: str, crop: int | None, toyworld_size_px: int) -> tuple[list[Source], torch.Tensor]:
    """Texture sources and uint8 (T,3,Ht,Wt) images: a folder of category folders, or the toy world's textures."""
    if spec == TOYWORLD:
        return _toyworld_textures(crop, toyworld_size_px)
    by_category: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for folder in _category_folders(Path(spec), "--textures"):
        for path in _image_paths(folder):
            geirhos = GEIRHOS_NAME.match(path.stem)
            category = geirhos["texture"] if geirhos else _check_category(folder.name, folder)
            by_category.setdefault(category, []).append((str(path), _crop(_decode(path), crop, str(path))))
    if not by_category:
        raise StimuliError(f"--textures {spec}: no images in its category folders")
    sources, images = [], []
    for category in sorted(by_category):
        for rank, (origin, image) in enumerate(by_category[category], start=1):
            sources.append(Source(category, rank, origin))
            images.append(image)
    return sources, _stack(images, sources, "texture images", "pass --texture-crop N to cut one size from each")


def _toyworld_textures(crop: int | None, image_size: int) -> tuple[list[Source], torch.Tensor]:
    from fastclip.data.toyworld import texture_only_set
    from fastclip.ops.toyworld_render import CATEGORIES, TEXTURE_NAMES

    stimuli = texture_only_set(1, image_size=image_size)
    images = (stimuli.images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu()
    sources = []
    counts: dict[int, int] = {}
    for label in stimuli.texture_labels.tolist():
        counts[label] = counts.get(label, 0) + 1
        sources.append(Source(CATEGORIES[label], counts[label], f"toyworld texture {TEXTURE_NAMES[label]}"))
    images = torch.stack([_crop(image, crop, source.origin) for image, source in zip(images, sources)])
    return sources, images


def select_pairs(
    silhouettes: list[Source], textures: list[Source], *, conflict_only: bool, per_silhouette: int | None, seed: int
) -> list[tuple[int, int]]:
    """(silhouette, texture) index pairs: every allowed texture per silhouette, or `per_silhouette` of them chosen
    by a permutation seeded with (seed, silhouette number) so the choice does not depend on the other silhouettes."""
    pairs = []
    for s, silhouette in enumerate(silhouettes):
        allowed = [
            t for t, texture in enumerate(textures) if not (conflict_only and texture.category == silhouette.category)
        ]
        if per_silhouette is not None and per_silhouette < len(allowed):
            generator = torch.Generator().manual_seed(seed * 1_000_003 + s)
            chosen = torch.randperm(len(allowed), generator=generator)[:per_silhouette].sort().values
            allowed = [allowed[i] for i in chosen.tolist()]
        pairs += [(s, t) for t in allowed]
    if not pairs:
        raise StimuliError(
            "no (silhouette, texture) pairs: with --pairs conflict every texture shares the shape's category"
        )
    return pairs


def render(
    method: str,
    silhouette_images: torch.Tensor,
    texture_images: torch.Tensor,
    pairs: torch.Tensor,
    *,
    size: int,
    texture_fit: str,
    background: list[float],
    feather: float,
    backend: str,
) -> torch.Tensor:
    """uint8 (P,3,size,size) stimuli for the pairs, on the inputs' device."""
    from fastclip.ops.cue_conflict import cue_conflict, phase_amplitude_swap, silhouette_masks

    if method == "phase-swap":
        swapped = phase_amplitude_swap(silhouette_images, texture_images, pairs, size=size, texture_fit=texture_fit)
        return torch.floor(swapped * 255 + 0.5).to(torch.uint8)
    return cue_conflict(
        silhouette_masks(silhouette_images), texture_images, pairs, background=background, texture_fit=texture_fit,
        size=size, feather=feather, out_dtype=torch.uint8, backend=backend,
    )  # fmt: skip


def _write_png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    with atomic_path(path) as temporary:
        Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(temporary, format="PNG")


def _manifest_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def make_stimuli(args: argparse.Namespace) -> list[dict]:
    """Generate and write the set described by the parsed arguments; returns the manifest rows."""
    silhouettes, silhouette_images = load_silhouettes(args.silhouettes)
    textures, texture_images = load_textures(args.textures, args.texture_crop, args.size)
    pairs = select_pairs(
        silhouettes, textures, conflict_only=args.pairs == "conflict", per_silhouette=args.per_silhouette,
        seed=args.seed,
    )  # fmt: skip
    device = torch.device(args.device)
    silhouette_images, texture_images = silhouette_images.to(device), texture_images.to(device)
    rows = []
    for start in tqdm(range(0, len(pairs), args.batch_size), desc="make-stimuli", unit="batch"):
        batch = pairs[start : start + args.batch_size]
        stimuli = render(
            args.method, silhouette_images, texture_images, torch.tensor(batch, device=device), size=args.size,
            texture_fit=args.texture_fit, background=args.background, feather=args.feather, backend=args.backend,
        )  # fmt: skip
        for (s, t), image in zip(batch, stimuli):
            shape, texture = silhouettes[s], textures[t]
            name = f"{shape.category}{shape.index}-{texture.category}{texture.index}.png"
            relative = Path(shape.category) / name
            _write_png(image, args.out / relative)
            rows.append({
                "imagename": name, "path": relative.as_posix(), "shape": shape.category, "texture": texture.category,
                "shape_source": shape.origin, "texture_source": texture.origin,
            })  # fmt: skip
    settings = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in vars(args).items() if key not in ("out",)
    }  # fmt: skip
    atomic_write_text(args.out / "manifest.csv", _manifest_csv(rows))
    manifest = {
        "layout": "<shape>/<shape><i>-<texture><j>.png",
        "images": len(rows),
        "shapes": sorted({row["shape"] for row in rows}),
        "textures": sorted({row["texture"] for row in rows}),
        "settings": settings,
    }
    atomic_write_text(args.out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return rows


def _background(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a grey level or R,G,B in [0,1], got {text!r}") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(0 <= v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected a grey level or R,G,B in [0,1], got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastclip-eval make-stimuli",
        description="Write a texture-filled-silhouette (or phase-swapped) cue-conflict set in the Geirhos layout "
        "<shape>/<shape><i>-<texture><j>.png with manifest.csv and manifest.json; shape_bias reads it with "
        "--cue-conflict OUT.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--silhouettes", type=Path, required=True, help="SIL_DIR/<category>/<category><i>.png (dark object on light)"
    )
    parser.add_argument(
        "--textures", required=True, help=f"TEX_DIR/<category>/*.png (Geirhos names count by texture) or '{TOYWORLD}'"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (must be empty or new unless --force)")
    parser.add_argument("--method", choices=("silhouette", "phase-swap"), default="silhouette")
    parser.add_argument(
        "--pairs", choices=("conflict", "all"), default="conflict", help="conflict: leave out shape == texture"
    )
    parser.add_argument(
        "--per-silhouette", type=int, default=None, metavar="K", help="textures per silhouette (default: all)"
    )
    parser.add_argument("--size", type=int, default=224, help="output side in pixels")
    parser.add_argument("--texture-fit", choices=("tile", "resize"), default="tile")
    parser.add_argument(
        "--texture-crop", type=int, default=None, metavar="N", help="use the top-left NxN of each texture image"
    )
    parser.add_argument("--background", type=_background, default=[1.0, 1.0, 1.0], help="grey level or R,G,B in [0,1]")
    parser.add_argument(
        "--feather", type=float, default=0.0, help="Gaussian softening of the mask edge, in output pixels"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --per-silhouette choice")
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per launch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="auto", help="cue_conflict backend: auto, triton or reference")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    for flag, value, low in (("--size", args.size, 1), ("--batch-size", args.batch_size, 1),
                             ("--per-silhouette", args.per_silhouette, 1), ("--texture-crop", args.texture_crop, 1),
                             ("--seed", args.seed, 0)):  # fmt: skip
        if value is not None and value < low:
            parser.error(f"{flag} must be >= {low}, got {value}")
    if args.feather < 0:
        parser.error(f"--feather must be >= 0, got {args.feather}")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        parser.error(f"--device {args.device!r}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here; use --device cpu")
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        parser.error(f"--out {args.out} is not empty; pass --force to write into it")
    try:
        rows = make_stimuli(args)
    except StimuliError as exc:
        print(f"fastclip-eval make-stimuli: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(rows)} stimuli to {args.out} (manifest.csv, manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
