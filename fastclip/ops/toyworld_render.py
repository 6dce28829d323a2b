"""The toy world's renderer: per-image scene parameters in, float32 RGB images in [0,1] out.

Every pixel is a closed form of (scene parameters, pixel centre) and a few constant tables, so a kernel (Triton,
one program per image tile) computes exactly the same maths as `toyworld_render_ref`, the plain-PyTorch oracle.

Coordinates. An S x S image covers the square [-1,1]^2: x grows to the right, y grows upwards, pixel (row i,
column j) has its centre at x = (2j+1)/S - 1, y = 1 - (2i+1)/S. Angles are counter-clockwise radians.

Silhouette k (the shape of category k) lives in a canonical frame where it fits roughly in the unit disk, pointing
"up" (+y). For a scene with centre c, scale s and rotation theta, the canonical point of pixel p is
    l = R(-theta) (p - c) / s.
Symmetric shapes are folded first (table SHAPE_FOLD: n-fold rotation, then a mirror x -> |x|):
    r = |l|, phi = atan2(l.x, l.y)  (angle from +y towards +x), w = 2 pi / n,
    phi' = phi - w * round(phi / w),  phi' = |phi'| if mirror,  f = r (sin phi', cos phi').
The signed distance (negative inside) is a union of up to PIECES convex pieces, each the intersection of up to TERMS
terms (table SHAPE_TERMS, one row (alpha, cx, cy, nx, ny, d) per term):
    term(f) = alpha * |f - (cx, cy)| + nx f.x + ny f.y - d,   sd = min_piece max_term term(f).
alpha = 1 is a disk of radius d, alpha = -1 the outside of a disk of radius -d, alpha = 0 a half-plane. Padding
terms hold -PAD (no constraint), padding pieces +PAD (empty). The reference computes |f - c|^2 as
r^2 - 2 c.f + |c|^2 (one batched matmul); a kernel may compute it directly, the difference is far below a pixel.
Coverage of the pixel, anti-aliased over one pixel width (2/S in image units, so 2/(S s) in canonical units):
    coverage = clamp(0.5 - sd * s * S / 2, 0, 1).
Every table has NUM_CATEGORIES + 1 rows; the last, which index -1 selects, serves id -1: for shapes one piece with
no constraint (sd = -PAD, so coverage 1 everywhere), for textures weights (0, 0, 0) (t = 0, a flat fill).

Texture k (of category k) is a pattern t in [0,1] over the image plane, translated by the scene's phase:
q = p - (2 * texture_phase - 1) (phase 0.5 puts the texture's origin, e.g. the centre of its rings, at the image
centre; a phase step of 1 moves the texture by a whole image width). Each texture mixes two waves
(table TEXTURE_WAVES, one row (angle, f_lin, f_rad, warp_amp, warp_freq, warp_sine, gain, bias) per wave):
    u = (cos angle, sin angle), v = (-sin angle, cos angle)          (frequencies are cycles per image width)
    a = f_lin/2 * (u.q) + f_rad/2 * |q| + warp_amp * warp(warp_freq/2 * (v.q))   (only wave 1 is ever warped)
    warp(z) = warp_sine * sin(2 pi z) + (1 - warp_sine) * (4 |z - round(z)| - 1)
    wave = clamp(0.5 + gain * (cos(2 pi a) - bias), 0, 1)
and combines them bilinearly (table TEXTURE_COMBINE, (w1, w2, w12)): t = clamp(w1 t1 + w2 t2 + w12 t1 t2, 0, 1),
so (1,0,0) is wave 1 alone, (0,0,1) AND, (1,1,-1) OR, (1,1,-2) XOR.
    fill = texture_colors[0] + t * (texture_colors[1] - texture_colors[0])

Background: background_color plus a faint cosine grating whose direction, frequency and phase come from
background_seed through the counter hash below:
    h = mix32(mix32((seed mod 2^32) ^ BACKGROUND_KEY) ^ ((seed >> 32) mod 2^32)),
    u_k = uniform(mix32(h ^ BACKGROUND_STREAMS[k])), k = 0, 1, 2,
    psi = 2 pi u_0, f = BACKGROUND_FREQ_MIN + u_1 * (BACKGROUND_FREQ_MAX - BACKGROUND_FREQ_MIN),
    background = background_color + BACKGROUND_CONTRAST * cos(2 pi (f/2 * (cos psi x + sin psi y) + u_2))
(the reference splits the cosine of the sum into products of cosines and sines of x and y terms).

Pixel = clamp(lerp(background, fill, coverage), 0, 1) per channel (torch.lerp, so coverage 0 gives the background
and coverage 1 the fill bit for bit).

mix32 is Chris Wellons' lowbias32 integer hash, a bijection of 32-bit words; the reference evaluates it in int64
with products split in 16-bit halves so nothing overflows (a kernel uses plain wrapping uint32 arithmetic), and
uniform(h) = (h >> 8) * 2^-24, exact in float32. fastclip.data.toyworld draws all its per-sample values from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache

import torch

from fastclip.ops._dispatch import Backend, OpDispatcher, triton_unavailable

CATEGORIES: tuple[str, ...] = (
    "airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat",
    "chair", "clock", "dog", "elephant", "keyboard", "knife", "oven", "truck",
)  # fmt: skip
NUM_CATEGORIES = len(CATEGORIES)

SHAPE_NAMES: tuple[str, ...] = (
    "circle", "square", "triangle", "star5", "cross", "ring", "chevron", "crescent",
    "heart", "l_shape", "arrow", "lens", "trapezoid", "star8", "semicircle", "bowtie",
)  # fmt: skip

TEXTURE_NAMES: tuple[str, ...] = (
    "stripes_0deg_f8", "stripes_90deg_f5", "stripes_45deg_f11", "stripes_135deg_f6",
    "checker_f5", "diagonal_checks_f6", "dots_f7", "grid_f6",
    "waves_f7", "zigzag_f7", "rings_f6", "crosshatch_f6",
    "dashes_f8", "diagonal_dots_f10", "arcs_f5", "herringbone_f4",
)  # fmt: skip
# In texture names the angle is the orientation of the stripes themselves (0deg: horizontal stripes) and fN is N
# cycles per image width.

PIECES = 2
TERMS = 4
PAD = 1.0e4

BACKGROUND_CONTRAST = 0.05
BACKGROUND_FREQ_MIN = 0.5
BACKGROUND_FREQ_MAX = 1.5
BACKGROUND_KEY = 0x6A09E667
BACKGROUND_STREAMS = (0xBB67AE85, 0x3C6EF372, 0xA54FF53A)

MASK32 = 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------- counter hashing


def _mul32(x, constant: int):
    """x * constant mod 2^32 for x in [0, 2^32), without ever exceeding 2^63 (int64 tensors or Python ints)."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & MASK32


