"""The knobs of the toy world's training images: how predictive and how decodable each cue is, and caption noise.

A natural training image has a caption category c (index % 16). Its silhouette is c's with probability
`shape_predictivity` and its texture is c's with probability `texture_predictivity`; otherwise the cue is another
category's, uniform over the 15 others. Both draws come from the counter hash of (seed, sample index), so scene i
is the same on every rank, batch split and device. A predictivity of 1/16 makes a cue carry no information about
the caption; below that the cue points away from it.

Decodability (how easily a network extracts a cue, as opposed to how often it agrees with the caption; Hermann &
Lampinen 2020):
- texture_contrast scales the difference between the texture's two colours (1: the full dark/bright contrast of
  the cue-equal world; 0.2: faint stripes);
- shape_scale_min / shape_scale_max bound the silhouette's radius (fraction of half the image side): small
  silhouettes cover few pixels, so their outline is harder to read, while the texture shows in all of them;
- occlusion hides a square of side occlusion x the silhouette's diameter, painted in the background colour, at a
  random place over the silhouette (0: none).
caption_noise is the share of captions that name a random other category than the one drawn.

Evaluation sets never use these knobs: they show the cue-equal world (fastclip.data.toyworld), so the evaluation
does not know which world a run was trained in. The presets:
- `cue-equal`: the world as it was before the knobs (every cue always predictive, texture the easier one);
- `paper`: see docs/toyworld.md for the mechanism and why these values were fixed before measuring.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

SCALE_BOUNDS = (0.1, 0.9)  # a silhouette smaller than this is a few pixels; larger leaves the frame
MAX_OCCLUSION = 0.8


@dataclass(frozen=True)
class WorldKnobs:
    texture_predictivity: float = 1.0
    shape_predictivity: float = 1.0
    texture_contrast: float = 1.0
    shape_scale_min: float = 0.4
    shape_scale_max: float = 0.75
    occlusion: float = 0.0
    caption_noise: float = 0.0

    def __post_init__(self) -> None:
        check_knobs(self)

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @property
    def scale_range(self) -> tuple[float, float]:
        return (self.shape_scale_min, self.shape_scale_max)


KNOB_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(WorldKnobs))

KNOB_HELP = {
    "texture_predictivity": "share of training images whose texture is the caption's category; the rest show "
                            "another category's texture (1/16: no information)",
    "shape_predictivity": "share of training images whose silhouette is the caption's category",
    "texture_contrast": "texture decodability: contrast between the texture's two colours, in (0, 1]",
    "shape_scale_min": "shape decodability: smallest silhouette radius, as a fraction of half the image side",
    "shape_scale_max": "shape decodability: largest silhouette radius, as a fraction of half the image side",
    "occlusion": f"shape decodability: side of an occluding square as a fraction of the silhouette's diameter, "
                 f"in [0, {MAX_OCCLUSION}]",
    "caption_noise": "share of captions naming a random other category, in [0, 1)",
}  # fmt: skip



def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_knobs(knobs: WorldKnobs) -> None:
    """Raise ValueError naming the fastclip-train flag of the first knob out of its range."""

    def number(name: str) -> float:
        value = getattr(knobs, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise ValueError(f"{_flag(name)} must be a number, got {value!r}")
        return float(value)

    for name in ("texture_predictivity", "shape_predictivity"):
        if not 0.0 <= number(name) <= 1.0:
            raise ValueError(f"{_flag(name)} must lie in [0, 1], got {getattr(knobs, name)}")
    if not 0.0 < number("texture_contrast") <= 1.0:
        raise ValueError(f"--texture-contrast must lie in (0, 1], got {knobs.texture_contrast}")
    low, high = SCALE_BOUNDS
    for name in ("shape_scale_min", "shape_scale_max"):
        if not low <= number(name) <= high:
            raise ValueError(f"{_flag(name)} must lie in [{low}, {high}], got {getattr(knobs, name)}")
    if knobs.shape_scale_min > knobs.shape_scale_max:
        raise ValueError(f"--shape-scale-min ({knobs.shape_scale_min}) must be <= --shape-scale-max "
                         f"({knobs.shape_scale_max})")  # fmt: skip
    if not 0.0 <= number("occlusion") <= MAX_OCCLUSION:
        raise ValueError(f"--occlusion must lie in [0, {MAX_OCCLUSION}], got {knobs.occlusion}")
    if not 0.0 <= number("caption_noise") < 1.0:
        raise ValueError(f"--caption-noise must lie in [0, 1), got {knobs.caption_noise}")


PRESETS: dict[str, WorldKnobs] = {
    "cue-equal": WorldKnobs(),
    # The paper's mechanism (docs/toyworld.md): texture is easier to decode than shape but less predictive of the
    # caption, as in natural images. Texture names the caption's category in half of the images (8x chance), the
    # silhouette in all of them; decodability stays as in the cue-equal world, where texture is the easier cue (it
    # wins 87% of cue-conflict decisions after one epoch). Fixed from the mechanism before any run of it was measured.
    "paper": WorldKnobs(texture_predictivity=0.5),
}
DEFAULT_PRESET = "paper"


def preset(name: str) -> WorldKnobs:
    if name not in PRESETS:
        raise ValueError(f"--toyworld-preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return PRESETS[name]


def resolve_knobs(preset_name: str, overrides: Mapping[str, Any]) -> WorldKnobs:
    """The preset with every override that is not None applied (validated; errors name the flag)."""
    unknown = set(overrides) - set(KNOB_NAMES)
    if unknown:
        raise ValueError(f"unknown toy-world knobs {sorted(unknown)}; known: {', '.join(KNOB_NAMES)}")
    changes = {name: value for name, value in overrides.items() if value is not None}
    return dataclasses.replace(preset(preset_name), **changes)


def knobs_of_config(config: Any) -> WorldKnobs:
    """The world a fastclip-train config describes (its --toyworld-preset and per-knob overrides)."""
    return resolve_knobs(config.toyworld_preset, {name: getattr(config, name) for name in KNOB_NAMES})


def knobs_from_dict(values: Mapping[str, Any], *, source: str) -> WorldKnobs:
    """WorldKnobs from a params.json / checkpoint `toyworld` entry; unknown or bad entries name the source."""
    unknown = set(values) - set(KNOB_NAMES)
    if unknown:
        raise ValueError(f"{source}: unknown toy-world knobs {sorted(unknown)}")
    try:
        return WorldKnobs(**values)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc
