"""fastclip-train's flags: every flag of open_clip_train's parser, with open_clip's names, meanings and defaults,
plus fastclip's own (the toy world, the loss backend, DALI, the evaluation hook).

Every flag is one `TrainConfig` field; its argparse settings live in the field's metadata, so adding a flag is
adding a field (the parser, params.json and the tests all follow). Which open_clip flags are implemented and which
are refused (and why) is fastclip.train.openclip_flags' table.

Defaults that depend on what is trained are left unset here (None) and filled by `resolve_defaults`: with
`--train-data` (or `--dataset-type synthetic`) they are open_clip's (RN50, 32 epochs, 10000 warmup steps, ...);
with no data fastclip trains fc-tiny-vit on the embedded toy world, sized to take a few CPU minutes.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from fastclip.data.loader import DATASET_TYPES
from fastclip.data.toyworld_knobs import DEFAULT_PRESET, KNOB_HELP, PRESETS, knobs_of_config

# One toy-world epoch when --train-num-samples is not given: 128 steps of the default batch.
TOYWORLD_DEFAULT_NUM_SAMPLES = 8192

# open_clip's precision choices; the pure low-precision ones are refused by fastclip.train.openclip_flags.
OPEN_CLIP_PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "pure_bf16", "pure_fp16", "fp32")

# The defaults that differ between a run on the user's data (open_clip's) and the no-flag toy-world run.
OPEN_CLIP_PRESET = {"model": "RN50", "epochs": 32, "warmup": 10000, "log_every_n_steps": 100, "workers": 4}
TOYWORLD_PRESET = {"model": "fc-tiny-vit", "epochs": 5, "warmup": 50, "log_every_n_steps": 10, "workers": 2,
                   "lr": 1e-3}


def flag(default: Any, help: str, **argparse_settings: Any):
    """A TrainConfig field that is also a command-line flag (`--field-name`)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **argparse_settings})
    return field(default=default, metadata={"help": help, **argparse_settings})


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def separator(text: str) -> str:
    """open_clip's default is a tab; accept the two characters `\\t` typed in a shell as a tab too."""
    return "\t" if text == "\\t" else text


class ParseKwargs(argparse.Action):
    """open_clip's `--aug-cfg key=value ...`: values are Python literals where they parse, strings otherwise."""

    def __call__(self, parser, namespace, values, option_string=None):
        settings = {}
        for value in values:
            key, _, text = value.partition("=")
            try:
                settings[key] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                settings[key] = text
        setattr(namespace, self.dest, settings)


