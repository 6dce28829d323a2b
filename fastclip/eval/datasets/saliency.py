"""Saliency datasets (images with human fixation maps and fixation locations) in their official layouts.

- MIT1003 (Judd et al. 2009): ALLSTIMULI/<name>.jpeg, ALLFIXATIONMAPS/<name>_fixMap.jpg (continuous map) and
  <name>_fixPts.jpg (fixated pixels, white on black, JPEG-compressed: a pixel counts as fixated above mid-grey).
- CAT2000 (Borji & Itti 2015) train set: Stimuli/<Category>/NNN.jpg, FIXATIONMAPS/<Category>/NNN.jpg,
  FIXATIONLOCS/<Category>/NNN.mat (variable `fixLocs`, non-zero at fixated pixels).
- SALICON (Jiang et al. 2015, LSUN'17 release): images/<split>/COCO_*.jpg, maps/<split>/COCO_*.png, and
  fixations/<split>/COCO_*.mat when present (struct array `gaze`, field `fixations`: 1-based (x, y) rows, as
  pysaliency reads them; points outside the image are dropped).
- Generic: a folder of images and a folder of continuous maps with the same names (optionally a folder of fixation
  locations, as images or `fixLocs` .mat files), e.g. the MIT1003 subset of ../shared/data: stimuli/, fixation-maps/.

Loaders return paths; `decode_fixation_maps` and `decode_fixations` turn entries into tensors at a common size
(see datasets.images for the meaning of `size`), fixation points mapped onto the resized grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fastclip.eval.datasets.images import ImageDecodeError, Size, check_size, decode_map, decode_maps
from fastclip.eval.datasets.layout import (
    IMAGE_SUFFIXES, Layout, files_by_stem, quote_some, require_same_stems, unrecognised_layout_error,
)  # fmt: skip

FIXATED_ABOVE = 127  # uint8 level above which a pixel of a _fixPts.jpg image counts as fixated

MIT1003_LAYOUT = Layout(
    "MIT1003",
    "people.csail.mit.edu/tjudd/WherePeopleLook: ALLSTIMULI.zip, ALLFIXATIONMAPS.zip",
    """\
  DIR/
    ALLSTIMULI/
      i05june05_static_street_boston_p1010764.jpeg ...     1,003 stimuli
    ALLFIXATIONMAPS/
      i05june05_static_street_boston_p1010764_fixMap.jpg   continuous fixation map of each stimulus
      i05june05_static_street_boston_p1010764_fixPts.jpg   fixated pixels (white) of each stimulus
      ...""",
)
CAT2000_LAYOUT = Layout(
    "CAT2000",
    "saliency.mit.edu: trainSet.zip",
    """\
  trainSet/                        (or the folder holding trainSet/)
    Stimuli/
      Action/001.jpg ...           20 category folders
    FIXATIONMAPS/
      Action/001.jpg ...           continuous fixation map, same names
    FIXATIONLOCS/
      Action/001.mat ...           variable fixLocs: non-zero at fixated pixels, same names""",
)
SALICON_LAYOUT = Layout(
    "SALICON",
    "salicon.net LSUN'17 release: images.zip, maps.zip, fixations.zip",
    """\
  DIR/
    images/
      train/COCO_train2014_000000000009.jpg ...   splits train, val, test
      val/COCO_val2014_000000000133.jpg ...
    maps/
      val/COCO_val2014_000000000133.png ...       continuous maps, same names (train, val)
    fixations/                                    (optional)
      val/COCO_val2014_000000000133.mat ...       struct array gaze with field fixations (1-based x, y)""",
)
GENERIC_LAYOUT = Layout(
    "generic saliency folders",
    "fastclip",
    """\
  IMAGES/a.jpg, b.png ...          the stimuli
  MAPS/a.jpg, b.png ...            a continuous fixation map per stimulus, same names (extension may differ)
  FIXATIONS/a.png or a.mat ...     (optional) fixated pixels: white-on-black images or .mat with fixLocs
  e.g. the MIT1003 subset: DIR/stimuli/ and DIR/fixation-maps/""",
)


@dataclass(frozen=True)
class SaliencyEntry:
    name: str  # unique within the dataset: the stem, or "<Category>/<stem>" for CAT2000
    image: Path
    fixation_map: Path  # continuous human fixation map (an image file)
    fixations: Path | None  # fixated pixels: an image (_fixPts.jpg), a fixLocs .mat or a SALICON gaze .mat


@dataclass(frozen=True)
class SaliencyDataset:
    name: str  # "mit1003", "cat2000", "salicon/val", or the generic images folder's name
    root: Path
    entries: tuple[SaliencyEntry, ...]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def images(self) -> list[Path]:
        return [entry.image for entry in self.entries]

    @property
    def has_fixations(self) -> bool:
        return all(entry.fixations is not None for entry in self.entries)


# ------------------------------------------------------------------------------------------------------ loaders


def load_mit1003(root: str | os.PathLike) -> SaliencyDataset:
    """Every stimulus in ALLSTIMULI with its _fixMap and _fixPts; a stimulus without both is an error."""
    root = MIT1003_LAYOUT.require_dir(root, "MIT1003 folder")
    stimuli = files_by_stem(root / "ALLSTIMULI", MIT1003_LAYOUT)
    maps_folder = MIT1003_LAYOUT.require_dir(root / "ALLFIXATIONMAPS", "ALLFIXATIONMAPS folder")
    if not stimuli:
        raise MIT1003_LAYOUT.error(root / "ALLSTIMULI", "no images in it")
    entries, missing = [], []
    for stem, image in sorted(stimuli.items()):
        fixation_map, points = maps_folder / f"{stem}_fixMap.jpg", maps_folder / f"{stem}_fixPts.jpg"
        missing += [path.name for path in (fixation_map, points) if not path.is_file()]
        entries.append(SaliencyEntry(stem, image, fixation_map, points))
    if missing:
        raise MIT1003_LAYOUT.error(
            maps_folder, f"{len(missing)} map(s) of the stimuli are missing: {quote_some(missing)}"
        )
    return SaliencyDataset("mit1003", root, tuple(entries))


def load_cat2000(root: str | os.PathLike) -> SaliencyDataset:
    """The CAT2000 train set: every category's stimuli with their maps and fixLocs, paired by name."""
    root = CAT2000_LAYOUT.require_dir(root, "CAT2000 folder")
    base = root / "trainSet" if (root / "trainSet").is_dir() else root
    folders = {role: CAT2000_LAYOUT.require_dir(base / role, f"{role} folder") for role in
               ("Stimuli", "FIXATIONMAPS", "FIXATIONLOCS")}  # fmt: skip
    categories = sorted(path.name for path in folders["Stimuli"].iterdir() if path.is_dir())
    if not categories:
        raise CAT2000_LAYOUT.error(folders["Stimuli"], "no category folders in it")
    entries = []
    for category in categories:
        by_role = {
            "Stimuli": files_by_stem(folders["Stimuli"] / category, CAT2000_LAYOUT),
            "FIXATIONMAPS": files_by_stem(folders["FIXATIONMAPS"] / category, CAT2000_LAYOUT),
            "FIXATIONLOCS": files_by_stem(folders["FIXATIONLOCS"] / category, CAT2000_LAYOUT, (".mat",)),
        }
        for stem in require_same_stems(CAT2000_LAYOUT, by_role, base / f"*/{category}"):
            entries.append(SaliencyEntry(
                f"{category}/{stem}", by_role["Stimuli"][stem], by_role["FIXATIONMAPS"][stem],
                by_role["FIXATIONLOCS"][stem],
            ))  # fmt: skip
    if not entries:
        raise CAT2000_LAYOUT.error(folders["Stimuli"], "the category folders hold no images")
    return SaliencyDataset("cat2000", base, tuple(entries))


