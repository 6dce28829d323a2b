"""fastclip-train's flags, schedule, optimizer groups, logit_scale clamp and loss factory (no training here)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from fastclip.data.loader import DATASET_TYPES
from fastclip.train.cli import default_run_name
from fastclip.train.config import TOYWORLD_DEFAULT_NUM_SAMPLES, TrainConfig, parse_args, resolve_defaults
from fastclip.train.distributed import World
from fastclip.train.loop import MAX_LOGIT_SCALE, clamp_logit_scale
from fastclip.train.loss import create_loss
from fastclip.train.optim import create_optimizer, no_weight_decay, parameter_groups
from fastclip.train.schedule import assign_lr, cosine_lr

CPU_WORLD = World(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def test_no_flags_train_the_tiny_model_on_the_toy_world():
    config = parse_args([])
    assert (config.model, config.dataset_type, config.logs, config.name, config.resume) == (
        "fc-tiny-vit", "toyworld", "./logs/", None, None)
    assert (config.epochs, config.lr, config.warmup, config.log_every_n_steps) == (5, 1e-3, 50, 10)
    resolved = resolve_defaults(config, device_type="cpu")
    assert resolved.precision == "fp32" and resolved.train_num_samples == TOYWORLD_DEFAULT_NUM_SAMPLES
    assert resolve_defaults(config, device_type="cuda").precision == "amp"
    csv = resolve_defaults(parse_args(["--dataset-type", "csv"]), device_type="cpu")
    assert csv.train_num_samples is None  # every row of the CSV


def test_train_data_means_open_clips_auto_type_and_defaults():
    """As open_clip: --dataset-type auto whenever --train-data is given, and open_clip's defaults for the rest."""
    from open_clip_train.params import parse_args as open_clip_parse_args

    for argv in (["--train-data", "x.csv"], ["--train-data", "x.csv", "--model", "ViT-B-32"]):
        ours, theirs = parse_args(argv), open_clip_parse_args(argv)
        for name in ("dataset_type", "model", "epochs", "lr", "beta1", "beta2", "eps", "wd", "warmup", "workers",
                     "batch_size", "log_every_n_steps", "save_frequency", "seed", "lr_scheduler"):
            assert getattr(ours, name) == getattr(theirs, name), name
        assert resolve_defaults(ours, device_type="cuda").precision == theirs.precision == "amp"
    assert parse_args(["--train-data", "x.csv", "--dataset-type", "csv"]).dataset_type == "csv"
    assert parse_args(["--val-data", "v.csv"]).dataset_type is None  # open_clip's evaluation-only run


def test_open_clip_flags_parse_with_their_meanings():
    config = parse_args([
        "--model", "ViT-B-32", "--train-data", "pairs.csv", "--dataset-type", "csv", "--train-num-samples", "1000",
        "--batch-size", "32", "--epochs", "3", "--lr", "5e-4", "--wd", "0.1", "--warmup", "7", "--precision",
        "amp_bf16", "--workers", "0", "--seed", "3", "--logs", "runs", "--name", "x", "--save-frequency", "2",
        "--resume", "latest", "--grad-clip-norm", "1.5", "--local-loss", "--gather-with-grad", "--device", "cpu",
        "--csv-img-key", "img", "--csv-caption-key", "cap", "--csv-separator", ",", "--log-every-n-steps", "4",
        "--beta1", "0.8", "--beta2", "0.9", "--eps", "1e-8", "--dist-backend", "gloo", "--accum-freq", "2",
        "--zeroshot-frequency", "3", "--aug-cfg", "scale=(0.5,1.0)", "color_jitter=x", "--force-image-size", "96",
        "--image-mean", "0.1", "0.2", "0.3",
    ])
    assert config == TrainConfig(
        model="ViT-B-32", train_data="pairs.csv", dataset_type="csv", train_num_samples=1000, batch_size=32,
        epochs=3, lr=5e-4, wd=0.1, warmup=7, precision="amp_bf16", workers=0, seed=3, logs="runs", name="x",
        save_frequency=2, resume="latest", grad_clip_norm=1.5, local_loss=True, gather_with_grad=True,
        device="cpu", csv_img_key="img", csv_caption_key="cap", csv_separator=",", log_every_n_steps=4,
        beta1=0.8, beta2=0.9, eps=1e-8, dist_backend="gloo", accum_freq=2, eval_every=3,
        aug_cfg={"scale": (0.5, 1.0), "color_jitter": "x"}, force_image_size=96, image_mean=[0.1, 0.2, 0.3],
    )
    assert parse_args(["--precision", "amp_bfloat16"]).precision == "amp_bf16"  # open_clip's other spelling


def test_dataset_type_choices_come_from_the_loader_registry(capsys):
    assert DATASET_TYPES[:2] == ("toyworld", "csv")
    with pytest.raises(SystemExit):
        parse_args(["--dataset-type", "parquet"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--batch-size", "0"], ["--epochs", "-1"], ["--precision", "fp8"], ["--lr", "x"],
                                 ["--log", "x"]])  # --log: no abbreviations, they would break as flags are added