def mix32(x):
    """lowbias32: a well-mixing bijection of 32-bit words, for int64 tensors (values in [0, 2^32)) or Python ints."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform_from_hash(h: torch.Tensor) -> torch.Tensor:
    """float32 in [0, 1) from 32-bit hash words: the top 24 bits, so the value is exact on every device."""
    return (h >> 8).to(torch.float32) * (1.0 / 16777216.0)


def background_uniforms(background_seed: torch.Tensor) -> torch.Tensor:
    """(N, 3) uniforms that set each background's grating: direction, frequency and phase (see the module doc)."""
    seed = background_seed.to(torch.int64)
    h = mix32(mix32((seed & MASK32) ^ BACKGROUND_KEY) ^ ((seed >> 32) & MASK32))
    streams = torch.tensor(BACKGROUND_STREAMS, dtype=torch.int64, device=seed.device)
    return uniform_from_hash(mix32(h[:, None] ^ streams))


# ------------------------------------------------------------------------------------------------ shape tables


def _disk(cx: float, cy: float, radius: float) -> tuple[float, ...]:
    return (1.0, cx, cy, 0.0, 0.0, radius)


def _outside_disk(cx: float, cy: float, radius: float) -> tuple[float, ...]:
    return (-1.0, cx, cy, 0.0, 0.0, -radius)


def _half_plane(nx: float, ny: float, d: float) -> tuple[float, ...]:
    """The side n.f <= d of a line, with n normalised so that the term is a true distance."""
    norm = math.hypot(nx, ny)
    return (0.0, 0.0, 0.0, nx / norm, ny / norm, d / norm)


def _side_of_line(a: tuple[float, float], b: tuple[float, float], inside: tuple[float, float]) -> tuple[float, ...]:
    """The side of the line through a and b that holds the point `inside`."""
    nx, ny = b[1] - a[1], a[0] - b[0]
    d = nx * a[0] + ny * a[1]
    if nx * inside[0] + ny * inside[1] > d:
        nx, ny, d = -nx, -ny, -d
    return _half_plane(nx, ny, d)


def _box(x0: float, x1: float, y0: float, y1: float) -> list[tuple[float, ...]]:
    return [_half_plane(1, 0, x1), _half_plane(-1, 0, -x0), _half_plane(0, 1, y1), _half_plane(0, -1, -y0)]


def _polar(radius: float, angle_from_up: float) -> tuple[float, float]:
    return (radius * math.sin(angle_from_up), radius * math.cos(angle_from_up))


