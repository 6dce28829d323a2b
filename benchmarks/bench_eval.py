"""fastclip-eval per epoch: the toy-world suite, and a paper-shaped synthetic suite against a naive baseline.

- toy-world suite (fastclip/suites/toyworld.toml) for fc-tiny-vit: seconds per epoch once the run's data is built
  (goal <= 15 s on 2 CPU cores), and the first epoch with the data generation;
- paper-shaped suite: the paper suite's six benchmarks on synthetic data in the official layouts (tests/
  eval_fixtures.py), every count a fraction of the paper's (PAPER_SHAPE), images of the datasets' own sizes (SIZES). fastclip-eval's
  steady-state epoch (data decoded once per run, features shared, batched correlations and bootstraps) vs a naive
  baseline on the same files and model that computes the same rows the way a script would: per benchmark, every
  image decoded with PIL and preprocessed by open_clip's transform each time it is used (a TID reference once per
  pair), classifiers rebuilt per benchmark, noise drawn with numpy per sigma, scipy correlations and
  scipy.stats.bootstrap, saliency scored image by image with the MIT metric code (its numpy transcription).
  Goal: >= 5x on the CPU, the ratio from one run.
    pytest benchmarks/bench_eval.py --benchmark-only -s
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from conftest import Timing, timed_pair  # benchmarks/conftest.py (pytest puts benchmarks/ on sys.path)
from fastclip.eval.context import DEFAULT_RESAMPLES, CheckpointContext, options_for_suite
from fastclip.eval.runner import Evaluator
from fastclip.eval.suite import load_suite
from fastclip.models import create_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import eval_fixtures  # noqa: E402

MODEL = "fc-tiny-vit"
# The datasets' own image sizes (height, width): decoding them is what a naive script repeats every epoch.
SIZES = {"cue": (224, 224), "tid": (384, 512), "kadid": (384, 512), "bapps": (256, 256), "mit": (768, 1024)}
RESAMPLES = DEFAULT_RESAMPLES  # what fastclip-eval draws by default: both sides compute the rows a user gets
# Items per dataset: about 1/10 of the paper suite (1,280 cue-conflict images, 3,000 TID2013 and 10,125 KADID pairs,
# BAPPS val ~36,000 triplets (1/30 here), 1,003 MIT1003 images, CIFAR-100's 10,000 test images x 6 noise levels).
PAPER_SHAPE = {"cue_per_shape": 32, "cue_categories": 4, "tid_refs": 25, "tid_distortions": 4, "kadid_refs": 170, "bapps_per_subset": 600,
               "mit": 100, "cifar": 1000}  # fmt: skip
SIGMAS = (0.08, 0.12, 0.18, 0.26, 0.38)


def paper_shaped_suite(root: Path) -> Path:
    shape = PAPER_SHAPE
    cue, _ = eval_fixtures.cue_conflict(root, shape["cue_per_shape"], shape["cue_categories"], SIZES["cue"])
    paths = {
        "tid2013": eval_fixtures.tid2013(root, shape["tid_refs"], shape["tid_distortions"], SIZES["tid"]),
        "kadid10k": eval_fixtures.kadid10k(root, shape["kadid_refs"], SIZES["kadid"]),
        "bapps": eval_fixtures.bapps(root, shape["bapps_per_subset"], SIZES["bapps"]),
        "mit1003": eval_fixtures.mit1003(root, shape["mit"], SIZES["mit"]),
        "cifar100": eval_fixtures.cifar100(root, shape["cifar"]),
    }
    text = f"""
[options]
templates = "photo"
resamples = {RESAMPLES}
[datasets.cue-conflict]
type = "cue_conflict"
path = "{cue}"
"""
    for name, path in paths.items():
        text += f'[datasets.{name}]\ntype = "{name}"\npath = "{path}"\n'
    text += """