def load_salicon(root: str | os.PathLike, split: str = "val") -> SaliencyDataset:
    """One split's images with their maps (and fixations when fixations/<split> exists), paired by name."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val' (the test split has no public maps), got {split!r}")
    root = SALICON_LAYOUT.require_dir(root, "SALICON folder")
    by_role = {
        "images": files_by_stem(root / "images" / split, SALICON_LAYOUT),
        "maps": files_by_stem(root / "maps" / split, SALICON_LAYOUT),
    }
    if (root / "fixations" / split).is_dir():
        by_role["fixations"] = files_by_stem(root / "fixations" / split, SALICON_LAYOUT, (".mat",))
    stems = require_same_stems(SALICON_LAYOUT, by_role, root / f"*/{split}")
    if not stems:
        raise SALICON_LAYOUT.error(root / "images" / split, "no images in it")
    fixations = by_role.get("fixations", {})
    entries = [
        SaliencyEntry(stem, by_role["images"][stem], by_role["maps"][stem], fixations.get(stem)) for stem in stems
    ]
    return SaliencyDataset(f"salicon/{split}", root, tuple(entries))


def load_saliency_folders(
    images: str | os.PathLike,
    maps: str | os.PathLike,
    fixations: str | os.PathLike | None = None,
    *,
    name: str | None = None,
) -> SaliencyDataset:
    """Images and continuous maps (and optionally fixation locations) in separate folders, paired by file stem."""
    folders = {"image": Path(images), "map": Path(maps)} | ({"fixations": Path(fixations)} if fixations else {})
    if len({folder.resolve() for folder in folders.values()}) < len(folders):
        raise GENERIC_LAYOUT.error(folders["image"], "the images, maps and fixations must be in different folders")
    suffixes = {"image": IMAGE_SUFFIXES, "map": IMAGE_SUFFIXES, "fixations": (*IMAGE_SUFFIXES, ".mat")}
    by_folder = {str(folder): files_by_stem(folder, GENERIC_LAYOUT, suffixes[role]) for role, folder in folders.items()}
    stems = require_same_stems(GENERIC_LAYOUT, by_folder, folders["image"].parent)
    if not stems:
        raise GENERIC_LAYOUT.error(folders["image"], "no images in it")
    files = {role: by_folder[str(folder)] for role, folder in folders.items()}
    entries = [
        SaliencyEntry(stem, files["image"][stem], files["map"][stem], files["fixations"][stem] if fixations else None)
        for stem in stems
    ]
    root = folders["image"].parent
    return SaliencyDataset(name or root.name, root, tuple(entries))


GENERIC_FOLDER_PAIRS = (("stimuli", "fixation-maps"), ("images", "maps"))
RECOGNISED_LAYOUTS = (MIT1003_LAYOUT, CAT2000_LAYOUT, SALICON_LAYOUT, GENERIC_LAYOUT)


def load_saliency(root: str | os.PathLike, **options) -> SaliencyDataset:
    """The saliency dataset at `root`, its layout recognised by its folders, checked in this order: ALLSTIMULI/
    (MIT1003), Stimuli/ or trainSet/ (CAT2000), images/ with maps/<split>/ (SALICON; split= chooses), stimuli/ with
    fixation-maps/ or images/ with maps/ (generic; fixations/ used when present)."""
    root = Path(root)
    if not root.is_dir():
        problem = "no such folder" if not root.exists() else "not a folder"
        raise unrecognised_layout_error(root, problem, RECOGNISED_LAYOUTS)
    if (root / "ALLSTIMULI").is_dir():
        return load_mit1003(root, **options)
    if (root / "Stimuli").is_dir() or (root / "trainSet").is_dir():
        return load_cat2000(root, **options)
    if (root / "images").is_dir() and any((root / "maps" / split).is_dir() for split in ("train", "val")):
        return load_salicon(root, **options)
    for images, maps in GENERIC_FOLDER_PAIRS:
        if (root / images).is_dir() and (root / maps).is_dir():
            fixations = root / "fixations" if (root / "fixations").is_dir() else None
            return load_saliency_folders(root / images, root / maps, fixations, name=root.name, **options)
    found = sorted(path.name + "/" for path in root.iterdir() if path.is_dir())
    problem = f"no saliency layout recognised (folders here: {found})"
    raise unrecognised_layout_error(root, problem, RECOGNISED_LAYOUTS)


# ----------------------------------------------------------------------------------------------------- decoding


def decode_fixation_maps(entries: Sequence[SaliencyEntry], size: Size = None) -> torch.Tensor:
    """The continuous human maps -> uint8 (N, H, W)."""
    return decode_maps([entry.fixation_map for entry in entries], size)


def _points_from_mat(path: Path, image_shape: tuple[int, int]) -> np.ndarray:
    from scipy.io import loadmat

    try:
        content = loadmat(path)
    except (OSError, ValueError, NotImplementedError) as exc:
        raise ImageDecodeError(f"{path}: cannot read the .mat file ({exc})") from exc
    if "fixLocs" in content:
        return np.asarray(content["fixLocs"]) != 0
    if "gaze" in content:
        mask = np.zeros(image_shape, dtype=bool)
        for subject in content["gaze"].flatten():
            points = np.asarray(subject["fixations"], dtype=np.float64).reshape(-1, 2)
            columns, rows = np.round(points[:, 0]).astype(int) - 1, np.round(points[:, 1]).astype(int) - 1
            inside = (rows >= 0) & (rows < image_shape[0]) & (columns >= 0) & (columns < image_shape[1])
            mask[rows[inside], columns[inside]] = True
        return mask
    variables = sorted(key for key in content if not key.startswith("__"))
    raise ImageDecodeError(f"{path}: no fixLocs or gaze variable (found {variables})")


def fixation_points(entry: SaliencyEntry) -> torch.Tensor:
    """bool (H, W) at the stimulus' native size: True at fixated pixels."""
    from PIL import Image

    if entry.fixations is None:
        raise ValueError(f"{entry.image}: this dataset has no fixation locations for {entry.name!r}")
    with Image.open(entry.image) as image:  # reads the header only
        shape = (image.height, image.width)
    if entry.fixations.suffix.lower() == ".mat":
        mask = _points_from_mat(entry.fixations, shape)
    else:
        mask = decode_map(entry.fixations).numpy() > FIXATED_ABOVE
    if mask.shape != shape:
        raise ImageDecodeError(
            f"{entry.fixations}: {mask.shape[0]}x{mask.shape[1]} fixation locations, but the stimulus "
            f"{entry.image} is {shape[0]}x{shape[1]}"
        )
    return torch.from_numpy(np.ascontiguousarray(mask))