def _star_piece(points: int, inner_radius: float) -> list[tuple[float, ...]]:
    """One folded sector of a star: the origin's side of the edge from the tip (0, 1) to the next inner corner."""
    return [_side_of_line((0.0, 1.0), _polar(inner_radius, math.pi / points), (0.0, 0.0))]


def _heart_lower_piece(lobe: tuple[float, float], lobe_radius: float, tip_y: float) -> list[tuple[float, ...]]:
    """The quadrilateral (tip, tangent point on the lobe, lobe centre, axis at the lobe centre's height), x >= 0."""
    tip = (0.0, tip_y)
    to_lobe = (lobe[0] - tip[0], lobe[1] - tip[1])
    distance = math.hypot(*to_lobe)
    tangent_angle = math.atan2(to_lobe[1], to_lobe[0]) - math.asin(lobe_radius / distance)
    reach = math.sqrt(distance**2 - lobe_radius**2)
    tangent = (tip[0] + reach * math.cos(tangent_angle), tip[1] + reach * math.sin(tangent_angle))
    inside = (0.3 * lobe[0], 0.5 * (tip_y + lobe[1]))
    return [_side_of_line(tip, tangent, inside), _side_of_line(tangent, lobe, inside), _half_plane(0, 1, lobe[1])]


def _chevron_piece(apex_y: float, thickness: float, half_width: float) -> list[tuple[float, ...]]:
    """A "^" band between the lines x + y = apex_y and x + y = apex_y - thickness * sqrt(2) (x >= 0 after the
    mirror), capped at x <= half_width."""
    inner = apex_y - thickness * math.sqrt(2.0)
    return [_half_plane(1, 1, apex_y), _half_plane(-1, -1, -inner), _half_plane(1, 0, half_width)]


# (n-fold rotational folding, mirror x -> |x| after folding), then the pieces of the folded shape.
_SHAPES: dict[str, tuple[int, bool, list[list[tuple[float, ...]]]]] = {
    "circle": (1, False, [[_disk(0, 0, 0.9)]]),
    "square": (4, True, [[_half_plane(0, 1, 0.75)]]),
    "triangle": (3, True, [[_side_of_line((0.0, 1.05), _polar(1.05, 2 * math.pi / 3), (0.0, 0.0))]]),
    "star5": (5, True, [_star_piece(5, 0.45)]),
    "cross": (4, True, [[_half_plane(1, 0, 0.28), _half_plane(0, 1, 0.92)]]),
    "ring": (1, False, [[_disk(0, 0, 0.92), _outside_disk(0, 0, 0.55)]]),
    "chevron": (1, True, [_chevron_piece(apex_y=0.85, thickness=0.45, half_width=0.85)]),
    "crescent": (1, False, [[_disk(0, 0, 0.92), _outside_disk(0.45, 0, 0.75)]]),
    "heart": (1, True, [[_disk(0.42, 0.3, 0.48)], _heart_lower_piece((0.42, 0.3), 0.48, -0.95)]),
    "l_shape": (1, False, [_box(-0.6, -0.1, -0.8, 0.8), _box(-0.6, 0.6, -0.8, -0.3)]),
    "arrow": (1, True, [[_side_of_line((0.0, 0.95), (0.62, 0.2), (0.0, 0.5)), _half_plane(0, -1, -0.2)],
                        [_half_plane(1, 0, 0.2), _half_plane(0, -1, 0.95), _half_plane(0, 1, 0.25)]]),
    "lens": (1, True, [[_disk(-0.6, 0, 1.1)]]),  # for x >= 0 the left disk's edge is the lens's right edge
    "trapezoid": (1, True, [[_half_plane(0, 1, 0.55), _half_plane(0, -1, 0.6),
                             _side_of_line((0.45, 0.55), (0.95, -0.6), (0.0, 0.0))]]),
    "star8": (8, True, [_star_piece(8, 0.5)]),
    "semicircle": (1, False, [[_disk(0, -0.4, 1.0), _half_plane(0, -1, 0.4)]]),
    "bowtie": (1, True, [[_half_plane(1, 0, 0.85), _side_of_line((0.0, 0.12), (0.85, 0.8), (0.5, 0.0)),
                          _side_of_line((0.0, -0.12), (0.85, -0.8), (0.5, 0.0))]]),
}  # fmt: skip


def _padded_terms(pieces: list[list[tuple[float, ...]]]) -> tuple:
    no_constraint = (0.0, 0.0, 0.0, 0.0, 0.0, PAD)
    empty = (0.0, 0.0, 0.0, 0.0, 0.0, -PAD)
    rows = [list(piece) + [no_constraint] * (TERMS - len(piece)) for piece in pieces]
    rows += [[empty] + [no_constraint] * (TERMS - 1)] * (PIECES - len(pieces))
    return tuple(tuple(row) for row in rows)


