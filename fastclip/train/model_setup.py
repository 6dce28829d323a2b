"""The model fastclip-train trains, built from open_clip's model flags: --model and its --force-* overrides,
--image-mean/--image-std, --pretrained (a local file), --lock-image*/--lock-text*, --grad-checkpointing.

A checkpoint must rebuild the model it holds, so the config stored in it (`bundle.model_cfg`) is the config with
the --force-* overrides applied, as open_clip's factory applies them.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from fastclip.models import ModelBundle, create_model, model_config
from fastclip.train.loss import model_kwargs as loss_model_kwargs
from fastclip.train.openclip_flags import UnsupportedFlagError

PRETRAINED_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def check_model_supported(model_name: str) -> dict:
    """The model's config; CoCa and Hugging Face text towers are refused with the reason."""
    config = model_config(model_name)
    if "multimodal_cfg" in config:
        raise UnsupportedFlagError(f"--model {model_name}: CoCa models are not supported (their captioning decoder "
                                   "and loss are not implemented with fastclip's fused losses)")
    if config.get("text_cfg", {}).get("hf_model_name"):
        raise UnsupportedFlagError(
            f"--model {model_name}: its text tower is the Hugging Face model "
            f"{config['text_cfg']['hf_model_name']!r}, which would need a download; fastclip downloads nothing")
    return config


def forced_config(config: dict, args) -> dict:
    """The model config with open_clip's --force-* overrides applied (as open_clip.factory.create_model does)."""
    config = copy.deepcopy(config)
    vision, text = config.setdefault("vision_cfg", {}), config.setdefault("text_cfg", {})
    if args.force_quick_gelu:
        config["quick_gelu"] = True
    if args.force_patch_dropout is not None:
        vision["patch_dropout"] = args.force_patch_dropout
    if args.force_image_size is not None:
        vision["image_size"] = args.force_image_size
    if args.force_context_length is not None:
        text["context_length"] = args.force_context_length
    if args.force_custom_text:
        config["custom_text"] = True
    return config


def resolve_pretrained(pretrained: str, model_name: str) -> str | None:
    """--pretrained: a local file, or a clear refusal for a tag (or a missing file)."""
    if not pretrained:
        return None
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path)
    if path.suffix in PRETRAINED_SUFFIXES or "/" in pretrained or path.parent != Path("."):
        raise FileNotFoundError(f"--pretrained {pretrained}: no such checkpoint file")
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(model_name)
    known = f"one of {model_name}'s pretrained tags" if pretrained in tags else "not a file, so a pretrained tag"
    raise UnsupportedFlagError(
        f"--pretrained {pretrained}: {known}, which would need a download; fastclip downloads nothing at run time: "
        f"fetch it once with open_clip.create_model_and_transforms({model_name!r}, pretrained={pretrained!r}) and "
        "pass the downloaded file's path"
    )


def _model_kwargs(args) -> dict:
    kwargs = dict(loss_model_kwargs(args))
    for name in ("force_quick_gelu", "force_custom_text"):
        if getattr(args, name):
            kwargs[name] = True
    for name in ("force_patch_dropout", "force_image_size", "force_context_length"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    return kwargs


def lock_text(model: torch.nn.Module, unlocked_layers: int, freeze_layer_norm: bool) -> None:
    """open_clip's --lock-text: freeze the text tower but its last `unlocked_layers` layers.

    open_clip 3.3 asserts freeze_layer_norm for its own text towers (it always freezes the LayerNorms); here
    --lock-text without --lock-text-freeze-layer-norm keeps the locked layers' LayerNorms trainable, which is what
    the flag says and what open_clip does for Hugging Face text towers.
    """
    from open_clip.transformer import lock_text_tower

    lock_text_tower(model, unlocked_layers)
    if freeze_layer_norm:
        return
    text_parts = [model.text] if hasattr(model, "text") else [model.transformer, model.ln_final]
    for part in text_parts:
        for module in part.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.requires_grad_(True)


def build_model(args, device: torch.device) -> ModelBundle:
    """The bundle to train: model (on `device`, fp32 weights), forced config, tokenizer, image size and norms."""
    import open_clip

    config = forced_config(check_model_supported(args.model), args)
    pretrained = resolve_pretrained(args.pretrained, args.model)
    bundle = create_model(args.model, device=device, pretrained=pretrained, **_model_kwargs(args))
    model = bundle.model
    changes: dict = {"model_cfg": config}
    if args.force_context_length is not None:
        changes["tokenizer"] = open_clip.get_tokenizer(args.model, context_length=args.force_context_length)
    if args.image_mean is not None:
        changes["image_mean"] = tuple(args.image_mean)
    if args.image_std is not None:
        changes["image_std"] = tuple(args.image_std)
    if args.lock_image:  # as per LiT (https://arxiv.org/abs/2111.07991), as open_clip
        model.lock_image_tower(unlocked_groups=args.lock_image_unlocked_groups,
                               freeze_bn_stats=args.lock_image_freeze_bn_stats)
    if args.lock_text:
        lock_text(model, args.lock_text_unlocked_layers, args.lock_text_freeze_layer_norm)
    if args.grad_checkpointing:
        model.set_grad_checkpointing()
    return dataclasses.replace(bundle, **changes)
