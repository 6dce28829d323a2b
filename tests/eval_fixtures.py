"""Tiny synthetic copies of every dataset type of fastclip-eval's suites, each in its official layout, and a
paper-like suite file naming them all (for the end-to-end tests and benchmarks/bench_eval.py).

`scale` multiplies the item counts: 1 gives a few items per dataset (tests), larger values a paper-shaped workload.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from fastclip.eval.templates import CIFAR100_CLASSES, GEIRHOS_CATEGORIES

IMAGE_SIDE = 40


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _image(path: Path, seed: int, size=None, mode: str = "RGB") -> None:
    """A smooth random image (a few blobs), so distortions and maps have structure; IMAGE_SIDE square by default."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = size or (IMAGE_SIDE, IMAGE_SIDE)
    rng = _rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    canvas = np.zeros((h, w, 3))
    for _ in range(3):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, max(4, h / 3))
        canvas += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))[..., None] * rng.uniform(0, 255, 3)
    pixels = np.clip(canvas + rng.normal(0, 8, canvas.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    (image.convert("L") if mode == "L" else image).save(path, compress_level=1)  # PNG: fast; other formats ignore it


def _points(seed: int, size, count: int = 6) -> np.ndarray:
    rng = _rng(seed)
    mask = np.zeros(size, dtype=bool)
    mask[rng.integers(0, size[0], count), rng.integers(0, size[1], count)] = True
    return mask


def cue_conflict(root: Path, per_shape: int, categories: int = 4, size=None) -> tuple[Path, Path]:
    """A Geirhos-layout folder over the first `categories` Geirhos categories, and a human raw-data folder for it
    (2 observers)."""
    categories = GEIRHOS_CATEGORIES[:categories]
    names = []
    for s, shape in enumerate(categories):
        for i in range(per_shape):
            texture = categories[(s + 1 + i) % len(categories)] if i else shape  # one shape == texture each
            name = f"{shape}{i + 1}-{texture}{i + 1}.png"
            _image(root / "cue-conflict" / shape / name, seed=100 * s + i, size=size)
            names.append((shape, texture, name))
    raw = root / "raw-data"
    raw.mkdir(parents=True)
    for subject in (1, 2):
        rows = ["subj,session,trial,rt,object_response,category,condition,imagename"]
        for trial, (shape, texture, name) in enumerate(names, start=1):
            response = shape if (trial + subject) % 3 else texture
            rows.append(f"subject-0{subject},1,{trial},700,{response},{shape},0,{trial:04d}_s_{name}")
        (raw / f"cue-conflict_subject-0{subject}_session_1.csv").write_text("\n".join(rows) + "\n")
    return root / "cue-conflict", raw


def tid2013(root: Path, references: int, distortions: int = 2, size=None) -> Path:
    """references x distortions x 3 levels (TID2013's names allow 25 references and 24 distortions)."""
    folder = root / "tid2013"
    lines = []
    for r in range(1, references + 1):
        _image(folder / "reference_images" / f"I{r:02d}.BMP", seed=r, size=size)
        for d in range(1, distortions + 1):
            for level in (1, 2, 3):
                name = f"i{r:02d}_{d:02d}_{level}.bmp"
                _image(folder / "distorted_images" / name, seed=1000 * r + 10 * d + level, size=size)
                lines.append(f"{6 - level + 0.1 * d:.5f} {name}")
    (folder / "mos_with_names.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return folder


def kadid10k(root: Path, references: int, size=None) -> Path:
    folder = root / "kadid10k"
    rows = ["dist_img,ref_img,dmos,var"]
    for r in range(1, references + 1):
        _image(folder / "images" / f"I{r:02d}.png", seed=50 + r, size=size)
        for d in (1, 2):
            for level in (1, 2, 3):
                name = f"I{r:02d}_{d:02d}_{level:02d}.png"
                _image(folder / "images" / name, seed=5000 + 100 * r + 10 * d + level, size=size)
                rows.append(f"{name},I{r:02d}.png,{5 - level + 0.2 * d:.2f},0.5")
    (folder / "dmos.csv").write_text("\n".join(rows) + "\n")
    return folder


def iqa_csv(root: Path, pairs: int) -> Path:
    folder = root / "generic-iqa"
    rows = ["reference,distorted,score"]
    for i in range(pairs):
        _image(folder / "ref" / f"r{i % 3}.png", seed=70 + i % 3)
        _image(folder / "dist" / f"d{i}.png", seed=700 + i)
        rows.append(f"ref/r{i % 3}.png,dist/d{i}.png,{i % 5 + 0.5}")
    (folder / "scores.csv").write_text("\n".join(rows) + "\n")
    return folder / "scores.csv"


def bapps(root: Path, per_subset: int, size=None) -> Path:
    base = root / "dataset" / "2afc"
    for s, subset in enumerate(("traditional", "cnn")):
        for i in range(per_subset):
            stem = f"{i:06d}"
            for role, offset in (("ref", 0), ("p0", 1), ("p1", 2)):
                _image(base / "val" / subset / role / f"{stem}.png", seed=9000 + 97 * s + 3 * i + offset, size=size)
            (base / "val" / subset / "judge").mkdir(parents=True, exist_ok=True)
            np.save(base / "val" / subset / "judge" / f"{stem}.npy", np.array([(i % 5) / 4], dtype=np.float32))
    return base


def nights(root: Path, triplets: int) -> Path:
    folder = root / "nights"
    lines = ["id,left_vote,right_vote,votes,ref_path,left_path,right_path,prompt,split,is_imagenet"]
    for i in range(triplets):
        directory = f"{i // 3:03d}"
        ref, left, right = f"ref/{directory}/{i:03d}.png", f"distort/{directory}/{i:03d}_0.png", f"distort/{directory}/{i:03d}_1.png"
        for offset, path in enumerate((ref, left, right)):
            _image(folder / path, seed=12000 + 3 * i + offset)
        lines.append(f"{i},{i % 2},{1 - i % 2},6,{ref},{left},{right},a cat,test,{'True' if i % 2 else 'False'}")
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    return folder


def mit1003(root: Path, images: int, size=None) -> Path:
    folder = root / "mit1003"
    height, width = size or (IMAGE_SIDE, IMAGE_SIDE)
    for i in range(images):
        size = (height, width + 8 * (i % 2))  # two sizes: scored in two groups
        _image(folder / "ALLSTIMULI" / f"i{i}.jpeg", seed=300 + i, size=size)
        _image(folder / "ALLFIXATIONMAPS" / f"i{i}_fixMap.jpg", seed=400 + i, size=size, mode="L")
        Image.fromarray(_points(i, size).astype(np.uint8) * 255).save(folder / "ALLFIXATIONMAPS" / f"i{i}_fixPts.jpg", quality=100)
    return folder


def cat2000(root: Path, images: int) -> Path:
    base = root / "cat2000" / "trainSet"
    for i in range(images):
        category, stem = ("Action", "Art")[i % 2], f"{i:03d}"
        _image(base / "Stimuli" / category / f"{stem}.jpg", seed=500 + i)
        _image(base / "FIXATIONMAPS" / category / f"{stem}.jpg", seed=600 + i, mode="L")
        (base / "FIXATIONLOCS" / category).mkdir(parents=True, exist_ok=True)
        savemat(base / "FIXATIONLOCS" / category / f"{stem}.mat", {"fixLocs": _points(i, (IMAGE_SIDE, IMAGE_SIDE)).astype(np.float64)})
    return root / "cat2000"


def salicon(root: Path, images: int) -> Path:
    folder = root / "salicon"
    for i in range(images):
        stem = f"COCO_val2014_{i:012d}"
        _image(folder / "images" / "val" / f"{stem}.jpg", seed=700 + i)
        _image(folder / "maps" / "val" / f"{stem}.png", seed=800 + i, mode="L")
    return folder


def saliency_folders(root: Path, images: int) -> Path:
    folder = root / "generic-saliency"
    for i in range(images):
        _image(folder / "stimuli" / f"s{i}.jpg", seed=900 + i)
        _image(folder / "fixation-maps" / f"s{i}.jpg", seed=950 + i, mode="L")
    return folder


def cifar100(root: Path, count: int) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [n.replace(" ", "_") for n in CIFAR100_CLASSES]}, handle, protocol=2)
    rng = _rng(3)
    data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
    with open(folder / "test", "wb") as handle:
        pickle.dump({"data": data, "fine_labels": [int(v) for v in rng.integers(0, 100, count)]}, handle, protocol=2)
    return folder


def image_folder(root: Path, per_class: int) -> Path:
    folder = root / "imagefolder"
    for c, name in enumerate(("cat", "dog", "golden_retriever")):
        for i in range(per_class):
            _image(folder / name / f"{i}.png", seed=1100 + 10 * c + i)
    return folder


def write_paper_like_suite(root: Path, scale: int = 1) -> Path:
    """Every dataset type in its layout under root, and root/suite.toml running the six benchmarks on them."""
    cue, raw = cue_conflict(root, 2 * scale)
    paths = {
        "tid2013": tid2013(root, 2 * scale), "kadid10k": kadid10k(root, 2 * scale), "iqa_csv": iqa_csv(root, 6 * scale),
        "bapps": bapps(root, 4 * scale), "nights": nights(root, 6 * scale), "mit1003": mit1003(root, 4 * scale),
        "cat2000": cat2000(root, 4 * scale), "salicon": salicon(root, 3 * scale),
        "saliency_folders": saliency_folders(root, 3 * scale), "cifar100": cifar100(root, 20 * scale),
        "imagefolder": image_folder(root, 2 * scale),
    }  # fmt: skip
    relative = {name: path.relative_to(root).as_posix() for name, path in paths.items()}
    suite = f"""
[suite]
name = "paper-like"
data_root = "."

[options]
templates = "photo"
resamples = 100

[datasets.cue-conflict]
type = "cue_conflict"
path = "{cue.relative_to(root).as_posix()}"
human_raw = "{raw.relative_to(root).as_posix()}"
templates = "photo"          # the ImageNet-1k protocol then encodes 1,000 prompts, not 80,000
"""
    for name in ("tid2013", "kadid10k", "bapps", "nights", "mit1003", "cat2000", "salicon", "saliency_folders", "cifar100", "imagefolder"):
        suite += f'\n[datasets.{name}]\ntype = "{name}"\npath = "{relative[name]}"\n'
        if name in ("cifar100", "imagefolder"):
            suite += 'templates = "photo"\n'  # one prompt per class keeps the test's text encoding small
    suite += f'\n[datasets.iqa_csv]\ntype = "iqa_csv"\npath = "{relative["iqa_csv"]}"\nhigher_is_better = true\n'
    suite += """
[benchmarks.zeroshot]
datasets = ["cifar100", "imagefolder"]

[benchmarks.noise_robustness]
datasets = ["cifar100"]
sigmas = "imagenet-c"

[benchmarks.shape_bias]
datasets = ["cue-conflict"]
protocols = ["direct", "imagenet"]

[benchmarks.iqa]
datasets = ["tid2013", "kadid10k", "iqa_csv"]

[benchmarks.two_afc]
datasets = ["bapps", "nights"]

[benchmarks.saliency]
datasets = ["mit1003", "cat2000", "salicon", "saliency_folders"]
"""
    (root / "suite.toml").write_text(suite)
    return root / "suite.toml"