assert tuple(_SHAPES) == SHAPE_NAMES
_WHOLE_FRAME: list[list[tuple[float, ...]]] = [[]]  # one piece without constraints: sd = -PAD, coverage 1
# Every table has NUM_CATEGORIES + 1 rows: the last one, which index -1 selects, is for id -1 ("none").
# SHAPE_FOLD[k] = (n, mirror); SHAPE_TERMS[k][piece][term] = (alpha, cx, cy, nx, ny, d).
SHAPE_FOLD: tuple[tuple[float, float], ...] = tuple(
    (float(n), float(mirror)) for n, mirror, _ in _SHAPES.values()
) + ((1.0, 0.0),)
SHAPE_TERMS: tuple = tuple(_padded_terms(pieces) for _, _, pieces in _SHAPES.values()) + (_padded_terms(_WHOLE_FRAME),)
# Only the first DISK_SLOTS terms of a piece may be disks (alpha != 0), so only they need a square root.
DISK_SLOTS = 2
assert all(term[0] == 0.0 for shape in SHAPE_TERMS for piece in shape for term in piece[DISK_SLOTS:])

# ---------------------------------------------------------------------------------------------- texture tables


def _wave(angle_deg: float = 0.0, f_lin: float = 0.0, f_rad: float = 0.0, warp_amp: float = 0.0,
          warp_freq: float = 0.0, warp_sine: float = 1.0, gain: float = 1.5, bias: float = 0.0) -> tuple:  # fmt: skip
    return (math.radians(angle_deg), f_lin, f_rad, warp_amp, warp_freq, warp_sine, gain, bias)


_UNUSED = _wave()
_ALONE, _AND, _OR, _XOR = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, -1.0), (1.0, 1.0, -2.0)

# name -> (wave 1, wave 2, combination). A wave's angle is the direction its intensity varies along, so stripes
# that run at angle A have a wave at A + 90. Each texture must stay distinct after swapping its two colours.
_TEXTURES: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, float, float]]] = {
    "stripes_0deg_f8": (_wave(90, f_lin=8), _UNUSED, _ALONE),
    "stripes_90deg_f5": (_wave(0, f_lin=5), _UNUSED, _ALONE),
    "stripes_45deg_f11": (_wave(135, f_lin=11), _UNUSED, _ALONE),
    "stripes_135deg_f6": (_wave(45, f_lin=6), _UNUSED, _ALONE),
    "checker_f5": (_wave(0, f_lin=5, gain=3), _wave(90, f_lin=5, gain=3), _XOR),
    "diagonal_checks_f6": (_wave(45, f_lin=6, gain=3), _wave(135, f_lin=6, gain=3), _XOR),
    "dots_f7": (_wave(0, f_lin=7, gain=2, bias=0.3), _wave(90, f_lin=7, gain=2, bias=0.3), _AND),
    "grid_f6": (_wave(0, f_lin=6, gain=3, bias=0.7), _wave(90, f_lin=6, gain=3, bias=0.7), _OR),
    "waves_f7": (_wave(90, f_lin=7, warp_amp=0.35, warp_freq=3), _UNUSED, _ALONE),
    "zigzag_f7": (_wave(0, f_lin=7, warp_amp=0.4, warp_freq=5, warp_sine=0), _UNUSED, _ALONE),
    "rings_f6": (_wave(0, f_rad=6), _UNUSED, _ALONE),
    "crosshatch_f6": (_wave(45, f_lin=6, gain=3, bias=0.7), _wave(135, f_lin=6, gain=3, bias=0.7), _OR),
    "dashes_f8": (_wave(90, f_lin=8, gain=3), _wave(0, f_lin=4, gain=3, bias=-0.5), _AND),
    "diagonal_dots_f10": (_wave(45, f_lin=10, gain=2, bias=0.3), _wave(135, f_lin=10, gain=2, bias=0.3), _AND),
    "arcs_f5": (_wave(0, f_rad=5, gain=3), _wave(0, f_lin=2.5, gain=3), _XOR),
    "herringbone_f4": (_wave(90, f_lin=4, warp_amp=0.5, warp_freq=4, warp_sine=0), _UNUSED, _ALONE),
}  # fmt: skip

