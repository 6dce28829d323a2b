"""Prompt templates and class-name lists (fastclip.eval.templates) against open_clip's copy of OpenAI's lists and
the counts of reference/eval.md."""

from __future__ import annotations

from open_clip import zero_shot_metadata

from fastclip.eval import templates as T


def test_imagenet_templates_and_classes_are_openais():
    assert T.IMAGENET_TEMPLATES == tuple(template("{}") for template in zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES)
    assert T.IMAGENET_CLASSES == tuple(zero_shot_metadata.IMAGENET_CLASSNAMES)
    assert len(T.IMAGENET_TEMPLATES) == 80 and len(set(T.IMAGENET_TEMPLATES)) == 80
    assert len(T.IMAGENET_CLASSES) == 1000
    assert T.IMAGENET_CLASSES[:3] == ("tench", "goldfish", "great white shark") and T.IMAGENET_CLASSES[-1] == "toilet paper"


def test_cifar_lists_match_openai_prompts_md():
    assert len(T.CIFAR_TEMPLATES) == 18 and len(set(T.CIFAR_TEMPLATES)) == 18
    assert T.CIFAR_TEMPLATES[0] == "a photo of a {}." and T.CIFAR_TEMPLATES[-1] == "a photo of the big {}."
    assert len(T.CIFAR10_CLASSES) == 10 and T.CIFAR10_CLASSES[1] == "automobile"
    assert len(T.CIFAR100_CLASSES) == 100 and len(set(T.CIFAR100_CLASSES)) == 100
    # torchvision's meta spells the same 100 classes, alphabetically, with underscores.
    assert list(T.CIFAR100_CLASSES) == sorted(T.CIFAR100_CLASSES, key=lambda name: name.replace(" ", "_"))
    assert [name for name in T.CIFAR100_CLASSES if " " in name] == [
        "aquarium fish", "lawn mower", "maple tree", "oak tree", "palm tree", "pickup truck", "pine tree",
        "sweet pepper", "willow tree",
    ]  # fmt: skip
    assert T.PHOTO_TEMPLATES == ("a photo of a {}.",)
    assert all(template.count("{}") == 1 for templates in T.TEMPLATE_SETS.values() for template in templates)


def test_geirhos_category_indices_of_model_vs_human():
    indices = T.IMAGENET_INDICES_BY_GEIRHOS_CATEGORY
    assert tuple(indices) == T.GEIRHOS_CATEGORIES == tuple(sorted(T.GEIRHOS_CATEGORIES))
    counts = {"airplane": 1, "bear": 4, "bicycle": 2, "bird": 49, "boat": 5, "bottle": 7, "car": 3, "cat": 6,
              "chair": 4, "clock": 3, "dog": 109, "elephant": 2, "keyboard": 2, "knife": 1, "oven": 1, "truck": 8}  # fmt: skip
    assert {name: len(values) for name, values in indices.items()} == counts
    flat = [index for values in indices.values() for index in values]
    assert len(flat) == len(set(flat)) == 207 and all(0 <= index < 1000 for index in flat)
    names = T.IMAGENET_CLASSES
    assert [names[i] for i in indices["airplane"]] == ["airliner"]
    assert [names[i] for i in indices["bear"]] == ["brown bear", "American black bear", "polar bear", "sloth bear"]
    assert [names[i] for i in indices["keyboard"]] == ["computer keyboard", "typewriter keyboard"]
    assert [names[i] for i in indices["elephant"]] == ["Asian elephant", "African bush elephant"]
    assert all("cat" in names[i] or names[i] in ("Egyptian Mau", "cougar") for i in indices["cat"])
