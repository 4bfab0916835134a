"""The procedural glyphs world: ten stroke glyphs drawn at 32x32 in colour, with continuous pose.

An image is one glyph (its class: O, C, S, L, T, H, X, Z, A or E, each a few strokes in a unit
frame) under a random similarity-plus-aspect transform (centre, size, rotation within +-20
degrees, aspect), a random stroke width, antialiased, in one of four colours on black. The
variation is continuous, so no image repeats and a class has no single template; a glyph's
strokes cross many 4x4-pixel tokens and share one colour, so a sample is only right when its
tokens agree with each other (continuous strokes, one colour), which per-token independent
draws cannot do.

The splits are fixed: image i of split s has its parameters drawn from its own stream seeded by
(split seed, i), so a split never depends on how many images are rendered at once.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

SIDE = 32                       # image height and width in pixels
NUM_CLASSES = 10
CLASS_NAMES = ("O", "C", "S", "L", "T", "H", "X", "Z", "A", "E")
PALETTE = torch.tensor([[0.95, 0.25, 0.20],     # red
                        [0.30, 0.85, 0.30],     # green
                        [0.30, 0.45, 1.00],     # blue
                        [0.95, 0.85, 0.20]])    # yellow
SPLIT_SEEDS = {"train": 0, "test": 1}
SPLIT_SIZES = {"train": 10000, "test": 2000}
WORLD_VERSION = "glyphs-1"      # bump when rendering or the splits change
RENDER_CHUNK = 256

# Pose ranges: centre offset (pixels), glyph half-size (pixels), rotation (radians), log aspect,
# stroke width (pixels).
SHIFT = 3.0
HALF_SIZE = (9.0, 12.0)
ROTATION = math.radians(20.0)
LOG_ASPECT = 0.15
WIDTH = (1.6, 3.0)

#----------------------------------------------------------------------------
# The glyphs as strokes in a unit frame ([-1, 1]^2, y pointing down).


def _arc(cx: float, cy: float, r: float, start_deg: float, end_deg: float, pieces: int) -> list[tuple[float, float]]:
    # Points of a circular arc (angles in degrees, 0 = right, 90 = down), as a polyline.
    angles = torch.linspace(math.radians(start_deg), math.radians(end_deg), pieces + 1)
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles.tolist()]


_POLYLINES: dict[str, list[list[tuple[float, float]]]] = {
    "O": [_arc(0.0, 0.0, 0.8, 0.0, 360.0, 12)],
    "C": [_arc(0.0, 0.0, 0.8, 40.0, 320.0, 9)],
    "S": [_arc(0.0, -0.42, 0.42, 330.0, 90.0, 6) + _arc(0.0, 0.42, 0.42, 270.0, 510.0, 6)[1:]],
    "L": [[(-0.5, -0.85), (-0.5, 0.8), (0.6, 0.8)]],
    "T": [[(-0.75, -0.8), (0.75, -0.8)], [(0.0, -0.8), (0.0, 0.85)]],
    "H": [[(-0.6, -0.8), (-0.6, 0.8)], [(0.6, -0.8), (0.6, 0.8)], [(-0.6, 0.0), (0.6, 0.0)]],
    "X": [[(-0.7, -0.8), (0.7, 0.8)], [(0.7, -0.8), (-0.7, 0.8)]],
    "Z": [[(-0.7, -0.8), (0.7, -0.8), (-0.7, 0.8), (0.7, 0.8)]],
    "A": [[(-0.75, 0.85), (0.0, -0.85), (0.75, 0.85)], [(-0.4, 0.1), (0.4, 0.1)]],
    "E": [[(0.6, -0.8), (-0.55, -0.8), (-0.55, 0.8), (0.6, 0.8)], [(-0.55, 0.0), (0.4, 0.0)]],
}


# Stroke segments of every class: endpoints [classes, M, 2, 2] and a validity mask [classes, M]
# (classes with fewer than M segments are padded).
@lru_cache(maxsize=1)
def class_segments() -> tuple[Tensor, Tensor]:
    per_class = []
    for name in CLASS_NAMES:
        per_class.append([(a, b) for line in _POLYLINES[name] for a, b in zip(line, line[1:])])
    m = max(len(s) for s in per_class)
    ends = torch.zeros(NUM_CLASSES, m, 2, 2)
    valid = torch.zeros(NUM_CLASSES, m, dtype=torch.bool)
    for k, segs in enumerate(per_class):
        ends[k, : len(segs)] = torch.tensor(segs)
        valid[k, : len(segs)] = True
    return ends, valid


#----------------------------------------------------------------------------
# Parameters and rendering.


# The parameters of n images: class, colour index, centre [n, 2], half-size, rotation, log aspect
# and stroke width, each image's from its own stream (seed, first_index + i).
def draw_parameters(seed: int, first_index: int, n: int) -> dict[str, Tensor]:
    rows = []
    for i in range(first_index, first_index + n):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        rows.append(torch.rand(8, generator=g, dtype=torch.float64))
    u = torch.stack(rows).float()
    return {"label": (u[:, 0] * NUM_CLASSES).long().clamp(max=NUM_CLASSES - 1),
            "colour": (u[:, 1] * len(PALETTE)).long().clamp(max=len(PALETTE) - 1),
            "centre": SIDE / 2 + SHIFT * (2 * u[:, 2:4] - 1),
            "half_size": HALF_SIZE[0] + (HALF_SIZE[1] - HALF_SIZE[0]) * u[:, 4],
            "rotation": ROTATION * (2 * u[:, 5] - 1),
            "log_aspect": LOG_ASPECT * (2 * u[:, 6] - 1),
            "width": WIDTH[0] + (WIDTH[1] - WIDTH[0]) * u[:, 7]}


# The continuous pose of images as targets in [-1, 1] [n, 6]: centre x and y, half-size, rotation,
# log aspect, stroke width, each rescaled from its range.
def pose_targets(params: dict[str, Tensor]) -> Tensor:
    def unit(x: Tensor, lo: float, hi: float) -> Tensor:
        return 2 * (x - lo) / (hi - lo) - 1
    centre = (params["centre"] - SIDE / 2) / SHIFT
    return torch.stack([centre[:, 0], centre[:, 1], unit(params["half_size"], *HALF_SIZE),
                        params["rotation"] / ROTATION, params["log_aspect"] / LOG_ASPECT,
                        unit(params["width"], *WIDTH)], dim=1)


def _squared_distance_to_segments(points: Tensor, a: Tensor, b: Tensor) -> Tensor:
    # Squared distance of points [P, 2] to segments a, b [N, M, 2] -> [N, P, M].
    abx, aby = (b[..., 0] - a[..., 0])[:, None], (b[..., 1] - a[..., 1])[:, None]
    dx = points[None, :, 0, None] - a[:, None, :, 0]
    dy = points[None, :, 1, None] - a[:, None, :, 1]
    t = ((dx * abx + dy * aby) / (abx * abx + aby * aby).clamp_min(1e-12)).clamp(0.0, 1.0)
    ex, ey = dx - t * abx, dy - t * aby
    return ex * ex + ey * ey


# Render images [n, 3, SIDE, SIDE] in [0, 1] from parameters (antialiased strokes: coverage
# clamp(width / 2 + 1/2 - distance, 0, 1) times the colour).
def render(params: dict[str, Tensor]) -> Tensor:
    ends, valid = class_segments()
    label = params["label"]
    cos, sin = params["rotation"].cos(), params["rotation"].sin()
    sx = params["half_size"] * params["log_aspect"].exp()
    sy = params["half_size"] * (-params["log_aspect"]).exp()
    unit = ends[label]                                           # [n, M, 2 ends, 2 xy]
    x, y = unit[..., 0] * sx[:, None, None], unit[..., 1] * sy[:, None, None]
    px = cos[:, None, None] * x - sin[:, None, None] * y + params["centre"][:, None, None, 0]
    py = sin[:, None, None] * x + cos[:, None, None] * y + params["centre"][:, None, None, 1]
    pts = torch.stack([px, py], dim=-1)                          # [n, M, 2, 2]
    coords = torch.arange(SIDE, dtype=torch.float32) + 0.5
    grid = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), dim=-1).view(-1, 2)
    d2 = _squared_distance_to_segments(grid, pts[:, :, 0], pts[:, :, 1])
    d = torch.where(valid[label][:, None, :], d2, torch.full_like(d2, math.inf)).amin(-1).sqrt()
    coverage = (params["width"][:, None] / 2 + 0.5 - d).clamp(0.0, 1.0)
    colour = PALETTE[params["colour"]]
    return (coverage[:, None, :] * colour[:, :, None]).view(-1, 3, SIDE, SIDE)


# Images [n, 3, SIDE, SIDE] and labels [n] of images first_index .. first_index + n - 1 of a seed.
def render_range(seed: int, first_index: int, n: int) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    for start in range(first_index, first_index + n, RENDER_CHUNK):
        params = draw_parameters(seed, start, min(RENDER_CHUNK, first_index + n - start))
        images.append(render(params))
        labels.append(params["label"])
    return torch.cat(images), torch.cat(labels)


# The fixed split `train` (10,000 images) or `test` (2,000, the metrics' reference): images as
# uint8 [N, 3, SIDE, SIDE] (rounded from [0, 1]) and labels [N].
@lru_cache(maxsize=None)
def load_split(split: str) -> tuple[Tensor, Tensor]:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown glyphs split {split!r}; allowed: {', '.join(SPLIT_SEEDS)}")
    images, labels = render_range(SPLIT_SEEDS[split], 0, SPLIT_SIZES[split])
    return (images * 255).round().to(torch.uint8), labels


# Images [N, 3, SIDE, SIDE] in [0, 1] and labels [N] of a split.
def split_images(split: str) -> tuple[Tensor, Tensor]:
    images, labels = load_split(split)
    return images.float() / 255, labels
