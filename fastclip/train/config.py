"""fastclip-train's flags: open_clip's names and meanings, with defaults for a CPU-sized toy-world run.

Every flag is one `TrainConfig` field; its argparse settings live in the field's metadata, so adding a flag is
adding a field (the parser, params.json and the tests all follow). With no flags, fastclip-train trains
fc-tiny-vit on the embedded toy world, which takes a few minutes on 2 CPU cores and learns the 16 categories.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from fastclip.data.loader import DATASET_TYPES
from fastclip.models import DEFAULT_MODEL, PRECISIONS

# One toy-world epoch when --train-num-samples is not given: 128 steps of the default batch.
TOYWORLD_DEFAULT_NUM_SAMPLES = 8192


def flag(default: Any, help: str, **argparse_settings: Any):
    """A TrainConfig field that is also a command-line flag (`--field-name`)."""
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


@dataclass
class TrainConfig:
    # Model
    model: str = flag(DEFAULT_MODEL, "open_clip model config name, or fastclip's fc-tiny-vit / fc-small-vit "
                      "(weights start random; nothing is downloaded)")
    # Data
    dataset_type: str = flag("toyworld", "where the training pairs come from", choices=DATASET_TYPES)
    train_data: str | None = flag(None, "training data: for csv, the CSV file; for webdataset, tar shards as "
                                  "img2dataset writes them ('shards/{00000..00009}.tar', sources joined with '::'); "
                                  "for folder, a folder with one subfolder per class (unused by toyworld)")
    train_num_samples: int | None = flag(
        None, f"images in one epoch (an epoch is a sample budget); default {TOYWORLD_DEFAULT_NUM_SAMPLES} for toyworld, "
        "every row for csv", type=positive_int)
    csv_separator: str = flag("\t", "column separator of the CSV (default: a tab)", type=separator)
    csv_img_key: str = flag("filepath", "CSV column holding image paths (relative to the CSV's folder)")
    csv_caption_key: str = flag("title", "CSV column holding captions")
    workers: int = flag(2, "data-loading worker processes per rank (csv, webdataset, folder; with DALI they read "
                        "and tokenise, and DALI decodes with as many threads)", type=non_negative_int)
    data_backend: str = flag("auto", "image decoding for webdataset and folder: dali, torch (PIL in the workers), "
                             "or auto (DALI on CUDA; on the CPU the faster of the two in benchmarks/bench_data.py)",
                             choices=("auto", "dali", "torch"))
    hw_decoder_load: float = flag(0.65, "share of JPEG decoding DALI gives the GPU's hardware decoder (A100, H100, "
                                  "H200; the rest runs on CUDA cores)")
    # Optimisation
    batch_size: int = flag(64, "batch size per rank", type=positive_int)
    epochs: int = flag(5, "number of epochs to train for", type=positive_int)
    lr: float = flag(1e-3, "peak learning rate")
    beta1: float = flag(0.9, "AdamW beta 1")
    beta2: float = flag(0.98, "AdamW beta 2")
    eps: float = flag(1e-6, "AdamW epsilon")
    wd: float = flag(0.2, "weight decay (not applied to gains, biases, embeddings of dim < 2 and logit_scale)")
    warmup: int = flag(50, "linear warmup steps before the cosine decay", type=non_negative_int)
    grad_clip_norm: float | None = flag(None, "clip the gradient norm to this value", type=float)
    precision: str | None = flag(None, "floating-point precision (default: amp on CUDA, fp32 on CPU); amp is fp16 "
                                 "with a GradScaler on CUDA and bf16 on CPU", choices=PRECISIONS)
    local_loss: bool = flag(False, "each rank scores only its own features against all gathered ones (less memory "
                            "and compute; with --gather-with-grad the gradients equal the global loss's)")
    gather_with_grad: bool = flag(False, "all-gather features with their gradients (the gradient flows back to the "
                                  "rank that computed each feature)")
    loss: str = flag("auto", "contrastive loss implementation (fastclip.nn; open_clip's semantics in every case): "
                     "auto (the fused Triton kernel on CUDA, the chunked O(batch) memory one on the CPU), fused "
                     "(Triton), or reference (open_clip's batch x batch logits)", choices=("auto", "fused", "reference"))
    siglip: bool = flag(False, "train with the SigLIP sigmoid loss instead of CLIP's softmax loss, as open_clip's "
                        "--siglip: logit_scale starts at log 10 and a learnable logit_bias at -10")
    seed: int = flag(0, "seed of model initialisation and data order (augmentation uses seed + rank)")
    # Devices
    device: str | None = flag(None, "cuda, cpu or cuda:N (default: cuda when available); under torchrun each "
                              "rank uses cuda:LOCAL_RANK")
    dist_backend: str | None = flag(None, "torch.distributed backend (default: nccl on CUDA, gloo on CPU)")
    # Logs and checkpoints
    logs: str = flag("./logs", "folder holding the runs; a run writes LOGS/NAME/{out.log,params.json,metrics.jsonl,"
                     "checkpoints/}. Under torchrun write it after `--` or as --logs-dir (torchrun takes --logs "
                     "for its own --logs-specs)", aliases=("--logs-dir",))
    name: str | None = flag(None, "run name (default: a timestamp with the model, lr, batch size, workers and "
                            "precision, as open_clip)")
    log_every_n_steps: int = flag(10, "write a metrics line every N steps", type=positive_int)
    save_frequency: int = flag(1, "write LOGS/NAME/checkpoints/epoch_N.pt every N epochs (and after the last); "
                               "0 saves only the last", type=non_negative_int)
    # Mid-epoch checkpoints (fastclip.train.checkpoints; open_clip_train has no equivalent flag)
    save_every_n_steps: int = flag(0, "also write LOGS/NAME/checkpoints/epoch_E_step_S.pt every N optimizer steps "
                                   "(E epochs done, S steps done), keeping only the newest; --resume latest continues "
                                   "from it exactly, in the middle of an epoch (0: never)", type=non_negative_int)
    resume: str | None = flag(None, "`latest` (the newest readable checkpoint of LOGS/NAME) or a checkpoint path")
    # Evaluation during training (fastclip.eval.hook)
    eval_every: int = flag(0, "run the --eval-suite in-process every N epochs, results in LOGS/NAME/eval (0: never)",
                           type=non_negative_int)
    eval_suite: str | None = flag(None, "evaluation suite for --eval-every: paper, toyworld or a TOML suite file")


def flag_names(config_field: dataclasses.Field) -> list[str]:
    return ["--" + config_field.name.replace("_", "-"), *config_field.metadata.get("aliases", ())]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastclip-train",
        description="Train a CLIP model (open_clip flags). With no flags: fc-tiny-vit on the embedded toy world.",
        allow_abbrev=False,  # an abbreviation that works today would break when a flag is added
    )
    for config_field in dataclasses.fields(TrainConfig):
        settings = {key: value for key, value in config_field.metadata.items() if key != "aliases"}
        if "default" not in settings["help"] and config_field.default is not None:
            settings["help"] += " (default: %(default)s)"
        if isinstance(config_field.default, bool):
            settings["action"] = "store_true"
        else:
            settings.setdefault("type", str if config_field.default is None else type(config_field.default))
        parser.add_argument(*flag_names(config_field), dest=config_field.name, default=config_field.default, **settings)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]  # `torchrun ... -m fastclip.train.cli -- --logs DIR` style launchers
    return TrainConfig(**vars(build_parser().parse_args(argv)))


def resolve_defaults(config: TrainConfig, *, device_type: str) -> TrainConfig:
    """Fill the defaults that depend on the data source or the device, so params.json records what ran."""
    changes: dict[str, Any] = {}
    if config.precision is None:
        changes["precision"] = "amp" if device_type == "cuda" else "fp32"
    if config.train_num_samples is None and config.dataset_type == "toyworld":
        changes["train_num_samples"] = TOYWORLD_DEFAULT_NUM_SAMPLES
    return dataclasses.replace(config, **changes)
