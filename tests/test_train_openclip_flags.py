"""fastclip-train against open_clip_train's parser: every open_clip flag is implemented with open_clip's default, or
refused with its reason; README's flag table is the code's table. Also the pieces behind the flags that need no
training run: lr schedulers, the --accum-freq gradient, validation metrics, SLURM variables, checkpoint files."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from fastclip.train.config import build_parser, parse_args, resolve_defaults
from fastclip.train.openclip_flags import (
    CONFIG_FIELD,
    IMPLEMENTED,
    OPEN_CLIP_FLAGS,
    REFUSED,
    UnsupportedFlagError,
    check_supported,
    flag_name,
    markdown_table,
)

README = Path(__file__).resolve().parents[1] / "README.md"

# Where fastclip's default differs from open_clip's on purpose (the table's notes say how).
DEFAULT_DEVIATIONS = {
    "device": "cuda when available, else cpu: open_clip's 'cuda' falls back to cpu with a warning",
    "precision": "amp on CUDA as open_clip, fp32 on the CPU",
    "zeroshot_frequency": "2 as open_clip when an --eval-suite is given, else 0 (nothing to evaluate)",
}


def open_clip_parser_actions():
    """(dest, action) of every flag of open_clip_train's parser, in its order."""
    import argparse

    from open_clip_train import params

    captured = {}

    def capture(self, args=None, namespace=None):
        captured["parser"] = self
        return original(self, args, namespace)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        params.parse_args([])
    finally:
        argparse.ArgumentParser.parse_args = original
    return [(action.dest, action) for action in captured["parser"]._actions if action.dest != "help"]


def test_every_open_clip_flag_is_in_the_table_in_open_clips_order():
    dests = [dest for dest, _ in open_clip_parser_actions()]
    assert list(OPEN_CLIP_FLAGS) == dests, "open_clip_train's parser changed: add the new flags to openclip_flags"
    assert {support.status for support in OPEN_CLIP_FLAGS.values()} == {IMPLEMENTED, REFUSED}
    assert all(support.note for support in OPEN_CLIP_FLAGS.values())


def test_every_open_clip_flag_parses_under_its_own_name_with_its_choices():
    ours = {option: action for action in build_parser()._actions for option in action.option_strings}
    for dest, theirs in open_clip_parser_actions():
        for option in theirs.option_strings:
            assert option in ours, f"{option} is not a fastclip-train flag"
            mine = ours[option]
            assert mine.dest == CONFIG_FIELD.get(dest, dest)
            assert mine.nargs == theirs.nargs, option
            if theirs.choices is not None:
                assert set(theirs.choices) <= set(mine.choices), option


def test_implemented_flags_default_to_open_clips_defaults_when_training_on_data():
    from open_clip_train.params import parse_args as open_clip_parse_args

    for argv in (["--train-data", "x.csv"], ["--train-data", "x.tar", "--model", "ViT-B-16"]):
        ours, theirs = parse_args(argv), open_clip_parse_args(argv)
        for dest, support in OPEN_CLIP_FLAGS.items():
            if dest in DEFAULT_DEVIATIONS:
                continue
            assert getattr(ours, CONFIG_FIELD.get(dest, dest)) == getattr(theirs, dest), dest
    resolved = resolve_defaults(parse_args(["--train-data", "x.csv"]), device_type="cuda")
    assert resolved.precision == "amp"
    assert resolve_defaults(parse_args(["--train-data", "x.csv", "--eval-suite", "toyworld"]),
                            device_type="cpu").eval_every == 2


# A value other than open_clip's default for every refused flag.
REFUSED_VALUES = {
    "train_data_upsampling_factors": ["1::2"], "dataset_resampled": [], "imagenet_val": ["val/"],
    "imagenet_v2": ["v2/"], "cache_dir": ["cache"], "pretrained_image": [], "image_interpolation": ["bilinear"],
    "image_resize_mode": ["squash"], "aug_cfg": ["scale=(0.5,1)"], "torchscript": [], "trace": [], "horovod": [],
    "coca_caption_loss_weight": ["1"], "coca_contrastive_loss_weight": ["0"], "remote_sync": ["s3://b"],
    "remote_sync_frequency": ["60"], "remote_sync_protocol": ["fsspec"], "distill_model": ["ViT-L-14"],
    "distill_pretrained": ["openai"], "use_bnb_linear": ["SwitchBackLinearGlobal"],
}


