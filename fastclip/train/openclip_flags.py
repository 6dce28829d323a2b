"""Every flag of open_clip_train's parser, and what fastclip-train does with it: implemented with open_clip's
meaning (and default), or refused with the reason.

The table is the single source of the README's flag table (`markdown_table`) and of the refusals at start-up
(`check_supported`); tests/test_train_openclip_flags.py checks it against open_clip_train's own parser, so a flag
that a new open_clip adds is noticed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

IMPLEMENTED, REFUSED = "implemented", "refused"


@dataclass(frozen=True)
class FlagSupport:
    status: str  # IMPLEMENTED or REFUSED
    note: str  # how fastclip implements it (and where it differs), or why it is refused


def _implemented(note: str = "as open_clip") -> FlagSupport:
    return FlagSupport(IMPLEMENTED, note)


def _refused(reason: str) -> FlagSupport:
    return FlagSupport(REFUSED, reason)


# open_clip_train 3.3's flags in the order of its parser (the argparse dest names).
OPEN_CLIP_FLAGS: dict[str, FlagSupport] = {
    "train_data": _implemented("CSV, tar shards (brace ranges, `::` between sources) or a class folder; without it "
                               "the toy world trains. Remote URLs (`pipe:`, `s3://`, `http://`) are refused"),
    "train_data_upsampling_factors": _refused("needs shard resampling, which fastclip does not do: every rank reads "
                                              "its exact share of every sample once per epoch"),
    "val_data": _implemented("CSV or tar shards; open_clip's retrieval metrics and val loss into metrics.jsonl, "
                             "out.log and checkpoints/results.jsonl; with no --train-data it only evaluates"),
    "train_num_samples": _implemented("an epoch's sample budget; defaults from the CSV's rows or the shards' metadata"),
    "val_num_samples": _implemented("validation images to use (default: all)"),
    "dataset_type": _implemented("`auto` (by extension) whenever --train-data is given, the toy world otherwise; "
                                 "plus fastclip's `toyworld` and `folder`"),
    "dataset_resampled": _refused("shard sampling with replacement is not implemented: every rank reads its exact "
                                  "share of every sample once per epoch"),
    "csv_separator": _implemented(),
    "csv_img_key": _implemented("relative image paths resolve against the working directory (as open_clip), then "
                                "against the CSV's folder"),
    "csv_caption_key": _implemented("an empty caption is an empty text (open_clip trains on the word `nan`)"),
    "imagenet_val": _refused("ImageNet zero-shot during training is fastclip-eval's job: use --eval-suite with a "
                             "suite that lists it (evaluated every --zeroshot-frequency epochs)"),
    "imagenet_v2": _refused("ImageNet-v2 zero-shot during training is fastclip-eval's job: use --eval-suite"),
    "cache_dir": _refused("fastclip downloads nothing at run time: give --pretrained a local file"),
    "logs": _implemented("also `--logs-dir` (torchrun takes `--logs` for its own `--logs-specs`)"),
    "log_local": _implemented("each node's local rank 0 writes out-RANK.log"),
    "name": _implemented(),
    "workers": _implemented(),
    "batch_size": _implemented(),
    "epochs": _implemented("32 as open_clip; the no-data toy world defaults to 5"),
    "epochs_cooldown": _implemented(),
    "lr": _implemented("open_clip's model-based default (5e-4); the toy world defaults to 1e-3"),
    "beta1": _implemented("open_clip's model-based default"),
    "beta2": _implemented("open_clip's model-based default"),
    "eps": _implemented("open_clip's model-based default"),
    "wd": _implemented(),
    "momentum": _implemented("for timm optimizers"),
    "warmup": _implemented("10000 steps as open_clip; the toy world defaults to 50"),
    "opt": _implemented("fused AdamW, or timm/NAME through timm's create_optimizer_v2"),
    "use_bn_sync": _implemented(),
    "skip_scheduler": _implemented(),
    "lr_scheduler": _implemented("cosine, const, const-cooldown"),
    "lr_cooldown_end": _implemented(),
    "lr_cooldown_power": _implemented(),
    "save_frequency": _implemented("checkpoints written to a temporary file and renamed"),
    "save_most_recent": _implemented("epoch_latest.pt, which --resume latest then picks"),
    "zeroshot_frequency": _implemented("alias of fastclip's --eval-every: runs the --eval-suite in-process every N "
                                       "epochs and after the last one (default 2 when a suite is given)"),
    "val_frequency": _implemented(),
    "resume": _implemented("a checkpoint path or `latest`; remote (`s3://`) paths are refused"),
    "precision": _implemented("amp, amp_bf16 (amp_bfloat16), fp32; default amp on CUDA and fp32 on the CPU (amp "
                              "on the CPU is bf16 autocast). Pure low-precision weights (bf16, fp16, pure_bf16, "
                              "pure_fp16) are refused: fastclip keeps fp32 weights"),
    "model": _implemented("any open_clip config plus fc-tiny-vit / fc-small-vit; RN50 as open_clip, fc-tiny-vit for "
                          "the toy world. CoCa models and Hugging Face text towers are refused"),
    "pretrained": _implemented("a local checkpoint file (open_clip or fastclip layout, or a bare state_dict); a "
                               "pretrained tag that would need a download is refused"),
    "pretrained_image": _refused("the timm ImageNet weights would need a download; start from a local file with "
                                 "--pretrained"),
    "lock_image": _implemented(),
    "lock_image_unlocked_groups": _implemented(),
    "lock_image_freeze_bn_stats": _implemented(),
    "image_mean": _implemented(),
    "image_std": _implemented(),
    "image_interpolation": _refused("fastclip's decoders (DALI and PIL) resize with bicubic, open_clip's default"),
    "image_resize_mode": _refused("validation uses open_clip's default resize mode (shortest side, centre crop)"),
    "aug_cfg": _refused("fastclip's decoders apply open_clip's default augmentation, RandomResizedCrop(scale "
                        "0.9-1); other augmentations are not wired into the DALI and PIL pipelines"),
    "grad_checkpointing": _implemented(),
    "local_loss": _implemented(),
    "gather_with_grad": _implemented(),
    "force_context_length": _implemented("model and tokenizer; checkpoints store the changed config"),
    "force_image_size": _implemented("checkpoints store the changed config"),
    "force_quick_gelu": _implemented(),
    "force_patch_dropout": _implemented(),
    "force_custom_text": _implemented(),
    "torchscript": _refused("TorchScript training is gone from open_clip's main branch; use --torchcompile"),
    "torchcompile": _implemented("checkpoints keep the uncompiled keys"),
    "trace": _refused("a traced model cannot train (open_clip asserts the same); trace after training"),
    "accum_freq": _implemented("open_clip's feature cache, with the fused loss over the whole effective batch"),
    "device": _implemented("default cuda when available, else cpu; an explicit unavailable device is an error"),
    "dist_url": _implemented(),
    "dist_backend": _implemented(),
    "report_to": _implemented("tensorboard, wandb (offline unless WANDB_MODE says otherwise), both, or all"),
    "wandb_notes": _implemented(),
    "wandb_project_name": _implemented(),
    "debug": _implemented("DEBUG-level log lines"),
    "copy_codebase": _implemented("copies the fastclip package into LOGS/NAME/code"),
    "horovod": _refused("Horovod is not supported: launch with torchrun, or srun (SLURM's variables are read as "
                        "open_clip reads them)"),
    "ddp_static_graph": _implemented(),
    "no_set_device_rank": _implemented(),
    "seed": _implemented(),
    "grad_clip_norm": _implemented(),
    "lock_text": _implemented(),
    "lock_text_unlocked_layers": _implemented(),
    "lock_text_freeze_layer_norm": _implemented("without it the locked layers' LayerNorms stay trainable (open_clip "
                                                "3.3 asserts it for its own text towers)"),
    "log_every_n_steps": _implemented("100 as open_clip; the toy world defaults to 10"),
    "coca_caption_loss_weight": _refused("CoCa (its captioning loss and decoder) is not supported"),
    "coca_contrastive_loss_weight": _refused("CoCa (its captioning loss and decoder) is not supported"),
    "remote_sync": _refused("syncing the run to s3/fsspec is not supported: sync LOGS/NAME with your own tool"),
    "remote_sync_frequency": _refused("belongs to --remote-sync, which is not supported"),
    "remote_sync_protocol": _refused("belongs to --remote-sync, which is not supported"),
    "delete_previous_checkpoint": _implemented(),
    "distill_model": _refused("distillation (open_clip's DistillClipLoss) is not implemented with fastclip's losses"),
    "distill_pretrained": _refused("distillation (open_clip's DistillClipLoss) is not implemented with fastclip's "
                                   "losses"),
    "use_bnb_linear": _refused("bitsandbytes int8 layers are not supported (open_clip's support needs triton 2.0)"),
    "siglip": _implemented("fastclip's fused SigLIP loss"),
    "loss_dist_impl": _implemented("every SigLIP implementation gives the same values and gradients in fastclip's "
                                   "fused loss; the name is checked"),
}

# open_clip's --zeroshot-frequency is fastclip's --eval-every (one TrainConfig field, two flag names).
CONFIG_FIELD = {"zeroshot_frequency": "eval_every"}


class UnsupportedFlagError(ValueError):
    """An open_clip flag or value fastclip refuses; the message names the flag and the reason."""


def flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _default(config_cls, field_name: str):
    config_field = config_cls.__dataclass_fields__[field_name]
    if config_field.default_factory is not dataclasses.MISSING:
        return config_field.default_factory()
    return config_field.default


def refused_flags(config) -> list[str]:
    """The refused open_clip flags that `config` sets to something other than open_clip's default."""
    return [
        dest for dest, support in OPEN_CLIP_FLAGS.items()
        if support.status == REFUSED
        and getattr(config, CONFIG_FIELD.get(dest, dest)) != _default(type(config), CONFIG_FIELD.get(dest, dest))
    ]