assert tuple(_TEXTURES) == TEXTURE_NAMES
# TEXTURE_WAVES[k][wave] = (angle, f_lin, f_rad, warp_amp, warp_freq, warp_sine, gain, bias); TEXTURE_COMBINE[k] =
# (w1, w2, w12).
# (w1, w2, w12). As for shapes, the last row is for id -1: t = 0, a flat fill.
TEXTURE_WAVES: tuple = tuple((w1, w2) for w1, w2, _ in _TEXTURES.values()) + ((_UNUSED, _UNUSED),)
TEXTURE_COMBINE: tuple = tuple(combine for _, _, combine in _TEXTURES.values()) + ((0.0, 0.0, 0.0),)
# Only the first wave is ever warped, so the second needs no warp term.
assert all(second[3] == 0.0 for _, second in TEXTURE_WAVES)


@lru_cache(maxsize=8)
def _tables(device: torch.device) -> dict[str, torch.Tensor]:
    def table(rows) -> torch.Tensor:
        return torch.tensor(rows, dtype=torch.float32, device=device)

    return {
        "fold": table(SHAPE_FOLD),
        "terms": table(SHAPE_TERMS),
        "waves": table(TEXTURE_WAVES),
        "combine": table(TEXTURE_COMBINE),
    }


# ------------------------------------------------------------------------------------------------ scene params


@dataclass
class SceneParams:
    """One row per image; every tensor on the same device.

    shape_id        long (N,)     silhouette in [0, 16), or -1: no silhouette, the fill covers the whole frame
    texture_id      long (N,)     texture in [0, 16), or -1: flat fill with texture_colors[:, 0]
    center          float (N, 2)  silhouette centre (x, y) in [-1, 1] (x right, y up)
    scale           float (N,)    silhouette radius as a fraction of half the image side
    rotation        float (N,)    counter-clockwise, radians
    texture_colors  float (N, 2, 3) the texture's two RGB colours in [0, 1]
    background_color float (N, 3) RGB in [0, 1]
    texture_phase   float (N, 2)  texture translation in image widths (0.5: texture origin at the centre)
    background_seed long (N,)     seeds the faint background grating
    """

    shape_id: torch.Tensor
    texture_id: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor
    rotation: torch.Tensor
    texture_colors: torch.Tensor
    background_color: torch.Tensor
    texture_phase: torch.Tensor
    background_seed: torch.Tensor

    def __len__(self) -> int:
        return int(self.shape_id.shape[0])

    def __getitem__(self, rows) -> "SceneParams":
        """Rows by slice, integer index tensor or boolean mask (an int gives a one-row SceneParams)."""
        if isinstance(rows, int):
            rows = slice(rows, rows + 1) if rows != -1 else slice(-1, None)
        return SceneParams(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    @property
    def device(self) -> torch.device:
        return self.shape_id.device

    def to(self, device: torch.device | str) -> "SceneParams":
        return SceneParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @staticmethod
    def cat(parts: list["SceneParams"]) -> "SceneParams":
        return SceneParams(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(SceneParams)})


_FIELD_SPECS = {  # name -> (trailing shape, integer?)
    "shape_id": ((), True),
    "texture_id": ((), True),
    "center": ((2,), False),
    "scale": ((), False),
    "rotation": ((), False),
    "texture_colors": ((2, 3), False),
    "background_color": ((3,), False),
    "texture_phase": ((2,), False),
    "background_seed": ((), True),
}


def validate_scene_params(params: SceneParams, op: str = "toyworld_render") -> None:
    """Raise with a message naming the field when params is malformed (checks ids' ranges too)."""
    if not isinstance(params, SceneParams):
        raise TypeError(f"{op}: params must be a SceneParams, got {type(params).__name__}")
    n = len(params)
    for name, (trailing, integer) in _FIELD_SPECS.items():
        value = getattr(params, name)
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{op}: params.{name} must be a torch.Tensor, got {type(value).__name__}")
        if tuple(value.shape) != (n, *trailing):
            raise ValueError(f"{op}: params.{name} must have shape {(n, *trailing)}, got {tuple(value.shape)}")
        if integer and value.dtype != torch.int64:
            raise TypeError(f"{op}: params.{name} must be int64 (long), got {value.dtype}")
        if not integer and not value.is_floating_point():
            raise TypeError(f"{op}: params.{name} must be a floating tensor, got {value.dtype}")
        if value.device != params.device:
            raise ValueError(f"{op}: params.{name} is on {value.device} but params.shape_id is on {params.device}")
    if n:
        for name in ("shape_id", "texture_id"):
            ids = getattr(params, name)
            low, high = int(ids.min()), int(ids.max())
            if low < -1 or high >= NUM_CATEGORIES:
                raise ValueError(
                    f"{op}: params.{name} must lie in [-1, {NUM_CATEGORIES}), got values in [{low}, {high}]"
                )
        if not bool(torch.isfinite(params.scale).all()) or float(params.scale.min()) <= 0:
            raise ValueError(f"{op}: params.scale must be finite and > 0")