def test_refused_flags_are_refused_with_their_reason_and_only_when_set():
    refused = {dest for dest, support in OPEN_CLIP_FLAGS.items() if support.status == REFUSED}
    assert refused == set(REFUSED_VALUES)
    check_supported(parse_args(["--train-data", "x.csv"]))  # open_clip's defaults are never refused
    for dest, values in REFUSED_VALUES.items():
        config = parse_args(["--train-data", "x.csv", flag_name(dest), *values])
        with pytest.raises(UnsupportedFlagError) as refusal:
            check_supported(config)
        assert str(refusal.value) == f"{flag_name(dest)}: not supported: {OPEN_CLIP_FLAGS[dest].note}"


@pytest.mark.parametrize("argv, reason", [
    (["--precision", "pure_bf16"], "--precision pure_bf16: fastclip keeps fp32 weights"),
    (["--opt", "sgd"], "--opt sgd: unknown optimizer"),
    (["--lr-scheduler", "const-cooldown"], "needs --epochs-cooldown"),
    (["--loss-dist-impl", "shift"], "needs --siglip"),
    (["--train-data", "pipe:curl x"], "remote sources are not supported"),
])
def test_refused_values_of_implemented_flags(argv, reason):
    with pytest.raises(UnsupportedFlagError, match=re.escape(reason)):
        check_supported(parse_args(argv))


def test_model_flags_refuse_what_needs_a_download_or_is_not_clip(tmp_path):
    from fastclip.train.model_setup import build_model

    def build(*argv):
        return build_model(resolve_defaults(parse_args(list(argv)), device_type="cpu"), torch.device("cpu"))

    with pytest.raises(UnsupportedFlagError, match="coca_ViT-B-32: CoCa models are not supported"):
        build("--model", "coca_ViT-B-32")
    with pytest.raises(UnsupportedFlagError, match="Hugging Face model 'roberta-base', which would need a download"):
        build("--model", "roberta-ViT-B-32")
    with pytest.raises(UnsupportedFlagError, match="laion2b_s34b_b79k: one of ViT-B-32's pretrained tags, which would "
                                                   "need a download"):
        build("--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k")
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        build("--pretrained", str(tmp_path / "missing.pt"))


def test_model_flags_build_what_open_clip_builds(tmp_path):
    from fastclip.models import load_model_from_checkpoint, save_checkpoint
    from fastclip.train.model_setup import build_model

    args = resolve_defaults(parse_args([
        "--force-image-size", "32", "--force-context-length", "16", "--force-quick-gelu", "--image-mean", "0.5",
        "0.5", "0.5", "--lock-image", "--lock-image-unlocked-groups", "1", "--lock-text",
        "--lock-text-unlocked-layers", "2", "--grad-checkpointing"]), device_type="cpu")
    bundle = build_model(args, torch.device("cpu"))
    model = bundle.model
    assert bundle.image_size == 32 and bundle.image_mean == (0.5, 0.5, 0.5)
    assert bundle.tokenizer(["a b"]).shape == (1, 16) and model.positional_embedding.shape[0] == 16
    assert bundle.model_cfg["vision_cfg"]["image_size"] == 32 and bundle.model_cfg["quick_gelu"]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "visual.conv1.weight" not in trainable and "visual.proj" in trainable  # last image group unlocked
    assert "token_embedding.weight" not in trainable and "text_projection" in trainable
    last = len(model.transformer.resblocks) - 1
    assert f"transformer.resblocks.{last}.attn.in_proj_weight" in trainable
    assert "transformer.resblocks.0.ln_1.weight" in trainable  # locked layers keep trainable LayerNorms
    assert model.transformer.grad_checkpointing
    # a checkpoint of the forced model rebuilds it (fastclip-eval's path) and serves as --pretrained
    path = tmp_path / "epoch_1.pt"
    save_checkpoint(path, model=model, optimizer=None, epoch=1, name="x", model_name=args.model,
                    model_cfg=bundle.model_cfg, samples_seen=0)
    rebuilt, _ = load_model_from_checkpoint(path)
    assert rebuilt.image_size == 32
    frozen_ln = build_model(resolve_defaults(parse_args(["--lock-text", "--lock-text-freeze-layer-norm"]),
                                             device_type="cpu"), torch.device("cpu")).model
    assert not frozen_ln.transformer.resblocks[0].ln_1.weight.requires_grad
    warm = build_model(resolve_defaults(parse_args(["--force-image-size", "32", "--force-context-length", "16",
                                                    "--force-quick-gelu", "--pretrained", str(path)]),
                                        device_type="cpu"), torch.device("cpu")).model
    assert torch.equal(warm.visual.conv1.weight, model.visual.conv1.weight)