@dataclass
class TrainConfig:
    # Data
    train_data: str | None = flag(None, "training data: a CSV file, tar shards as img2dataset writes them "
                                  "('shards/{00000..00009}.tar', sources joined with '::') or a folder with one "
                                  "subfolder per class; without it fastclip trains on the embedded toy world")
    train_data_upsampling_factors: str | None = flag(None, "open_clip's per-source weights for resampled shards "
                                                     "(refused: fastclip reads every sample once per epoch)")
    val_data: str | None = flag(None, "validation pairs (a CSV file or tar shards): open_clip's retrieval metrics "
                                "and val loss every --val-frequency epochs into metrics.jsonl, out.log and "
                                "checkpoints/results.jsonl")
    train_num_samples: int | None = flag(
        None, f"images in one epoch (an epoch is a sample budget); default {TOYWORLD_DEFAULT_NUM_SAMPLES} for the toy "
        "world, every row for csv, the shards' metadata for webdataset", type=positive_int)
    val_num_samples: int | None = flag(None, "validation images to use (default: all)", type=positive_int)
    dataset_type: str | None = flag(None, "where the training pairs come from (default: auto when --train-data is "
                                    "given, which picks by extension as open_clip; toyworld otherwise)",
                                    choices=DATASET_TYPES)
    dataset_resampled: bool = flag(False, "open_clip's shard sampling with replacement (refused: fastclip reads every "
                                   "sample once per epoch)")
    csv_separator: str = flag("\t", "column separator of the CSV (default: a tab)", type=separator)
    csv_img_key: str = flag("filepath", "CSV column holding image paths (relative ones resolve against the working "
                            "directory, as open_clip, then against the CSV's folder)")
    csv_caption_key: str = flag("title", "CSV column holding captions")
    imagenet_val: str | None = flag(None, "open_clip's ImageNet zero-shot during training (refused: use --eval-suite)")
    imagenet_v2: str | None = flag(None, "open_clip's ImageNet-v2 zero-shot during training (refused: use "
                                   "--eval-suite)")
    cache_dir: str | None = flag(None, "open_clip's download cache (refused: fastclip downloads nothing)")
    workers: int | None = flag(None, "data-loading worker processes per rank (default: 4, open_clip's; with DALI "
                               "they read and tokenise, and DALI decodes with as many threads)",
                               type=non_negative_int)
    data_backend: str = flag("auto", "image decoding for webdataset and folder: dali, torch (PIL in the workers), "
                             "or auto (DALI on CUDA; on the CPU the faster of the two in benchmarks/bench_data.py)",
                             choices=("auto", "dali", "torch"))
    hw_decoder_load: float = flag(0.65, "share of JPEG decoding DALI gives the GPU's hardware decoder (A100, H100, "
                                  "H200; the rest runs on CUDA cores)")
    # The toy world's knobs (fastclip.data.toyworld_knobs): a preset, then per-knob overrides (None: the preset's)
    toyworld_preset: str = flag(DEFAULT_PRESET, "toy-world preset: paper (texture easier to decode but less "
                                "predictive than shape, as in natural images) or cue-equal (both cues always "
                                "predictive: the world before the knobs)", choices=tuple(PRESETS))
    texture_predictivity: float | None = flag(None, KNOB_HELP["texture_predictivity"], type=float)
    shape_predictivity: float | None = flag(None, KNOB_HELP["shape_predictivity"], type=float)
    texture_contrast: float | None = flag(None, KNOB_HELP["texture_contrast"], type=float)
    shape_scale_min: float | None = flag(None, KNOB_HELP["shape_scale_min"], type=float)
    shape_scale_max: float | None = flag(None, KNOB_HELP["shape_scale_max"], type=float)
    occlusion: float | None = flag(None, KNOB_HELP["occlusion"], type=float)
    caption_noise: float | None = flag(None, KNOB_HELP["caption_noise"], type=float)
    # Logs
    logs: str = flag("./logs/", "folder holding the runs; a run writes LOGS/NAME/{out.log,params.json,metrics.jsonl,"
                     "checkpoints/}. Under torchrun write it after `--` or as --logs-dir (torchrun takes --logs "
                     "for its own --logs-specs)", aliases=("--logs-dir",))
    log_local: bool = flag(False, "every node's local rank 0 writes its own out-RANK.log (default: global rank 0 "
                           "writes out.log)")
    name: str | None = flag(None, "run name (default: a timestamp with the model, lr, batch size, workers and "
                            "precision, as open_clip)")
    # Optimisation
    batch_size: int = flag(64, "batch size per rank", type=positive_int)
    epochs: int | None = flag(None, "number of epochs (default: 32, open_clip's; toy world 5)", type=positive_int)
    epochs_cooldown: int | None = flag(None, "epochs of cooldown at the end of --lr-scheduler const-cooldown",
                                       type=positive_int)
    lr: float | None = flag(None, "peak learning rate (default: open_clip's 5e-4; toy world 1e-3)", type=float)
    beta1: float | None = flag(None, "Adam beta 1 (default: 0.9)", type=float)
    beta2: float | None = flag(None, "Adam beta 2 (default: 0.98 for ViT models, 0.999 otherwise, as open_clip)",
                               type=float)
    eps: float | None = flag(None, "Adam epsilon (default: 1e-6 for ViT models, 1e-8 otherwise, as open_clip)",
                             type=float)
    wd: float = flag(0.2, "weight decay (not applied to gains, biases, embeddings of dim < 2 and logit_scale)")
    momentum: float | None = flag(None, "momentum, for timm optimizers (--opt timm/NAME)", type=float)
    warmup: int | None = flag(None, "linear warmup steps (default: 10000, open_clip's; toy world 50)",
                              type=non_negative_int)
    opt: str = flag("adamw", "optimizer: adamw, or any timm optimizer as timm/NAME (needs timm)")
    use_bn_sync: bool = flag(False, "convert BatchNorm layers to SyncBatchNorm under torchrun")
    skip_scheduler: bool = flag(False, "keep the learning rate at --lr (no warmup, no decay)")
    lr_scheduler: str = flag("cosine", "cosine, const or const-cooldown (constant, then a polynomial cooldown over "
                             "the last --epochs-cooldown epochs)", choices=("cosine", "const", "const-cooldown"))
    lr_cooldown_end: float = flag(0.0, "learning rate at the end of the cooldown")
    lr_cooldown_power: float = flag(1.0, "power of the polynomial cooldown (1: linear)")
    save_frequency: int = flag(1, "write LOGS/NAME/checkpoints/epoch_N.pt every N epochs (and after the last); "
                               "0 saves only the last", type=non_negative_int)
    save_most_recent: bool = flag(False, "also write checkpoints/epoch_latest.pt after every epoch (what --resume "
                                  "latest then picks)")
    # Mid-epoch checkpoints (fastclip.train.checkpoints; open_clip_train has no equivalent flag)
    save_every_n_steps: int = flag(0, "also write LOGS/NAME/checkpoints/epoch_E_step_S.pt every N optimizer steps "
                                   "(E epochs done, S steps done), keeping only the newest; --resume latest continues "
                                   "from it exactly, in the middle of an epoch (0: never)", type=non_negative_int)
    eval_every: int | None = flag(None, "run the --eval-suite in-process every N epochs and after the last one, "
                                  "results in LOGS/NAME/eval (default: 2 when --eval-suite is given; 0: never); "
                                  "--zeroshot-frequency is open_clip's name", type=non_negative_int,
                                  aliases=("--zeroshot-frequency",))
    val_frequency: int = flag(1, "validate on --val-data every N epochs (and after the last); 0: never",
                              type=non_negative_int)
    resume: str | None = flag(None, "`latest` (the newest readable checkpoint of LOGS/NAME) or a checkpoint path")
    precision: str | None = flag(None, "floating-point precision (default: amp on CUDA, as open_clip, fp32 on the "
                                 "CPU); amp is fp16 with a GradScaler on CUDA and bf16 on the CPU",
                                 choices=OPEN_CLIP_PRECISIONS)
    # Model
    model: str | None = flag(None, "open_clip model config name, or fastclip's fc-tiny-vit / fc-small-vit "
                             "(default: RN50, open_clip's; toy world fc-tiny-vit)")
    pretrained: str = flag("", "weights to start from: a local checkpoint file (open_clip or fastclip layout); "
                           "a pretrained tag that needs a download is refused")
    pretrained_image: bool = flag(False, "open_clip's ImageNet weights for a timm image tower (refused: a download)")
    lock_image: bool = flag(False, "freeze the image tower (LiT)")
    lock_image_unlocked_groups: int = flag(0, "leave the last N layer groups of the image tower trainable",
                                           type=non_negative_int)
    lock_image_freeze_bn_stats: bool = flag(False, "freeze BatchNorm running statistics in the locked image layers")
    image_mean: list[float] | None = flag(None, "override the model's image mean", type=float, nargs="+")
    image_std: list[float] | None = flag(None, "override the model's image std", type=float, nargs="+")
    image_interpolation: str | None = flag(None, "open_clip's resize interpolation override (refused: fastclip's "
                                           "decoders use bicubic, open_clip's default)",
                                           choices=("bicubic", "bilinear", "random"))
    image_resize_mode: str | None = flag(None, "open_clip's inference resize mode override (refused: validation "
                                         "uses open_clip's default)", choices=("shortest", "longest", "squash"))
    aug_cfg: dict = flag({}, "open_clip's augmentation settings (refused when given: fastclip's decoders apply "
                         "open_clip's default RandomResizedCrop(0.9, 1))", nargs="*", action=ParseKwargs)
    grad_checkpointing: bool = flag(False, "recompute activations in the backward pass (less memory, more compute)")
    local_loss: bool = flag(False, "each rank scores only its own features against all gathered ones (less memory "
                            "and compute; with --gather-with-grad the gradients equal the global loss's)")
    gather_with_grad: bool = flag(False, "all-gather features with their gradients (the gradient flows back to the "
                                  "rank that computed each feature)")
    force_context_length: int | None = flag(None, "override the text context length", type=positive_int)
    force_image_size: list[int] | None = flag(None, "override the image size (one value: square)", type=int,
                                              nargs="+")
    force_quick_gelu: bool = flag(False, "use QuickGELU (as OpenAI's models) in a model that does not")
    force_patch_dropout: float | None = flag(None, "override the ViT patch dropout rate", type=float)
    force_custom_text: bool = flag(False, "build a CustomTextCLIP (separate text tower module)")
    torchscript: bool = flag(False, "open_clip's torch.jit.script (refused: gone from open_clip main; use "
                             "--torchcompile)")
    torchcompile: bool = flag(False, "torch.compile the model (checkpoints keep the uncompiled keys)")
    trace: bool = flag(False, "open_clip's torch.jit.trace for inference (refused: it cannot train)")
    accum_freq: int = flag(1, "update every N micro-batches with open_clip's feature cache: every micro-batch is "
                           "encoded without gradients, then re-encoded with gradients against the cached rest "
                           "(effective batch N x batch size x ranks)", type=positive_int)
    loss: str = flag("auto", "contrastive loss implementation (fastclip.nn; open_clip's semantics in every case): "
                     "auto (the fused Triton kernel on CUDA, the chunked O(batch) memory one on the CPU), fused "
                     "(Triton), or reference (open_clip's batch x batch logits)", choices=("auto", "fused", "reference"))
    siglip: bool = flag(False, "train with the SigLIP sigmoid loss instead of CLIP's softmax loss, as open_clip's "
                        "--siglip: logit_scale starts at log 10 and a learnable logit_bias at -10")
    loss_dist_impl: str | None = flag(None, "SigLIP's distributed implementation (bidir, shift, reduce, gather; "
                                      "default bidir); fastclip's fused SigLIP loss gives the same values and "
                                      "gradients for each", choices=("bidir", "shift", "reduce", "gather"))
    coca_caption_loss_weight: float = flag(2.0, "CoCa's captioning loss weight (refused when changed: CoCa is not "
                                           "supported)")
    coca_contrastive_loss_weight: float = flag(1.0, "CoCa's contrastive loss weight (refused when changed: CoCa is "
                                               "not supported)")
    distill_model: str | None = flag(None, "open_clip's teacher model for distillation (refused)")
    distill_pretrained: str | None = flag(None, "open_clip's teacher weights for distillation (refused)")
    use_bnb_linear: str | None = flag(None, "open_clip's bitsandbytes int8 linear layers (refused)")
    seed: int = flag(0, "seed of model initialisation and data order (augmentation uses seed + rank)")
    grad_clip_norm: float | None = flag(None, "clip the gradient norm to this value", type=float)
    lock_text: bool = flag(False, "freeze the text tower")
    lock_text_unlocked_layers: int = flag(0, "leave the last N layers of the text tower trainable",
                                          type=non_negative_int)
    lock_text_freeze_layer_norm: bool = flag(False, "freeze the LayerNorms of the locked text layers too")
    # Devices and distribution
    device: str | None = flag(None, "cuda, cpu or cuda:N (default: cuda when available, else cpu, as open_clip); "
                              "under torchrun or SLURM each rank uses cuda:LOCAL_RANK")
    dist_url: str | None = flag(None, "torch.distributed init method (default: env://)")
    dist_backend: str | None = flag(None, "torch.distributed backend (default: nccl on CUDA, gloo on CPU)")
    horovod: bool = flag(False, "open_clip's Horovod mode (refused: launch with torchrun or SLURM)")
    ddp_static_graph: bool = flag(False, "DistributedDataParallel(static_graph=True)")
    no_set_device_rank: bool = flag(False, "keep --device as given instead of cuda:LOCAL_RANK (one GPU visible per "
                                    "process)")
    # Reporting
    report_to: str = flag("", "also log the metrics to tensorboard (LOGS/NAME/tensorboard), wandb (offline unless "
                          "WANDB_MODE says otherwise), both ('wandb,tensorboard') or all")
    wandb_notes: str = flag("", "notes of the wandb run")
    wandb_project_name: str = flag("open-clip", "wandb project")
    debug: bool = flag(False, "log at DEBUG level")
    copy_codebase: bool = flag(False, "copy the fastclip package into LOGS/NAME/code before training")
    log_every_n_steps: int | None = flag(None, "write a metrics line every N steps (default: 100, open_clip's; toy "
                                         "world 10)", type=positive_int)
    remote_sync: str | None = flag(None, "open_clip's background sync of the run to s3/fsspec (refused)")
    remote_sync_frequency: int = flag(300, "open_clip's remote sync period (refused with --remote-sync)")
    remote_sync_protocol: str = flag("s3", "open_clip's remote sync protocol (refused with --remote-sync)",
                                     choices=("s3", "fsspec"))
    delete_previous_checkpoint: bool = flag(False, "delete checkpoints/epoch_{N-1}.pt after writing epoch_N.pt")
    # Evaluation during training (fastclip.eval.hook)
    eval_suite: str | None = flag(None, "evaluation suite run every --eval-every epochs: paper, toyworld or a TOML "
                                  "suite file")