def resize_points(mask: torch.Tensor, size: Size) -> torch.Tensor:
    """Fixated pixels (H, W) moved onto the grid of an image resized as datasets.images resizes it (a pixel's
    centre is scaled, so each fixation stays one pixel; points cropped away are dropped)."""
    size = check_size(size)
    if size is None:
        return mask
    height, width = mask.shape
    if isinstance(size, int):
        # torchvision's Resize([size]) on the shorter side, then CenterCrop(size): the geometry of images.py.
        if height <= width:
            resized = (size, int(size * width / height))
        else:
            resized = (int(size * height / width), size)
        crop = (int(round((resized[0] - size) / 2.0)), int(round((resized[1] - size) / 2.0)))
        out_shape = (size, size)
    else:
        resized, crop, out_shape = size, (0, 0), size
    rows, columns = mask.nonzero(as_tuple=True)
    rows = ((rows.double() + 0.5) * resized[0] / height).floor().long() - crop[0]
    columns = ((columns.double() + 0.5) * resized[1] / width).floor().long() - crop[1]
    inside = (rows >= 0) & (rows < out_shape[0]) & (columns >= 0) & (columns < out_shape[1])
    out = torch.zeros(out_shape, dtype=torch.bool)
    out[rows[inside], columns[inside]] = True
    return out


def decode_fixations(entries: Sequence[SaliencyEntry], size: Size = None) -> torch.Tensor:
    """bool (N, H, W): each entry's fixated pixels at `size` (None: the native size, which all must share)."""
    masks = [resize_points(fixation_points(entry), size) for entry in entries]
    shapes = {tuple(mask.shape) for mask in masks}
    if len(shapes) > 1:
        raise ImageDecodeError(f"fixation locations of different sizes {sorted(shapes)}; pass size= to stack them")
    return torch.stack(masks)