def test_readme_flag_table_is_the_codes_table():
    text = README.read_text()
    assert markdown_table() in text, "README's open_clip flag table is stale: paste fastclip.train.openclip_flags." \
                                     "markdown_table() into it"
    for dest in OPEN_CLIP_FLAGS:
        assert f"| `{flag_name(dest)}` |" in text


def test_learning_rate_schedulers_match_open_clip():
    from open_clip_train.scheduler import const_lr, const_lr_cooldown, cosine_lr

    from fastclip.train.schedule import schedule_from_args

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    references = {
        "cosine": cosine_lr(optimizer, 1e-3, 5, 40),
        "const": const_lr(optimizer, 1e-3, 5, 40),
        "const-cooldown": const_lr_cooldown(optimizer, 1e-3, 5, 40, 10, 2.0, 1e-5),
    }
    for scheduler, reference in references.items():
        args = parse_args(["--lr", "1e-3", "--warmup", "5", "--epochs", "4", "--lr-scheduler", scheduler,
                           "--epochs-cooldown", "1", "--lr-cooldown-power", "2", "--lr-cooldown-end", "1e-5"])
        schedule = resolve_defaults(args, device_type="cpu")
        schedule = schedule_from_args(schedule, samples_per_step=64, steps_per_epoch=10)
        for step in range(40):  # the schedule's clock is samples seen: step x 64 samples per step
            assert schedule(64 * step) == pytest.approx(reference(step), rel=1e-12, abs=1e-15), (scheduler, step)
    skipped = resolve_defaults(parse_args(["--lr", "2e-3", "--skip-scheduler"]), device_type="cpu")
    skipped = schedule_from_args(skipped, samples_per_step=64, steps_per_epoch=10)
    assert {skipped(64 * step) for step in range(50)} == {2e-3}


class TinyClip(torch.nn.Module):
    """CLIP's interface in a few parameters: normalised linear image and text features, a learned scale."""

    def __init__(self):
        super().__init__()
        self.image = torch.nn.Linear(12, 6)
        self.text = torch.nn.Embedding(20, 6)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, images, texts):
        image_features = torch.nn.functional.normalize(self.image(images), dim=-1)
        text_features = torch.nn.functional.normalize(self.text(texts).mean(1), dim=-1)
        return image_features, text_features, self.logit_scale.exp()


def test_accum_freq_gives_the_gradient_of_the_whole_effective_batch():
    """open_clip's feature cache: k micro-batches, each re-encoded with gradients against the cached rest, sum to
    the towers' gradient of one batch of k x B (to rounding)."""
    from fastclip.data.loader import Batch
    from fastclip.nn import FusedClipLoss
    from fastclip.train.step import forward_backward

    torch.manual_seed(0)
    model = TinyClip().double()
    images, texts = torch.randn(12, 12, dtype=torch.float64), torch.randint(0, 20, (12, 5))
    loss_fn = FusedClipLoss()

    def gradients(micro_batches):
        model.zero_grad()
        out = forward_backward(model, loss_fn, micro_batches, precision="fp32", device="cpu", scaler=None)
        return out.loss, [p.grad.clone() for p in model.parameters()]

    whole_loss, whole = gradients([Batch(images, texts, keys=torch.arange(12))])
    split_loss, split = gradients([Batch(images[i:i + 4], texts[i:i + 4], keys=torch.arange(4)) for i in (0, 4, 8)])
    assert split_loss.item() == pytest.approx(whole_loss.item(), rel=1e-12)
    names = [name for name, _ in model.named_parameters()]
    for name, a, b in zip(names, split, whole):
        # the logit scale is not cached, so every pass adds its whole gradient: 3x, exactly as open_clip does
        expected = 3 * b if name == "logit_scale" else b
        torch.testing.assert_close(a, expected, rtol=1e-10, atol=1e-12, msg=name)


