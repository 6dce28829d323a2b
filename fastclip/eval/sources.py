"""Dataset types of a suite: what `type = "..."` means, the settings each type takes, and how its loader's output
(fastclip.eval.datasets, fastclip.eval.toyworld_sets) becomes an evaluation set (fastclip.eval.evalsets).

    type                 kind            path                               settings (default)
    toyworld             classification  -                                  set (heldout), size (--toyworld-size),
                                                                            templates (--templates)
    toyworld_cue_conflict cue_conflict   -                                  size (--toyworld-size), templates
    toyworld_iqa         iqa             -                                  references (16)
    toyworld_2afc        two_afc         -                                  references (16)
    toyworld_saliency    saliency        -                                  images (32), map_size (64)
    cifar10, cifar100    classification  folder holding cifar-*-python/     split (test), templates (cifar)
    imagefolder          classification  folder of class folders            class_names, templates (imagenet)
    cue_conflict         cue_conflict    Geirhos-layout folder              human_raw (a raw-data folder),
                                                                            templates (--templates)
    tid2013              iqa             tid2013/
    kadid10k             iqa             kadid10k/                          scores_csv (kadid10k/dmos.csv)
    iqa_csv              iqa             the CSV file                       higher_is_better (required),
                                                                            image_root (the CSV's folder), columns
    bapps                two_afc         dataset/2afc (or its parent)       split (val), subsets (all present)
    nights               two_afc         nights/                            split (test), min_votes (6)
    mit1003, cat2000     saliency        the dataset's folder
    salicon              saliency        the dataset's folder               split (val)
    saliency_folders     saliency        folder with stimuli/ + fixation-maps/ (or images/ + maps/, fixations/)

Settings that name files (human_raw, scores_csv, image_root) resolve like dataset paths. Loading a set reads its
index files and checks that every image exists (a wrong layout fails here, before any checkpoint is loaded); pixels
are decoded later, once per run, at the model's size.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from fastclip.eval import toyworld_sets
from fastclip.eval.evalsets import ClassificationSet, CueConflictSet, ImageSet, IQASet, SaliencySet, TwoAFCSet
from fastclip.eval.registry import Setting, checked_settings, one_of, positive_int, subset_of
from fastclip.eval.zeroshot import TEMPLATE_SET_NAMES


def _optional_positive_int(value):
    return None if value is None else positive_int(value)


def _boolean(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _path_text(value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a path, got {value!r}")
    return value


def _names(value) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"must be a non-empty list of names, got {value!r}")
    return tuple(value)


def _columns(value) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"must be a table of role = \"column name\", got {value!r}")
    return dict(value)


TEMPLATES = Setting(None, one_of(*TEMPLATE_SET_NAMES), "zero-shot template set")


@dataclass(frozen=True)
class DatasetType:
    name: str
    kind: str
    load: Callable[[Any, Any], object]  # (DatasetSpec, EvalOptions) -> evaluation set
    settings: Mapping[str, Setting] = field(default_factory=dict)
    path_help: str = ""  # what `path` names; empty for generated datasets
    path_settings: tuple[str, ...] = ()
    required: tuple[str, ...] = ()

    @property
    def needs_path(self) -> bool:
        return bool(self.path_help)

    def check_settings(self, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Every setting of this type: the suite's checked values over the defaults."""
        checked = {key: setting.default for key, setting in self.settings.items()}
        checked.update(checked_settings(self.settings, raw, where, f"type {self.name!r}", self.required))
        return checked


# ------------------------------------------------------------------------------------------------ toy world


def _toyworld(spec, options) -> ClassificationSet:
    """A rendered toy-world set (datasets.classification.load_toyworld), rendered at the model's size when first
    used; labels cycle through the categories as the toy world's per-category sets do."""
    from fastclip.eval.datasets.classification import load_toyworld
    from fastclip.ops.toyworld_render import CATEGORIES

    size = spec.settings["size"] or options.toyworld_size
    kind = spec.settings["set"]
    count = len(CATEGORIES) * size

    def fetch(geometry, device):
        return load_toyworld(kind, size, image_size=toyworld_sets.square_side(geometry), device=device).images

    images = ImageSet(f"toyworld_{kind}_{size}", count, fetch)
    labels = torch.arange(count) % len(CATEGORIES)
    return ClassificationSet(images, labels, CATEGORIES, spec.settings["templates"])


def _toyworld_cue_conflict(spec, options) -> CueConflictSet:
    stimuli = toyworld_sets.cue_conflict(spec.settings["size"] or options.toyworld_size)
    stimuli.templates = spec.settings["templates"]
    return stimuli


# ---------------------------------------------------------------------------------------------- real layouts


def _cifar(dataset: str):
    def load(spec, options) -> ClassificationSet:
        from fastclip.eval.datasets.classification import load_cifar

        loaded = load_cifar(spec.path, dataset, spec.settings["split"])
        images = ImageSet.from_tensor(spec.name, loaded.images)
        return ClassificationSet(images, loaded.labels, loaded.class_names, spec.settings["templates"])

    return load