REMOTE_PREFIXES = ("pipe:", "s3://", "gs://", "http://", "https://", "hf://")
LOW_PRECISION_WEIGHTS = ("bf16", "fp16", "pure_bf16", "pure_fp16")


def refused_values(config) -> list[str]:
    """One-line reasons for values of implemented flags that fastclip refuses."""
    reasons = []
    for dest in ("train_data", "val_data", "resume"):
        value = getattr(config, dest)
        if value and value.startswith(REMOTE_PREFIXES):
            reasons.append(f"{flag_name(dest)} {value!r}: remote sources are not supported; fastclip reads local "
                           "files (copy the data, or mount it)")
    if config.precision in LOW_PRECISION_WEIGHTS:
        reasons.append(f"--precision {config.precision}: fastclip keeps fp32 weights and trains under autocast; use "
                       "--precision amp or amp_bf16")
    if config.opt != "adamw" and not config.opt.startswith("timm/"):
        reasons.append(f"--opt {config.opt}: unknown optimizer; use adamw or timm/NAME")
    if config.lr_scheduler == "const-cooldown" and config.epochs_cooldown is None:
        reasons.append("--lr-scheduler const-cooldown needs --epochs-cooldown N (the epochs of the cooldown)")
    if config.loss_dist_impl is not None and not config.siglip:
        reasons.append("--loss-dist-impl chooses SigLIP's distributed implementation: it needs --siglip")
    return reasons


def check_supported(config) -> None:
    """Raise UnsupportedFlagError naming every refused flag or value of `config` (one line)."""
    reasons = [f"{flag_name(dest)}: not supported: {OPEN_CLIP_FLAGS[dest].note}" for dest in refused_flags(config)]
    reasons += refused_values(config)
    if reasons:
        raise UnsupportedFlagError("; ".join(reasons))


def markdown_table() -> str:
    """README's table of open_clip's flags (tests/test_train_openclip_flags.py keeps README equal to it)."""
    lines = ["| open_clip flag | fastclip-train | how, or why not |", "|---|---|---|"]
    for dest, support in OPEN_CLIP_FLAGS.items():
        note = support.note.replace("|", "\\|")
        lines.append(f"| `{flag_name(dest)}` | {support.status} | {note} |")
    return "\n".join(lines) + "\n"