def test_validation_metrics_are_open_clips():
    from open_clip_train.train import get_clip_metrics

    from fastclip.train.validation import clip_retrieval_metrics

    torch.manual_seed(1)
    for count in (7, 10):  # odd and even: open_clip floors numpy's median
        images = torch.nn.functional.normalize(torch.randn(count, 8), dim=-1)
        texts = torch.nn.functional.normalize(images + 0.8 * torch.randn(count, 8), dim=-1)
        ours = clip_retrieval_metrics(images, texts, torch.tensor(20.0))
        theirs = get_clip_metrics(images, texts, torch.tensor(20.0))
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(float(value), rel=1e-12), key


def test_slurm_variables_are_read_as_open_clip_reads_them(monkeypatch):
    from open_clip_train.distributed import is_using_distributed
    from open_clip_train.distributed import world_info_from_env as open_clip_world_info

    from fastclip.train.distributed import launched_distributed, world_info_from_env

    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID",
                 "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert world_info_from_env() == open_clip_world_info() == (1, 5, 8)
    assert launched_distributed() and is_using_distributed()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun's variable wins, as in open_clip
    assert not launched_distributed() and not is_using_distributed()


def test_checkpoint_flags_write_latest_and_delete_the_previous(tmp_path):
    from fastclip.train.checkpoints import Checkpointer
    from fastclip.train.distributed import World
    from fastclip.train.state import Progress

    class NoData:
        def position(self):
            return None

    model = TinyClip()
    world = World(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))

    def write_epochs(folder, args):
        folder.mkdir()
        checkpoints = Checkpointer(folder, args=args, model_cfg={}, model=model, optimizer=None, scaler=None,
                                   world=world, schedule_units={"samples_per_step": 1, "steps_per_epoch": 1})
        for epoch in (1, 2, 3):
            checkpoints.after_epoch(Progress(step=epoch, samples_seen=epoch, epoch=epoch), NoData())

    args = parse_args(["--epochs", "4", "--save-frequency", "1", "--save-most-recent", "--delete-previous-checkpoint",
                       "--name", "x", "--model", "tiny"])
    write_epochs(tmp_path / "every", args)
    assert sorted(p.name for p in (tmp_path / "every").iterdir()) == ["epoch_3.pt", "epoch_latest.pt"]
    assert torch.load(tmp_path / "every" / "epoch_latest.pt", weights_only=True)["epoch"] == 3
    sparse = parse_args(["--epochs", "4", "--save-frequency", "2", "--delete-previous-checkpoint"])
    write_epochs(tmp_path / "sparse", sparse)
    assert [p.name for p in (tmp_path / "sparse").iterdir()] == ["epoch_2.pt"]  # never left without one


def test_reporting_targets(tmp_path):
    from fastclip.train.reporting import Reporter, ReportingError, report_targets

    assert report_targets("") == set() and report_targets("wandb,tensorboard") == report_targets("all")
    with pytest.raises(ReportingError, match="unknown target"):
        report_targets("mlflow")
    args = resolve_defaults(parse_args(["--report-to", "tensorboard", "--name", "r"]), device_type="cpu")
    reporter = Reporter(args, tmp_path)
    reporter.train_step({"step": 3, "loss": 1.5, "lr": 1e-3, "logit_scale": 14.0, "images_per_s": 9.0})
    reporter.validation({"clip_val_loss": 0.5, "epoch": 1}, step=3)
    reporter.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/scale", "val/clip_val_loss"} <= set(events.Tags()["scalars"])
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(3, 1.5)]
    assert [(e.step, e.value) for e in events.Scalars("val/clip_val_loss")] == [(1, 0.5)]