[benchmarks.zeroshot]
datasets = ["cifar100"]
[benchmarks.noise_robustness]
datasets = ["cifar100"]
sigmas = "imagenet-c"
[benchmarks.shape_bias]
datasets = ["cue-conflict"]
[benchmarks.iqa]
datasets = ["tid2013", "kadid10k"]
ci = ["spearman"]
[benchmarks.two_afc]
datasets = ["bapps"]
layers = "all"
[benchmarks.saliency]
datasets = ["mit1003"]
metrics = ["cc", "nss", "sim", "kld", "auc_judd", "auc_borji", "info_gain"]
"""
    (root / "suite.toml").write_text(text)
    return root / "suite.toml"


def _bundles(count: int):
    bundles = []
    for seed in range(count):
        torch.manual_seed(seed)
        bundle = create_model(MODEL)
        bundle.model.eval()
        bundles.append(bundle)
    return bundles


def fastclip_epochs(suite_text: str, bundles, out_dir: Path, **given) -> list[float]:
    """Seconds per epoch of fastclip-eval's in-process evaluation (one Evaluator for the run), epoch by epoch."""
    options = options_for_suite(load_suite(suite_text), torch.device("cpu"), **given)
    evaluator = Evaluator(out_dir, options, force=True)
    seconds = []
    for epoch, bundle in enumerate(bundles, start=1):
        start = time.perf_counter()
        evaluator.evaluate_bundle(bundle, "bench", epoch, None)
        seconds.append(time.perf_counter() - start)
    return seconds


# ------------------------------------------------------------------------------------------------ naive baseline


class Naive:
    """The paper suite as a plain script computes it (module docstring)."""

    def __init__(self, bundle, suite):
        from open_clip.transform import image_transform

        self.bundle, self.suite = bundle, suite
        self.model = bundle.model
        self.preprocess = image_transform(bundle.image_size, is_train=False, mean=bundle.image_mean, std=bundle.image_std)
        self.rng = np.random.default_rng(0)

    def _classifier(self, names):
        from fastclip.eval.zeroshot import build_zeroshot_classifier

        return build_zeroshot_classifier(self.model, self.bundle.tokenizer, names, ("a photo of a {}.",), device="cpu")

    def _encode(self, pil_images, blocks=False):
        from fastclip.eval.features import block_means

        batch = torch.stack([self.preprocess(image) for image in pil_images])
        if not blocks:
            with torch.no_grad():
                return [self.model.encode_image(batch)]
        with block_means(self.model) as collected, torch.no_grad():
            embedding = self.model.encode_image(batch)
        return [embedding] + [chunks[0] for chunks in collected]

    def _open(self, path):
        from PIL import Image

        with Image.open(path) as image:
            return image.convert("RGB")

    def classification(self):
        from PIL import Image

        from fastclip.eval.datasets.classification import load_cifar

        data = load_cifar(self.suite.datasets["cifar100"].path, "cifar100", "test")
        arrays = data.images.permute(0, 2, 3, 1).numpy()
        # zeroshot
        classifier = self._classifier(data.class_names)
        clean = torch.cat([self._encode([Image.fromarray(a) for a in arrays[s : s + 64]])[0] for s in range(0, len(arrays), 64)])
        accuracy = (classifier.logits(clean).argmax(1) == data.labels).float().mean().item()
        # noise_robustness: a new classifier, clean features again, numpy noise per sigma (imagecorruptions' way)
        classifier = self._classifier(data.class_names)
        clean = torch.cat([self._encode([Image.fromarray(a) for a in arrays[s : s + 64]])[0] for s in range(0, len(arrays), 64)])
        drops, stability = [], []
        for sigma in SIGMAS:
            noisy = []
            for s in range(0, len(arrays), 64):
                chunk = arrays[s : s + 64] / 255.0
                chunk = np.uint8(np.clip(chunk + self.rng.normal(size=chunk.shape, scale=sigma), 0, 1) * 255)
                noisy.append(self._encode([Image.fromarray(a) for a in chunk])[0])
            noisy = torch.cat(noisy)
            noisy_accuracy = (classifier.logits(noisy).argmax(1) == data.labels).float().mean().item()
            drops.append((accuracy - noisy_accuracy) / accuracy if accuracy else float("nan"))
            stability.append(F.cosine_similarity(clean, noisy).mean().item())
        return accuracy, drops, stability

    def shape_bias(self):
        from fastclip.eval.datasets.cue_conflict import scan_cue_conflict_folder

        entries = scan_cue_conflict_folder(self.suite.datasets["cue-conflict"].path)
        categories = sorted({e.shape for e in entries} | {e.texture for e in entries})
        classifier = self._classifier(categories)
        shape = texture = 0
        for s in range(0, len(entries), 64):
            chunk = entries[s : s + 64]
            decisions = classifier.logits(self._encode([self._open(e.path) for e in chunk])[0]).argmax(1).tolist()
            for entry, decision in zip(chunk, decisions):
                if entry.shape != entry.texture:
                    shape += categories[decision] == entry.shape
                    texture += categories[decision] == entry.texture
        return shape / max(1, shape + texture)

    @staticmethod
    def _distances(first, second, pooled_squared):
        scale = pooled_squared.mean(0)
        squared = (first - second) ** 2
        return {
            "l2": np.sqrt(squared.sum(1)),
            "cosine": 1 - (first * second).sum(1) / (np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)),
            "normalized_euclidean": np.sqrt(np.where(scale > 0, squared / np.where(scale > 0, scale, 1), 0).mean(1)),
        }

    def iqa(self, name):
        from fastclip.eval.datasets.kadid10k import load_kadid10k
        from fastclip.eval.datasets.tid2013 import load_tid2013

        pairs = (load_tid2013 if name == "tid2013" else load_kadid10k)(self.suite.datasets[name].path)
        refs, dists = [], []
        for s in range(0, len(pairs), 32):
            refs.append(self._encode([self._open(p) for p in pairs.references[s : s + 32]], blocks=True))
            dists.append(self._encode([self._open(p) for p in pairs.distorted[s : s + 32]], blocks=True))
        quality = pairs.scores.numpy()
        rows = {}
        for layer in range(len(refs[0])):
            a = torch.cat([r[layer] for r in refs]).double().numpy()
            b = torch.cat([d[layer] for d in dists]).double().numpy()
            for distance, values in self._distances(a, b, (a - b) ** 2).items():
                similarity = -values
                rows[(layer, distance)] = (
                    scipy.stats.spearmanr(similarity, quality).statistic,
                    scipy.stats.pearsonr(similarity, quality).statistic,
                    scipy.stats.kendalltau(similarity, quality).statistic,
                    scipy.stats.bootstrap(
                        (similarity, quality), _spearman, paired=True, vectorized=True, n_resamples=RESAMPLES,
                        method="percentile", rng=0,
                    ).confidence_interval,
                )  # fmt: skip
        return rows

    def two_afc(self):
        from fastclip.eval.datasets.bapps import load_bapps, two_afc_scores

        subsets = load_bapps(self.suite.datasets["bapps"].path, "val")
        results = {}
        for subset, triplets in subsets.items():
            features = {role: [] for role in ("ref", "p0", "p1")}
            for s in range(0, len(triplets), 32):
                for role, paths in (("ref", triplets.references), ("p0", triplets.left), ("p1", triplets.right)):
                    features[role].append(self._encode([self._open(p) for p in paths[s : s + 32]], blocks=True))
            for layer in range(len(features["ref"][0])):
                ref, p0, p1 = (torch.cat([f[layer] for f in features[role]]).double().numpy() for role in ("ref", "p0", "p1"))
                pooled = np.concatenate([(ref - p0) ** 2, (ref - p1) ** 2])
                d0, d1 = self._distances(ref, p0, pooled), self._distances(ref, p1, pooled)
                for distance in d0:
                    scores = two_afc_scores(torch.from_numpy(d0[distance]), torch.from_numpy(d1[distance]), triplets.p_right).numpy()
                    boot = [scores[self.rng.integers(0, len(scores), len(scores))].mean() for _ in range(RESAMPLES)]
                    results[(subset, layer, distance)] = (scores.mean(), np.percentile(boot, [2.5, 97.5]))
        return results

    def saliency(self):
        """Image by image, scored with the MIT benchmark's metric code (its numpy transcription in tests/): what a
        user without fastclip's metric kernels runs. The maps themselves come from fastclip's map code."""
        from fastclip.eval.datasets.images import decode_map
        from fastclip.eval.datasets.saliency import fixation_points, load_mit1003
        from fastclip.eval.saliency_maps import vit_maps
        from fastclip.ops.saliency_metrics import center_bias
        from tests import saliency_mit_numpy as mit
        from torchvision.transforms.v2 import functional as TF

        dataset = load_mit1003(self.suite.datasets["mit1003"].path)
        size = self.bundle.image_size
        points = [fixation_points(entry).numpy() for entry in dataset.entries]
        values = []
        for index, entry in enumerate(dataset.entries):  # one image at a time
            image = TF.to_image(self._open(entry.image))
            image = TF.resize(TF.to_dtype(image, torch.float32, scale=True), [size, size], antialias=True)
            image = TF.normalize(image, list(self.bundle.image_mean), list(self.bundle.image_std))[None]
            maps = vit_maps(self.model, self.bundle.tokenizer, image, ("cls_attention", "rollout", "relevance"), text="a photo.")
            human = decode_map(entry.fixation_map).double().numpy()
            fixated = points[index]
            pixels, count = fixated.size, int(fixated.sum())
            baseline = center_bias(*fixated.shape).numpy()
            # sAUC's negatives: fixations of 10 other images (the MIT code's M = 10) moved to this image's size.
            others = np.unique(np.concatenate([
                _rescaled_flat_indices(points[(index + k) % len(points)], fixated.shape) for k in range(1, 11)
            ]))  # fmt: skip
            for predicted in maps.values():
                predicted = predicted[0].double().numpy()
                values.append((
                    mit.CC(predicted, human), mit.NSS(predicted, fixated), mit.similarity(predicted, human),
                    mit.KLdiv(predicted, human),
                    mit.AUC_Judd(predicted, fixated, self.rng.random(pixels) / 1e7),
                    mit.AUC_Borji(predicted, fixated, self.rng.integers(0, pixels, (count, 100))),
                    mit.AUC_shuffled(predicted, fixated, [self.rng.choice(others, min(count, len(others)), replace=False) for _ in range(100)]),
                    mit.InfoGain(predicted, fixated, baseline),
                ))  # fmt: skip
        return len(values)

    def epoch(self) -> None:
        self.classification()
        self.shape_bias()
        self.iqa("tid2013")
        self.iqa("kadid10k")
        self.two_afc()
        self.saliency()


