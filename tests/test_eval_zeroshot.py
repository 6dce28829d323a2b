"""The zero-shot classifier: prompts from templates, per-class mean of normalised text embeddings, 100 * cos logits,
built once per checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from fastclip.eval.context import CheckpointContext, EvalData, EvalOptions
from fastclip.eval.zeroshot import build_zeroshot_classifier, class_embeddings, template_set, topk_correct
from fastclip.models import ModelBundle


class PromptTable:
    """A tokenizer and text tower whose embedding of each prompt is set by the test."""

    def __init__(self, embeddings: dict[str, list[float]]):
        self.prompts = list(embeddings)
        self.table = torch.tensor([embeddings[prompt] for prompt in self.prompts])
        self.encoded: list[str] = []

    def tokenizer(self, prompts: list[str]) -> torch.Tensor:
        self.encoded += prompts
        return torch.tensor([[self.prompts.index(prompt)] for prompt in prompts])

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens[:, 0]]


def test_class_embedding_normalises_each_template_before_averaging():
    # Class "cat": (3,0) and (0,1). Normalised first: mean (0.5, 0.5) -> (1,1)/sqrt2. Averaging raw vectors would
    # give (1.5, 0.5) -> (3,1)/sqrt10 instead.
    # Class "dog": (0,2) and (0,5): both normalise to (0,1).
    prompts = PromptTable({
        "a photo of a cat.": [3.0, 0.0], "art of the cat.": [0.0, 1.0],
        "a photo of a dog.": [0.0, 2.0], "art of the dog.": [0.0, 5.0],
    })  # fmt: skip
    classifier = build_zeroshot_classifier(
        prompts, prompts.tokenizer, ["cat", "dog"], ["a photo of a {}.", "art of the {}."], device="cpu"
    )
    assert prompts.encoded == ["a photo of a cat.", "art of the cat.", "a photo of a dog.", "art of the dog."]
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(classifier.weights, torch.tensor([[s, s], [0.0, 1.0]]))
    # logits = 100 * cos, whatever the image feature's norm.
    logits = classifier.logits(torch.tensor([[10.0, 0.0], [0.0, 0.5]]))
    torch.testing.assert_close(logits, torch.tensor([[100 * s, 0.0], [100 * s, 100.0]]))


def test_class_embeddings_batched_matches_loop():
    features = torch.randn(5, 7, 16, generator=torch.Generator().manual_seed(0))
    expected = torch.stack(
        [torch.nn.functional.normalize(torch.stack([f / f.norm() for f in cls]).mean(0), dim=0) for cls in features]
    )
    torch.testing.assert_close(class_embeddings(features), expected)
    torch.testing.assert_close(class_embeddings(features).norm(dim=1), torch.ones(5))


def test_templates_must_name_the_class():
    prompts = PromptTable({"x": [1.0, 0.0]})
    with pytest.raises(ValueError, match="must hold the class name"):
        build_zeroshot_classifier(prompts, prompts.tokenizer, ["cat"], ["a photo"], device="cpu")
    with pytest.raises(ValueError, match="--templates"):
        template_set("nonexistent")


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.1, 0.3], [0.2, 0.3, 0.1]])
    labels = torch.tensor([2, 0, 2])
    assert topk_correct(logits, labels, 1).tolist() == [False, True, False]
    assert topk_correct(logits, labels, 2).tolist() == [True, True, False]
    assert topk_correct(logits, labels, 5).tolist() == [True, True, True]  # k capped at the 3 classes


def test_classifier_is_built_once_per_checkpoint_and_class_list():
    prompts = PromptTable({f"a photo of a {name}.": [float(i), 1.0] for i, name in enumerate(["a", "b", "c"])})
    bundle = ModelBundle(prompts, "fake", {}, prompts.tokenizer, 8, (0.5,) * 3, (0.5,) * 3)
    options = EvalOptions(templates="photo")
    context = CheckpointContext(bundle, options, EvalData(options))
    first = context.classifier(["a", "b"])
    assert context.classifier(["a", "b"]) is first
    assert len(prompts.encoded) == 2
    assert context.classifier(["a", "b", "c"]) is not first
    assert len(prompts.encoded) == 5


def test_prompts_are_tokenised_once_per_run_not_per_checkpoint():
    prompts = PromptTable({f"a photo of a {name}.": [float(i), 1.0] for i, name in enumerate(["a", "b"])})
    calls = []

    def counting_tokenizer(texts):
        calls.append(list(texts))
        return prompts.tokenizer(texts)

    options = EvalOptions(templates="photo")
    data = EvalData(options)  # one run
    classifiers = []
    for scale in (1.0, -1.0):  # two checkpoints of the same model, with other text-tower weights
        tower = PromptTable({f"a photo of a {name}.": [scale * i, scale] for i, name in enumerate(["a", "b"])})
        bundle = ModelBundle(tower, "fake", {}, counting_tokenizer, 8, (0.5,) * 3, (0.5,) * 3)
        classifiers.append(CheckpointContext(bundle, options, data).classifier(["a", "b"]))
    assert calls == [["a photo of a a.", "a photo of a b."]]
    # The text tower still runs for every checkpoint.
    torch.testing.assert_close(classifiers[1].weights, -classifiers[0].weights)