# ---------------------------------------------------------------------------------------------- the reference
#
# The reference first turns each scene into per-image coefficients (cheap, O(N)), then evaluates the per-pixel
# closed forms in chunks of images small enough to stay in a CPU cache. Affine maps of the pixel centre are
# evaluated separably as (a * x) + (b * y + c), one broadcast add per plane.


def _pixel_centres(image_size: int, device: torch.device) -> torch.Tensor:
    """(S,) pixel-centre coordinates (2k+1)/S - 1: x of column k, and -y of row k."""
    return (torch.arange(image_size, device=device, dtype=torch.float32) * 2 + 1) / image_size - 1


def _affine_planes(coefficients: torch.Tensor, image_size: int) -> torch.Tensor:
    """(N, K, 3) rows (a, b, c) -> (N, K, S, S) planes a x + b y + c over the pixel centres."""
    centres = _pixel_centres(image_size, coefficients.device)
    a, b, c = coefficients.unbind(-1)
    along_x = a[..., None] * centres  # (N, K, S): x of each column
    along_y = torch.addcmul(c[..., None], b[..., None], -centres)  # (N, K, S): y of each row
    return along_x[..., None, :] + along_y[..., :, None]


def _prepare(params: SceneParams) -> dict[str, torch.Tensor]:
    """Per-image coefficients of the per-pixel closed forms (see the module docstring)."""
    n, device = len(params), params.device
    tables = _tables(device)
    shape, texture = params.shape_id, params.texture_id  # -1 selects the tables' last row
    center = params.center.float()
    cx, cy = center[:, 0], center[:, 1]
    rotation = params.rotation.float()
    cos_r, sin_r = torch.cos(rotation), torch.sin(rotation)
    inv_scale = (1.0 / params.scale.float())[:, None]
    to_local = torch.stack(
        [
            torch.stack([cos_r, sin_r, -(cos_r * cx + sin_r * cy)], dim=1) * inv_scale,
            torch.stack([-sin_r, cos_r, sin_r * cx - cos_r * cy], dim=1) * inv_scale,
        ],
        dim=1,
    )
    fold = tables["fold"][shape]
    terms = tables["terms"][shape]  # (N, PIECES, TERMS, 6)
    alpha, tcx, tcy = terms[:, :, :DISK_SLOTS, :3].reshape(n, PIECES * DISK_SLOTS, 3).unbind(-1)
    # Rows over the features (f.x, f.y, r^2, 1): |f - c|^2 for the disk slots, then n.f - d for every term.
    distance_sq = torch.stack([-2 * tcx, -2 * tcy, torch.ones_like(tcx), tcx * tcx + tcy * tcy], dim=-1)
    _, _, _, nx, ny, d = terms.reshape(n, PIECES * TERMS, 6).unbind(-1)
    planar = torch.stack([nx, ny, torch.zeros_like(nx), -d], dim=-1)

    waves = tables["waves"][texture]  # (N, 2, 8)
    angle, f_lin, f_rad, warp_amp, warp_freq, warp_sine, gain, bias = waves.unbind(-1)
    shift_x, shift_y = (2 * params.texture_phase.float() - 1).unbind(-1)
    cos_a, sin_a = torch.cos(angle), torch.sin(angle)
    ones, zeros = torch.ones_like(shift_x), torch.zeros_like(shift_x)
    along = torch.stack([cos_a, sin_a, -(cos_a * shift_x[:, None] + sin_a * shift_y[:, None])], -1)
    across = torch.stack([-sin_a[:, 0], cos_a[:, 0], sin_a[:, 0] * shift_x - cos_a[:, 0] * shift_y], -1)
    texture_rows = torch.cat(
        [
            torch.stack([torch.stack([ones, zeros, -shift_x], -1), torch.stack([zeros, ones, -shift_y], -1)], 1),
            along * (f_lin / 2)[..., None],
            (across * (warp_freq[:, 0] / 2)[:, None])[:, None],
        ],
        dim=1,
    )  # (N, 5, 3): q.x, q.y, f_lin/2 (u.q) of each wave, warp_freq/2 (v.q) of the first wave

    u = background_uniforms(params.background_seed)
    direction = u[:, 0] * (2 * math.pi)
    half_freq = (BACKGROUND_FREQ_MIN + u[:, 1] * (BACKGROUND_FREQ_MAX - BACKGROUND_FREQ_MIN)) / 2
    grating_row = torch.stack([half_freq * torch.cos(direction), half_freq * torch.sin(direction), u[:, 2]], -1)
    return {
        "to_local": to_local,
        "sector": 2 * math.pi / fold[:, 0],
        "mirror": fold[:, 1] > 0.5,
        "term_rows": torch.cat([distance_sq, planar], dim=1),  # (N, PIECES*DISK_SLOTS + PIECES*TERMS, 4)
        "alpha": alpha,
        "scale": params.scale.float(),
        "texture_rows": texture_rows,
        "f_rad_half": f_rad / 2,
        "warp_amp": warp_amp[:, 0],
        "warp_sine": warp_sine[:, 0],
        "gain": gain,
        "offset": 0.5 - gain * bias,
        "combine": tables["combine"][texture],
        "grating_row": grating_row[:, None, :],
        "background_color": params.background_color.float(),
        "texture_colors": params.texture_colors.float(),
    }


