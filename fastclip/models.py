"""open_clip model factory, fastclip's small model configs, and checkpoint read/write.

fastclip's checkpoints use open_clip's layout (LOGS/NAME/checkpoints/epoch_N.pt with the keys epoch, name,
state_dict, optimizer and, with amp, scaler) and add `model_name`, `model_cfg` and `samples_seen`, so that
fastclip-eval rebuilds the model with no flags. They are written atomically and read with weights_only=True.
Nothing here downloads weights: `pretrained` must be a local file.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastclip.io import atomic_torch_save

FASTCLIP_CONFIG_DIR = Path(__file__).parent / "model_configs"
DEFAULT_MODEL = "fc-tiny-vit"
PRECISIONS = ("fp32", "amp", "amp_bf16")
CHECKPOINT_NAME = re.compile(r"^epoch_(\d+)\.pt$")
# Written every --save-every-n-steps steps: E epochs completed, S optimizer steps done (in natural order, after
# epoch_E.pt and before epoch_{E+1}.pt, as open_clip's `--resume latest` sorts them).
STEP_CHECKPOINT_NAME = re.compile(r"^epoch_(\d+)_step_(\d+)\.pt$")
LATEST_CHECKPOINT_NAME = "epoch_latest.pt"  # open_clip's --save-most-recent


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


_configs_registered = False


class _NoPretrainedNotice(logging.Filter):
    """open_clip warns on the root logger whenever it builds a model without downloaded weights; fastclip never
    downloads weights (it loads local checkpoints itself), so the warning is noise on every model it builds."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


logging.getLogger().addFilter(_NoPretrainedNotice())


def register_fastclip_configs() -> None:
    """Make fastclip's small configs (fc-tiny-vit, fc-small-vit) known to open_clip by name."""
    global _configs_registered
    if not _configs_registered:
        import open_clip

        open_clip.add_model_config(FASTCLIP_CONFIG_DIR)
        _configs_registered = True


def list_models() -> list[str]:
    register_fastclip_configs()
    import open_clip

    return open_clip.list_models()


def model_config(model_name: str) -> dict:
    register_fastclip_configs()
    import open_clip

    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ValueError(
            f"unknown model {model_name!r}; choose one of open_clip's configs or fastclip's "
            f"({', '.join(sorted(p.stem for p in FASTCLIP_CONFIG_DIR.glob('*.json')))}); `python -c \"import "
            "fastclip.models as m; print(m.list_models())\"` lists them all"
        )
    return config


@contextlib.contextmanager
def _registered_config(model_name: str, config: dict | None):
    """Teach open_clip a config stored in a checkpoint (a model it may not ship, or one built with --force-*
    overrides) while the model and its tokenizer are built; open_clip's own config for the name comes back after,
    so one checkpoint does not change every later model of that name in the process."""
    if config is None:
        yield
        return
    register_fastclip_configs()
    from open_clip import factory

    missing = object()
    previous = factory._MODEL_CONFIGS.get(model_name, missing)
    factory._MODEL_CONFIGS[model_name] = config
    try:
        yield
    finally:
        if previous is missing:
            factory._MODEL_CONFIGS.pop(model_name, None)
        else:
            factory._MODEL_CONFIGS[model_name] = previous


@dataclass
class ModelBundle:
    """A model with what is needed to feed it."""

    model: torch.nn.Module
    model_name: str
    model_cfg: dict
    tokenizer: Any
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]