def flag_names(config_field: dataclasses.Field) -> list[str]:
    return ["--" + config_field.name.replace("_", "-"), *config_field.metadata.get("aliases", ())]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastclip-train",
        description="Train a CLIP model with open_clip's flags. With no data: fc-tiny-vit on the embedded toy world.",
        allow_abbrev=False,  # an abbreviation that works today would break when a flag is added
    )
    for config_field in dataclasses.fields(TrainConfig):
        settings = {key: value for key, value in config_field.metadata.items() if key != "aliases"}
        default = config_field.default
        if config_field.default_factory is not dataclasses.MISSING:
            default = config_field.default_factory()
        if "default" not in settings["help"] and default not in (None, "", {}):
            settings["help"] += " (default: %(default)s)"
        if isinstance(default, bool):
            settings["action"] = "store_true"
        elif "action" not in settings:
            settings.setdefault("type", str if default is None else type(default))
        parser.add_argument(*flag_names(config_field), dest=config_field.name, default=default, **settings)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """The flags as a TrainConfig, with the defaults that follow from the flags themselves filled in."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]  # `torchrun ... -m fastclip.train.cli -- --logs DIR` style launchers
    return apply_presets(TrainConfig(**vars(build_parser().parse_args(argv))))


def trains_toyworld(config: TrainConfig) -> bool:
    """No data given: the embedded toy world (open_clip would have nothing to train on)."""
    return config.dataset_type == "toyworld" or (
        config.dataset_type is None and not config.train_data and not config.val_data)


def open_clip_optimizer_defaults(model: str) -> dict:
    """open_clip_train.params.get_default_params: the CLIP paper's Adam settings, by model family."""
    if "vit" in model.lower():
        return {"lr": 5.0e-4, "beta1": 0.9, "beta2": 0.98, "eps": 1.0e-6}
    return {"lr": 5.0e-4, "beta1": 0.9, "beta2": 0.999, "eps": 1.0e-8}