def _rescaled_flat_indices(fixated: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows, columns = np.nonzero(fixated)
    rows = np.minimum((rows * shape[0]) // fixated.shape[0], shape[0] - 1)
    columns = np.minimum((columns * shape[1]) // fixated.shape[1], shape[1] - 1)
    return rows * shape[1] + columns


def _spearman(x, y, axis=-1):
    return scipy.stats.pearsonr(scipy.stats.rankdata(x, axis=axis), scipy.stats.rankdata(y, axis=axis), axis=axis).statistic


# -------------------------------------------------------------------------------------------------- benchmarks


@pytest.mark.benchmark(group="eval_epoch")
def test_toyworld_suite_per_epoch(benchmark, bench_info, tmp_path):
    """fc-tiny-vit, the toy-world suite: the first epoch (data generated) and three more (steady state)."""
    bundles = _bundles(4)
    seconds = fastclip_epochs("toyworld", bundles, tmp_path / "toy")
    steady = sorted(seconds[1:])[len(seconds[1:]) // 2]  # the median of the three steady epochs
    benchmark.pedantic(lambda: None, rounds=1)
    bench_info.update(
        model=MODEL, threads=torch.get_num_threads(), load_average=os.getloadavg()[0],
        first_epoch_seconds=round(seconds[0], 2), steady_epoch_seconds=[round(s, 2) for s in seconds[1:]],
        goal_seconds=15, meets_goal=steady <= 15,
    )  # fmt: skip
    print(f"\ntoy-world suite, {MODEL}, {torch.get_num_threads()} threads: first epoch {seconds[0]:.1f} s, then "
          f"{', '.join(f'{s:.1f}' for s in seconds[1:])} s (load {os.getloadavg()[0]:.1f})")  # fmt: skip


@pytest.mark.benchmark(group="eval_epoch")
def test_paper_shaped_suite_vs_naive_baseline(benchmark, bench_info, tmp_path):
    """One run, both sides on the same files and model, under benchmarks/conftest.py's discipline: one warm-up epoch
    each (fastclip's builds the run's data), then three timed epochs each, interleaved; medians compared."""
    suite_path = paper_shaped_suite(tmp_path / "data")
    suite = load_suite(str(suite_path))
    timing = Timing(rounds=3, warmup=1)
    bundles = iter(_bundles(timing.warmup + timing.rounds))
    options = options_for_suite(suite, torch.device("cpu"))
    evaluator = Evaluator(tmp_path / "out", options, force=True)
    epochs = iter(range(1, timing.warmup + timing.rounds + 1))
    naive = Naive(_bundles(1)[0], suite)

    def fastclip_epoch():
        evaluator.evaluate_bundle(next(bundles), "bench", next(epochs), None)

    bench_info.update(provider="fastclip-eval vs naive script", model=MODEL, shape=PAPER_SHAPE, image_sizes=SIZES,
                      resamples=RESAMPLES, goal=5)  # fmt: skip
    result = timed_pair(benchmark, fastclip_epoch, naive.epoch, timing)
    if result:
        print(f"\npaper-shaped suite: fastclip steady epoch {result['fast']['median']:.1f} s, naive "
              f"{result['baseline']['median']:.1f} s (medians of {timing.rounds}); {result['ratio']:.1f}x")  # fmt: skip