def test_bad_flags_are_refused(bad, capsys):
    with pytest.raises(SystemExit):
        parse_args(bad)
    assert "fastclip-train: error" in capsys.readouterr().err


def test_torchrun_forms_of_logs():
    # torchrun swallows `--logs` (a prefix of its --logs-specs): `-- --logs DIR` and `--logs-dir DIR` get through.
    assert parse_args(["--", "--logs", "a"]).logs == "a"
    assert parse_args(["--logs-dir", "b"]).logs == "b"
    assert parse_args(["--csv-separator", "\\t"]).csv_separator == "\t"


def test_default_run_name_is_open_clips():
    config = resolve_defaults(parse_args(["--model", "hf-hub:org/m"]), device_type="cpu")
    name = default_run_name(config)
    date, rest = name[:19], name[20:]
    assert len(date.split("-")) == 2 and rest == "model_hf-hub:org-m-lr_0.001-b_64-j_2-p_fp32"


def test_cosine_schedule_matches_open_clip():
    from open_clip_train.scheduler import cosine_lr as open_clip_cosine_lr

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    adjust = open_clip_cosine_lr(optimizer, 1e-3, 10, 100)
    for step in [0, 1, 5, 9, 10, 11, 50, 99]:
        assert cosine_lr(step, base_lr=1e-3, warmup_steps=10, total_steps=100) == pytest.approx(adjust(step), rel=1e-12)
    assert cosine_lr(0, base_lr=1.0, warmup_steps=4, total_steps=100) == 0.25
    assert cosine_lr(3, base_lr=1.0, warmup_steps=4, total_steps=100) == 1.0
    assert cosine_lr(52, base_lr=1.0, warmup_steps=4, total_steps=100) == pytest.approx(0.5)
    assert cosine_lr(100, base_lr=1.0, warmup_steps=4, total_steps=100) == pytest.approx(0.0, abs=1e-12)
    # open_clip divides by zero when the warmup covers the whole run; here it stays finite
    assert math.isfinite(cosine_lr(8, base_lr=1.0, warmup_steps=8, total_steps=8))
    assign_lr(optimizer, 0.125)
    assert optimizer.param_groups[0]["lr"] == 0.125


def test_logit_scale_is_clamped_to_zero_and_ln_100():
    model = torch.nn.Module()
    model.logit_scale = torch.nn.Parameter(torch.tensor(7.0))
    clamp_logit_scale(model)
    assert model.logit_scale.item() == pytest.approx(math.log(100)) and MAX_LOGIT_SCALE == math.log(100)
    model.logit_scale.data.fill_(-0.5)
    clamp_logit_scale(model)
    assert model.logit_scale.item() == 0.0
    model.logit_scale.data.fill_(2.0)
    clamp_logit_scale(model)
    assert model.logit_scale.item() == 2.0


@pytest.fixture(scope="module")
def tiny_model():
    from fastclip.models import create_model

    return create_model("fc-tiny-vit").model


def test_parameter_groups_follow_open_clip(tiny_model):
    groups = parameter_groups(tiny_model, 0.2)
    assert [g["weight_decay"] for g in groups] == [0.0, 0.2]
    decayed = {id(p) for p in groups[1]["params"]}
    exempt = {id(p) for p in groups[0]["params"]}
    named = dict(tiny_model.named_parameters())
    assert decayed.isdisjoint(exempt) and len(decayed | exempt) == len(named)
    for name, param in named.items():
        expected_exempt = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        assert (id(param) in exempt) == expected_exempt == no_weight_decay(name, param), name
    assert id(named["logit_scale"]) in exempt and id(named["token_embedding.weight"]) in decayed
    assert id(named["visual.class_embedding"]) in exempt


def test_optimizer_is_fused_adamw_with_the_flags(tiny_model):
    args = parse_args(["--lr", "2e-3", "--wd", "0.05", "--beta1", "0.8", "--beta2", "0.95", "--eps", "1e-7"])
    optimizer = create_optimizer(tiny_model, args, torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]
    assert optimizer.defaults["betas"] == (0.8, 0.95) and optimizer.defaults["eps"] == 1e-7
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 0.05]


def test_create_loss_is_open_clips_clip_loss():
    from fastclip.nn import FusedClipLoss  # open_clip's ClipLoss semantics without the batch x batch logits

    args = parse_args(["--local-loss", "--gather-with-grad"])
    world = dataclasses.replace(CPU_WORLD, rank=1, world_size=4)
    loss = create_loss(args, world)
    assert isinstance(loss, FusedClipLoss)
    assert (loss.local_loss, loss.gather_with_grad, loss.cache_labels, loss.rank, loss.world_size) == (
        True, True, True, 1, 4)
    single = create_loss(parse_args([]), CPU_WORLD)
    torch.manual_seed(0)
    images, texts = torch.nn.functional.normalize(torch.randn(2, 6, 8), dim=-1)
    logits = 10.0 * images @ texts.T
    expected = (torch.nn.functional.cross_entropy(logits, torch.arange(6))
                + torch.nn.functional.cross_entropy(logits.T, torch.arange(6))) / 2
    assert single(images, texts, torch.tensor(10.0)).item() == pytest.approx(expected.item(), rel=1e-6)