def _imagefolder(spec, options) -> ClassificationSet:
    from fastclip.eval.datasets.classification import load_image_folder

    loaded = load_image_folder(spec.path, spec.settings["class_names"])
    images = ImageSet.from_paths(spec.name, loaded.paths)
    return ClassificationSet(images, loaded.labels, loaded.class_names, spec.settings["templates"])


def _cue_conflict(spec, options) -> CueConflictSet:
    from fastclip.eval.datasets.cue_conflict import scan_cue_conflict_folder

    entries = scan_cue_conflict_folder(spec.path)
    human = None
    if spec.settings["human_raw"] is not None:
        from fastclip.eval.datasets.human_raw import human_shape_bias

        human = human_shape_bias(spec.settings["human_raw"]).pooled
    categories = tuple(sorted({entry.shape for entry in entries} | {entry.texture for entry in entries}))
    return CueConflictSet(
        ImageSet.from_paths(spec.name, [entry.path for entry in entries]), [entry.name for entry in entries],
        [entry.shape for entry in entries], categories, spec.settings["templates"], human,
    )  # fmt: skip


def _indexed(paths_lists: list[list[Path]]) -> tuple[list[Path], list[torch.Tensor]]:
    """Distinct paths (in order of first use) and, per list, the index of each of its paths among them."""
    index: dict[Path, int] = {}
    ids = [torch.tensor([index.setdefault(path, len(index)) for path in paths], dtype=torch.long) for paths in paths_lists]
    return list(index), ids


def _iqa_set(name: str, pairs) -> IQASet:
    paths, (reference, distorted) = _indexed([list(pairs.references), list(pairs.distorted)])
    return IQASet(
        ImageSet.from_paths(name, paths), reference, distorted, pairs.scores.to(torch.float64),
        pairs.higher_is_better, [path.name for path in pairs.distorted],
    )  # fmt: skip


def _tid2013(spec, options) -> IQASet:
    from fastclip.eval.datasets.tid2013 import load_tid2013

    return _iqa_set(spec.name, load_tid2013(spec.path))


def _kadid10k(spec, options) -> IQASet:
    from fastclip.eval.datasets.kadid10k import load_kadid10k

    return _iqa_set(spec.name, load_kadid10k(spec.path, spec.settings["scores_csv"]))


def _iqa_csv(spec, options) -> IQASet:
    from fastclip.eval.datasets.iqa_csv import load_iqa_csv

    pairs = load_iqa_csv(
        spec.path, higher_is_better=spec.settings["higher_is_better"], image_root=spec.settings["image_root"],
        columns=spec.settings["columns"], name=spec.name,
    )  # fmt: skip
    return _iqa_set(spec.name, pairs)


def _two_afc_set(name: str, parts: dict[str, object]) -> TwoAFCSet:
    """Triplet sets (BAPPS subsets) pooled into one set with a group per part (no groups for a single part)."""
    references = [path for part in parts.values() for path in part.references]
    left = [path for part in parts.values() for path in part.left]
    right = [path for part in parts.values() for path in part.right]
    paths, (ref, p0, p1) = _indexed([references, left, right])
    judge = torch.cat([part.p_right for part in parts.values()]).to(torch.float64)
    groups, start = {}, 0
    if len(parts) > 1:
        for group, part in parts.items():
            groups[group] = torch.arange(start, start + len(part))
            start += len(part)
    return TwoAFCSet(ImageSet.from_paths(name, paths), ref, p0, p1, judge, groups)


def _bapps(spec, options) -> TwoAFCSet:
    from fastclip.eval.datasets.bapps import load_bapps

    return _two_afc_set(spec.name, load_bapps(spec.path, spec.settings["split"], spec.settings["subsets"]))


def _nights(spec, options) -> TwoAFCSet:
    from fastclip.eval.datasets.nights import load_nights

    split = spec.settings["split"]
    return _two_afc_set(spec.name, {split: load_nights(spec.path, split, min_votes=spec.settings["min_votes"])})


def _saliency_set(name: str, loaded) -> SaliencySet:
    from fastclip.eval.datasets.images import decode_map
    from fastclip.eval.datasets.saliency import fixation_points

    entries = loaded.entries
    threads = max(1, min(8, os.cpu_count() or 1))

    def maps() -> list[torch.Tensor]:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda entry: decode_map(entry.fixation_map), entries))

    def points() -> list[torch.Tensor]:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(fixation_points, entries))

    return SaliencySet(
        ImageSet.from_paths(name, loaded.images), [entry.name for entry in entries], maps,
        points if loaded.has_fixations else None,
    )  # fmt: skip


def _saliency(loader_name: str, with_split: bool = False):
    def load(spec, options) -> SaliencySet:
        from fastclip.eval.datasets import saliency

        loader = getattr(saliency, loader_name)
        loaded = loader(spec.path, split=spec.settings["split"]) if with_split else loader(spec.path)
        return _saliency_set(spec.name, loaded)

    return load