def create_model(
    model_name: str = DEFAULT_MODEL,
    *,
    device: str | torch.device = "cpu",
    pretrained: str | None = None,
    model_cfg: dict | None = None,
    **model_kwargs,
) -> ModelBundle:
    """Build an open_clip model (fp32 weights; mixed precision is applied by autocast at run time).

    Args:
        model_name: any open_clip config name or fastclip's fc-tiny-vit / fc-small-vit.
        pretrained: optional local checkpoint file to load (open_clip or fastclip layout); never a download tag.
        model_cfg: a config to register under model_name first (used when rebuilding from a checkpoint).
        model_kwargs: passed to open_clip.create_model, e.g. init_logit_scale / init_logit_bias for SigLIP.
    """
    import open_clip

    with _registered_config(model_name, model_cfg):
        config = model_config(model_name)
        model = open_clip.create_model(model_name, pretrained=None, device=device, pretrained_text=False,
                                       **model_kwargs)
        tokenizer = open_clip.get_tokenizer(model_name)
    if pretrained is not None:
        state = load_checkpoint(pretrained)
        load_state_dict_into(model, state["state_dict"], source=pretrained)
    vision = model.visual
    image_size = vision.image_size[0] if isinstance(vision.image_size, (tuple, list)) else int(vision.image_size)
    return ModelBundle(
        model=model,
        model_name=model_name,
        model_cfg=config,
        tokenizer=tokenizer,
        image_size=image_size,
        image_mean=tuple(getattr(vision, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN),
        image_std=tuple(getattr(vision, "image_std", None) or open_clip.OPENAI_DATASET_STD),
    )


def autocast(precision: str, device: torch.device | str):
    """The autocast context for open_clip's --precision values (fp32: none)."""
    device_type = torch.device(device).type
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "amp":
        dtype = torch.float16 if device_type == "cuda" else torch.bfloat16  # CPU autocast supports bf16 only
        return torch.autocast(device_type=device_type, dtype=dtype)
    if precision == "amp_bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")


def strip_module_prefix(state_dict: dict) -> dict:
    """DDP checkpoints prefix every key with `module.`; open_clip strips it on resume, so do we."""
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return {key[len("module."):]: value for key, value in state_dict.items()}
    return state_dict


def load_state_dict_into(model: torch.nn.Module, state_dict: dict, *, source: str | Path) -> None:
    state_dict = strip_module_prefix(state_dict)
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{source}: its weights do not fit this model: {len(result.missing_keys)} missing "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected (e.g. "
            f"{result.unexpected_keys[:3]}); pass the right --model"
        )