def apply_presets(config: TrainConfig) -> TrainConfig:
    """Fill the unset defaults that depend on what is trained: open_clip's for data, the toy world's without."""
    toyworld = trains_toyworld(config)
    preset = TOYWORLD_PRESET if toyworld else OPEN_CLIP_PRESET
    changes: dict[str, Any] = {key: value for key, value in preset.items() if getattr(config, key) is None}
    if config.dataset_type is None and (config.train_data or toyworld):
        changes["dataset_type"] = "toyworld" if toyworld else "auto"  # open_clip's default whenever data is given
    model = changes.get("model", config.model)
    if not config.opt.startswith("timm/"):  # as open_clip: timm optimizers keep their own defaults
        for key, value in open_clip_optimizer_defaults(model).items():
            if getattr(config, key) is None and key not in changes:
                changes[key] = value
    if config.precision == "amp_bfloat16":
        changes["precision"] = "amp_bf16"  # open_clip's two spellings of the same thing
    if config.train_num_samples is None and toyworld:
        changes["train_num_samples"] = TOYWORLD_DEFAULT_NUM_SAMPLES
    if config.eval_every is None:
        changes["eval_every"] = 2 if config.eval_suite else 0  # open_clip's --zeroshot-frequency default
    if isinstance(config.force_image_size, list) and len(config.force_image_size) == 1:
        changes["force_image_size"] = config.force_image_size[0]  # as open_clip: one value is a square size
    return dataclasses.replace(config, **changes)


def resolve_defaults(config: TrainConfig, *, device_type: str) -> TrainConfig:
    """Every default filled, the device-dependent ones too, so params.json records what ran."""
    config = apply_presets(config)
    if config.precision is None:
        config = dataclasses.replace(config, precision="amp" if device_type == "cuda" else "fp32")
    if config.dataset_type == "toyworld":  # params.json records every knob of the world the run sees
        config = dataclasses.replace(config, **knobs_of_config(config).as_dict())
    return config