def _coverage(prep: dict[str, torch.Tensor], image_size: int) -> torch.Tensor:
    n, s = prep["scale"].shape[0], image_size
    local = _affine_planes(prep["to_local"], s)
    lx, ly = local[:, 0], local[:, 1]
    features = torch.empty(n, 4, s, s, dtype=torch.float32, device=local.device)
    radius_sq = torch.mul(lx, lx, out=features[:, 2]).addcmul_(ly, ly)
    radius = radius_sq.sqrt()
    phi = torch.atan2(lx, ly)
    sector = prep["sector"][:, None, None]
    phi.sub_(torch.div(phi, sector).round_().mul_(sector))
    fx = torch.sin(phi).mul_(radius)
    torch.where(prep["mirror"][:, None, None], fx.abs(), fx, out=features[:, 0])
    torch.mul(torch.cos(phi, out=phi), radius, out=features[:, 1])
    features[:, 3] = 1.0
    rows = torch.bmm(prep["term_rows"], features.view(n, 4, s * s))
    disks = PIECES * DISK_SLOTS
    disk_values = rows[:, :disks].clamp_(min=0).sqrt_().mul_(prep["alpha"][:, :, None])
    values = rows[:, disks:].view(n, PIECES, TERMS, s * s)
    values[:, :, :DISK_SLOTS] += disk_values.view(n, PIECES, DISK_SLOTS, s * s)
    sd = values.amax(dim=2).amin(dim=1)
    pixels_per_unit = (prep["scale"] * (-s / 2))[:, None]
    return sd.mul_(pixels_per_unit).add_(0.5).clamp_(0, 1).view(n, s, s)


def _texture(prep: dict[str, torch.Tensor], image_size: int) -> torch.Tensor:
    planes = _affine_planes(prep["texture_rows"], image_size)  # (N, 5, S, S)
    q_norm = torch.hypot(planes[:, 0], planes[:, 1])
    phase, across = planes[:, 2:4], planes[:, 4]
    triangle = (across - torch.round(across)).abs_().mul_(4).sub_(1)
    sine = torch.sin(across.mul_(2 * math.pi))
    warp = torch.lerp(triangle, sine, prep["warp_sine"][:, None, None])
    phase.addcmul_(q_norm[:, None], prep["f_rad_half"][:, :, None, None])
    phase[:, 0].addcmul_(warp, prep["warp_amp"][:, None, None])
    waves = torch.cos(phase.mul_(2 * math.pi))
    waves.mul_(prep["gain"][:, :, None, None]).add_(prep["offset"][:, :, None, None]).clamp_(0, 1)
    t1, t2 = waves[:, 0], waves[:, 1]
    w1, w2, w12 = (prep["combine"][:, k, None, None] for k in range(3))
    # w1 t1 + w2 t2 + w12 t1 t2, factored as t1 (w1 + w12 t2) + w2 t2.
    return torch.addcmul(w1, t2, w12).mul_(t1).addcmul_(t2, w2).clamp_(0, 1)


def _background(prep: dict[str, torch.Tensor], image_size: int) -> torch.Tensor:
    # cos(2 pi (a x + b y + c)) = cos(2 pi a x) cos(2 pi (b y + c)) - sin(2 pi a x) sin(2 pi (b y + c)): the grating
    # is separable, so it costs O(S) transcendentals per image instead of O(S^2).
    centres = _pixel_centres(image_size, prep["grating_row"].device)
    a, b, c = prep["grating_row"][:, 0].unbind(-1)
    along_x = (a[:, None] * centres).mul_(2 * math.pi)  # (N, S)
    along_y = torch.addcmul(c[:, None], b[:, None], -centres).mul_(2 * math.pi)
    grating = torch.cos(along_x)[:, None, :] * torch.cos(along_y)[:, :, None]
    grating.sub_(torch.sin(along_x)[:, None, :] * torch.sin(along_y)[:, :, None])
    return torch.add(prep["background_color"][:, :, None, None], grating[:, None], alpha=BACKGROUND_CONTRAST)