def save_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    name: str,
    model_name: str,
    model_cfg: dict,
    samples_seen: int,
    scaler: torch.amp.GradScaler | None = None,
    toyworld: dict | None = None,
    extra: dict | None = None,
) -> None:
    """Write an open_clip-layout checkpoint (plus model_name, model_cfg, samples_seen, for a toy-world run the
    `toyworld` knobs it trained on, and `extra`'s keys, e.g. the train_state of fastclip.train.state) atomically."""
    state = {
        "epoch": int(epoch),
        "name": name,
        "state_dict": model.state_dict(),
        "model_name": model_name,
        "model_cfg": model_cfg,
        "samples_seen": int(samples_seen),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if toyworld is not None:
        state["toyworld"] = dict(toyworld)
    state.update(extra or {})
    atomic_torch_save(state, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint safely (weights_only=True) and normalise it to {'state_dict': ..., 'epoch': ...?, ...}.

    Accepts fastclip's and open_clip's epoch_N.pt and bare state_dicts. A truncated, empty or foreign file raises
    CheckpointError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted write?)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "the file may be truncated or not a checkpoint"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint dict or a state_dict")
    if "state_dict" in state:
        if not isinstance(state["state_dict"], dict):
            raise CheckpointError(f"{path}: 'state_dict' is a {type(state['state_dict']).__name__}, not a dict")
        return state
    if state and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        return {"state_dict": state}  # a bare state_dict
    raise CheckpointError(
        f"{path}: not a CLIP checkpoint: expected open_clip's keys (epoch, state_dict, ...) or a bare state_dict, "
        f"found keys {sorted(map(str, state))[:8]}"
    )


def load_model_from_checkpoint(
    path: str | Path, *, model_name: str | None = None, device: str | torch.device = "cpu"
) -> tuple[ModelBundle, dict]:
    """Rebuild the model a checkpoint holds. fastclip checkpoints name their model; others need `model_name`.

    Returns the bundle (model in eval mode) and the checkpoint's metadata (epoch, samples_seen, name, model_name).
    """
    state = load_checkpoint(path)
    stored_name = state.get("model_name")
    name = model_name or stored_name
    if name is None:
        raise CheckpointError(
            f"{path}: the checkpoint does not say which model it holds (open_clip checkpoints and bare "
            "state_dicts do not); pass --model NAME"
        )
    stored_cfg = state.get("model_cfg") if name == stored_name else None
    state_dict = strip_module_prefix(state["state_dict"])
    # SigLIP-trained models carry a logit_bias parameter, which open_clip creates only when given an initial value.
    extra = {"init_logit_bias": 0.0} if "logit_bias" in state_dict else {}
    bundle = create_model(name, device="cpu", model_cfg=stored_cfg, **extra)
    load_state_dict_into(bundle.model, state_dict, source=path)
    bundle.model.to(device).eval()
    meta = {key: state[key] for key in ("epoch", "name", "samples_seen") if key in state}
    meta["model_name"] = name
    return bundle, meta


def checkpoint_epoch(path: str | Path) -> int | None:
    match = CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def find_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every epoch_N.pt in `folder`, sorted by epoch (natural order, as open_clip)."""
    folder = Path(folder)
    found = [(checkpoint_epoch(p), p) for p in folder.glob("epoch_*.pt")]
    return sorted((epoch, path) for epoch, path in found if epoch is not None)


def step_checkpoint_name(epochs_done: int, step: int) -> str:
    return f"epoch_{epochs_done}_step_{step}.pt"


def find_step_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every epoch_E_step_S.pt in `folder`, sorted by step."""
    found = []
    for path in Path(folder).glob("epoch_*_step_*.pt"):
        match = STEP_CHECKPOINT_NAME.match(path.name)
        if match:
            found.append((int(match.group(2)), path))
    return sorted(found)


def _training_position(path: Path) -> tuple[int, int]:
    """(epochs completed, steps done) of a checkpoint, from its name where the name says it."""
    step_match = STEP_CHECKPOINT_NAME.match(path.name)
    if step_match:
        return int(step_match.group(1)), int(step_match.group(2))
    epoch = checkpoint_epoch(path)
    if epoch is not None:
        return epoch, -1  # at the end of its epoch: before any step checkpoint written after it
    state = load_checkpoint(path)  # epoch_latest.pt names nothing
    return int(state.get("epoch", 0)), int(state.get("train_state", {}).get("step", -1))


def resumable_checkpoints(folder: str | Path) -> list[Path]:
    """epoch_N.pt, epoch_E_step_S.pt and epoch_latest.pt of `folder`, oldest first (by epochs then steps done)."""
    folder = Path(folder)
    paths = [path for _, path in find_checkpoints(folder)] + [path for _, path in find_step_checkpoints(folder)]
    keyed = [(_training_position(path), 0, path) for path in paths]
    latest = folder / LATEST_CHECKPOINT_NAME
    if latest.is_file():
        try:
            keyed.append((_training_position(latest), 1, latest))  # a tie goes to the named file
        except CheckpointError:
            keyed.append(((-1, -1), 1, latest))
    return [path for _, _, path in sorted(keyed)]


def latest_valid_checkpoint(folder: str | Path) -> Path:
    """The newest checkpoint in `folder` (epoch_N.pt, epoch_E_step_S.pt or epoch_latest.pt) that loads; a newer
    damaged one is skipped with a warning."""
    import warnings

    candidates = resumable_checkpoints(folder)
    if not candidates:
        raise CheckpointError(f"--resume latest: no checkpoint epoch_N.pt in {folder}; train first or pass a path")
    for path in reversed(candidates):
        try:
            load_checkpoint(path)
            return path
        except CheckpointError as exc:
            warnings.warn(f"skipping damaged checkpoint: {exc}")
    raise CheckpointError(f"--resume latest: every checkpoint in {folder} is damaged ({len(candidates)} tried)")
