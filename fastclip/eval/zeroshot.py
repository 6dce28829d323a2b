"""The zero-shot classifier: prompt templates, one text embedding per class, logits = 100 * cos.

As CLIP and CLIP_benchmark build it (reference/eval.md §5): every template is filled with the class name and
encoded, each embedding is L2-normalised, the embeddings of a class are averaged, and the average is renormalised.
Image features are L2-normalised and compared by cosine, scaled by 100 (CLIP's logit scale at the end of training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from fastclip.models import autocast

# OpenAI's seven-template ensemble for ImageNet (CLIP's prompt-engineering notebook).
CLIP_ENSEMBLE_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
TEMPLATE_SET_NAMES = ("toyworld", "photo", "clip7", "cifar", "imagenet")
# The toy world's caption templates: what a model trained on the embedded world has read, and plain photo prompts.
DEFAULT_TEMPLATE_SET = "toyworld"


def template_set(name: str) -> tuple[str, ...]:
    """Templates hold `{}` or `{name}` for the class name and `{a}` for it with its article ("an airplane").
    "cifar" and "imagenet" are OpenAI's 18 CIFAR and 80 ImageNet templates (fastclip.eval.templates)."""
    if name in ("cifar", "imagenet"):
        from fastclip.eval.templates import TEMPLATE_SETS

        return TEMPLATE_SETS[name]
    if name == "toyworld":
        from fastclip.data.toyworld import TEMPLATES

        return TEMPLATES
    if name == "photo":
        return ("a photo of a {}.",)
    if name == "clip7":
        return CLIP_ENSEMBLE_TEMPLATES
    raise ValueError(f"--templates must be one of {TEMPLATE_SET_NAMES}, got {name!r}")


def fill_template(template: str, class_name: str) -> str:
    article = "an" if class_name[:1].lower() in "aeiou" else "a"
    return template.format(class_name, name=class_name, a=f"{article} {class_name}")


def class_embeddings(text_features: torch.Tensor) -> torch.Tensor:
    """(C, T, D) template embeddings -> (C, D): normalise each, average over templates, renormalise."""
    return F.normalize(F.normalize(text_features.float(), dim=-1).mean(dim=1), dim=-1)


@dataclass(frozen=True)
class ZeroShotClassifier:
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    weights: torch.Tensor  # (C, D) float32, unit rows

    def logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """(N, D) image features (any scale) -> (N, C) logits 100 * cos."""
        features = F.normalize(image_features.float(), dim=-1)
        return 100.0 * features @ self.weights.to(features.device).T


def build_zeroshot_classifier(
    model: torch.nn.Module,
    tokenizer,
    class_names: Sequence[str],
    templates: Sequence[str],
    *,
    device: torch.device | str,
    precision: str = "fp32",
    batch_size: int = 256,
    tokenize: Callable[[list[str]], torch.Tensor] | None = None,
) -> ZeroShotClassifier:
    """Encode every (class, template) prompt with the model's text tower and build the classifier. `tokenize`
    replaces `tokenizer(prompts)`, e.g. to reuse the tokens of an earlier checkpoint of the same model."""
    class_names, templates = tuple(class_names), tuple(templates)
    if not class_names or not templates:
        raise ValueError("a zero-shot classifier needs at least one class name and one template")
    bad = [template for template in templates if not any(field in template for field in ("{}", "{name}", "{a}"))]
    if bad:
        raise ValueError(f"every template must hold the class name as {{}}, {{name}} or {{a}}; these do not: {bad}")
    prompts = [fill_template(template, name) for name in class_names for template in templates]
    tokens = tokenize(prompts) if tokenize is not None else tokenizer(prompts)
    chunks = []
    with torch.inference_mode(), autocast(precision, device):
        for start in range(0, len(prompts), batch_size):
            chunks.append(model.encode_text(tokens[start : start + batch_size].to(device)).float())
    text_features = torch.cat(chunks).reshape(len(class_names), len(templates), -1)
    return ZeroShotClassifier(class_names, templates, class_embeddings(text_features))


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) bool: whether the label is among the k highest logits (k is capped at the number of classes)."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels.to(logits.device)[:, None]).any(dim=1)