# Pixels rendered together. On a CPU: enough images to amortise per-op overhead, few enough for the intermediates
# (about 20 floats a pixel) to stay in cache. On an accelerator: as many as memory comfortably allows.
_PIXELS_PER_CHUNK_CPU = 1 << 17
_PIXELS_PER_CHUNK_ACCELERATOR = 1 << 24


def _chunked(prep: dict[str, torch.Tensor], image_size: int, render, out: torch.Tensor) -> torch.Tensor:
    pixels = _PIXELS_PER_CHUNK_CPU if out.device.type == "cpu" else _PIXELS_PER_CHUNK_ACCELERATOR
    chunk = max(1, pixels // (image_size * image_size))
    for start in range(0, out.shape[0], chunk):
        part = {name: value[start : start + chunk] for name, value in prep.items()}
        render(part, image_size, out[start : start + chunk])
    return out


def _float_output(n: int, *trailing: int, device: torch.device) -> torch.Tensor:
    return torch.empty(n, *trailing, dtype=torch.float32, device=device)


def silhouette_coverage(params: SceneParams, image_size: int) -> torch.Tensor:
    """(N, S, S) float32 fraction of each pixel covered by its silhouette (1 everywhere when shape_id == -1)."""
    out = _float_output(len(params), image_size, image_size, device=params.device)
    return _chunked(_prepare(params), image_size, lambda p, s, o: o.copy_(_coverage(p, s)), out)


def texture_intensity(params: SceneParams, image_size: int) -> torch.Tensor:
    """(N, S, S) float32 texture pattern t in [0, 1] (0 where texture_id == -1)."""
    out = _float_output(len(params), image_size, image_size, device=params.device)
    return _chunked(_prepare(params), image_size, lambda p, s, o: o.copy_(_texture(p, s)), out)


def background_intensity(params: SceneParams, image_size: int) -> torch.Tensor:
    """(N, 3, S, S) float32 background: background_color plus a faint grating seeded by background_seed."""
    out = _float_output(len(params), 3, image_size, image_size, device=params.device)
    return _chunked(_prepare(params), image_size, lambda p, s, o: o.copy_(_background(p, s)), out)


def _render_into(prep: dict[str, torch.Tensor], image_size: int, out: torch.Tensor) -> None:
    coverage = _coverage(prep, image_size)
    t = _texture(prep, image_size)
    colors = prep["texture_colors"]
    fill = torch.lerp(colors[:, 0, :, None, None], colors[:, 1, :, None, None], t[:, None])
    torch.lerp(_background(prep, image_size), fill, coverage[:, None], out=out).clamp_(0, 1)


def toyworld_render_ref(params: SceneParams, image_size: int = 64) -> torch.Tensor:
    """Render scenes in plain PyTorch on params' device: float32 (N, 3, S, S) in [0, 1] (the oracle and CPU path)."""
    out = _float_output(len(params), 3, image_size, image_size, device=params.device)
    return _chunked(_prepare(params), image_size, _render_into, out)


def _toyworld_render_triton(params: SceneParams, image_size: int) -> torch.Tensor:
    from fastclip.kernels.toyworld_render import toyworld_render_fwd

    background = (BACKGROUND_CONTRAST, BACKGROUND_FREQ_MIN, BACKGROUND_FREQ_MAX, BACKGROUND_KEY, BACKGROUND_STREAMS)
    return toyworld_render_fwd(params, image_size, _tables(params.device), background)


_DISPATCH = OpDispatcher(
    "toyworld_render",
    backends=[Backend("triton", _toyworld_render_triton, triton_unavailable), Backend("reference", toyworld_render_ref)],
    auto_order={"cpu": ("reference",), "cuda": ("triton", "reference")},
)


def toyworld_render(params: SceneParams, image_size: int = 64, *, backend: str = "auto") -> torch.Tensor:
    """Render toy-world scenes.

    Args:
        params: SceneParams, one row per image, all on one device.
        image_size: side S in pixels (>= 1); the picture is the same at every size, only sampled more finely.
        backend: "auto", "triton" (kernels/toyworld_render.py; auto's choice on CUDA) or "reference".

    Returns:
        float32 (N, 3, S, S) in [0, 1] on params' device.
    """
    validate_scene_params(params)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"toyworld_render: image_size must be a positive int, got {image_size!r}")
    return _DISPATCH.choose(params.device, backend).run(params, image_size)