_TOY_SIZE = Setting(None, _optional_positive_int, "images per category (default --toyworld-size)")

DATASET_TYPES: dict[str, DatasetType] = {
    kind.name: kind
    for kind in (
        DatasetType("toyworld", "classification", _toyworld, {
            "set": Setting("heldout", one_of("heldout", "shape_only", "texture_only")), "size": _TOY_SIZE,
            "templates": TEMPLATES,
        }),  # fmt: skip
        DatasetType("toyworld_cue_conflict", "cue_conflict", _toyworld_cue_conflict, {"size": _TOY_SIZE, "templates": TEMPLATES}),
        DatasetType("toyworld_iqa", "iqa", lambda spec, options: toyworld_sets.iqa(spec.settings["references"]),
                    {"references": Setting(16, positive_int)}),  # fmt: skip
        DatasetType("toyworld_2afc", "two_afc", lambda spec, options: toyworld_sets.two_afc(spec.settings["references"]),
                    {"references": Setting(16, positive_int)}),  # fmt: skip
        DatasetType(
            "toyworld_saliency", "saliency",
            lambda spec, options: toyworld_sets.saliency(spec.settings["images"], spec.settings["map_size"]),
            {"images": Setting(32, positive_int), "map_size": Setting(64, positive_int)},
        ),  # fmt: skip
        DatasetType("cifar10", "classification", _cifar("cifar10"), {
            "split": Setting("test", one_of("test", "train")), "templates": Setting("cifar", TEMPLATES.check),
        }, "a folder holding cifar-10-batches-py/ (or that folder)"),  # fmt: skip
        DatasetType("cifar100", "classification", _cifar("cifar100"), {
            "split": Setting("test", one_of("test", "train")), "templates": Setting("cifar", TEMPLATES.check),
        }, "a folder holding cifar-100-python/ (or that folder)"),  # fmt: skip
        DatasetType("imagefolder", "classification", _imagefolder, {
            "class_names": Setting(None, _names), "templates": Setting("imagenet", TEMPLATES.check),
        }, "a folder with one subfolder per class"),  # fmt: skip
        DatasetType("cue_conflict", "cue_conflict", _cue_conflict, {
            "human_raw": Setting(None, _path_text, "model-vs-human raw-data folder"), "templates": TEMPLATES,
        }, "a folder in the Geirhos cue-conflict layout", ("human_raw",)),  # fmt: skip
        DatasetType("tid2013", "iqa", _tid2013, {}, "the tid2013 folder"),
        DatasetType("kadid10k", "iqa", _kadid10k, {"scores_csv": Setting(None, _path_text)}, "the kadid10k folder",
                    ("scores_csv",)),  # fmt: skip
        DatasetType("iqa_csv", "iqa", _iqa_csv, {
            "higher_is_better": Setting(None, _boolean), "image_root": Setting(None, _path_text),
            "columns": Setting(None, _columns),
        }, "the CSV file", ("image_root",), ("higher_is_better",)),  # fmt: skip
        DatasetType("bapps", "two_afc", _bapps, {
            "split": Setting("val", one_of("val", "train")),
            "subsets": Setting(None, subset_of("traditional", "cnn", "superres", "deblur", "color", "frameinterp", "mix")),
        }, "BAPPS's dataset/2afc folder (or its parent)"),  # fmt: skip
        DatasetType("nights", "two_afc", _nights, {
            "split": Setting("test", one_of("train", "val", "test_imagenet", "test_no_imagenet", "test", "all")),
            "min_votes": Setting(6, positive_int),
        }, "the nights folder (data.csv, ref/, distort/)"),  # fmt: skip
        DatasetType("mit1003", "saliency", _saliency("load_mit1003"), {}, "the MIT1003 folder (ALLSTIMULI/, ALLFIXATIONMAPS/)"),
        DatasetType("cat2000", "saliency", _saliency("load_cat2000"), {}, "the CAT2000 folder (trainSet/)"),
        DatasetType("salicon", "saliency", _saliency("load_salicon", with_split=True),
                    {"split": Setting("val", one_of("val", "train"))}, "the SALICON folder (images/, maps/)"),  # fmt: skip
        DatasetType("saliency_folders", "saliency", _saliency("load_saliency"), {},
                    "a folder with stimuli/ and fixation-maps/ (or images/, maps/ and optionally fixations/)"),  # fmt: skip
    )
}


def dataset_types() -> list[str]:
    return list(DATASET_TYPES)


def dataset_type(name: str, where: str) -> DatasetType:
    from fastclip.eval.suite import SuiteError

    if name not in DATASET_TYPES:
        raise SuiteError(f"{where}: unknown dataset type {name!r}; choose from {', '.join(DATASET_TYPES)}")
    return DATASET_TYPES[name]


def load_dataset(spec, options):
    """The evaluation set of a suite's dataset (index files read, images checked; pixels decoded later)."""
    return DATASET_TYPES[spec.type].load(spec, options)
