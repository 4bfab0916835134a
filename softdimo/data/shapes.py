"""The "shapes" world: a procedural text-to-image domain with GenEval-style prompts (mini scale).

An image is a 4x4 grid of 4x4-pixel cells rendered to 16x16 RGB. Each cell holds nothing or one
object (shape, colour) drawn at the cell's top-left corner, so objects never touch and connected
components parse them back exactly. A scene's layout tokens are the 16 cells, each in
[0, NUM_TOKENS): 0 = empty, 1 + 4 * shape + colour otherwise; the fixed renderer (`render`) plays
the tokenizer decoder's role (docs/shapes.md, "Why layout tokens").

Prompts follow the six GenEval task families (single object, two objects, counting, colours,
position, colour attribution) over a fixed word vocabulary. Scenes hold exactly the prompted
objects; unmentioned colours are drawn at random. Everything is deterministic from a seed, and
training data is unlimited (a fresh batch per seed).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
from torch import Tensor

WORLD_VERSION = "shapes-world-1"   # bump when scenes, prompts or rendering change

GRID = 4                    # cells per side
CELL = 4                    # pixels per cell side
SIDE = GRID * CELL          # image side in pixels
POSITIONS = GRID * GRID     # layout tokens per image

COLORS = ("red", "green", "blue", "yellow")
# RGB of the background (index 0) and of each colour (index 1 + colour).
PALETTE = ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0))
SHAPES = ("square", "cross", "triangle", "bar")
PLURALS = {"square": "squares", "cross": "crosses", "triangle": "triangles", "bar": "bars"}
# Binary templates (rows of the object's bounding box); the checker matches crops against them.
TEMPLATES: dict[str, tuple[tuple[int, ...], ...]] = {
    "square": ((1, 1, 1), (1, 1, 1), (1, 1, 1)),
    "cross": ((0, 1, 0), (1, 1, 1), (0, 1, 0)),
    "triangle": ((0, 1, 0), (1, 1, 1)),
    "bar": ((1,), (1,), (1,)),
}
NUM_TOKENS = 1 + len(SHAPES) * len(COLORS)   # 17: empty + (shape, colour)

TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
NUMBERS = {"two": 2, "three": 3, "four": 4}
RELATIONS = ("left of", "right of", "above", "below")
POSITION_THRESHOLD = 0.1    # GenEval's relative-position margin (fraction of the box sizes)

PAD, NULL = "<pad>", "<null>"
VOCAB = (PAD, NULL, "a", "and", "of", "left", "right", "above", "below", *NUMBERS, *COLORS, *SHAPES,
         *PLURALS.values())
WORD_ID = {w: i for i, w in enumerate(VOCAB)}
PROMPT_LEN = 8              # words per tokenised prompt (padded with <pad>)

#----------------------------------------------------------------------------
# Prompts: what a prompt asks for, its text, and the parser back.


# One prompted object: a shape, with a colour when the prompt names one.
@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    color: str | None = None


# What a prompt asks for: task family, objects, the count (counting) and the relation
# `objects[0] <relation> objects[1]` (position).
@dataclass(frozen=True)
class PromptSpec:
    task: str
    objects: tuple[ObjectSpec, ...]
    count: int = 1
    relation: str | None = None

    # The objects the scene holds, with repetition (counting repeats its one object).
    def scene_objects(self) -> tuple[ObjectSpec, ...]:
        return self.objects * self.count


# A random prompt of one task family (GenEval's conventions on where colours appear).
def random_prompt(task: str, rng: random.Random) -> PromptSpec:
    if task == "single_object":
        return PromptSpec(task, (ObjectSpec(rng.choice(SHAPES)),))
    if task == "two_object":
        a, b = rng.sample(SHAPES, 2)
        return PromptSpec(task, (ObjectSpec(a), ObjectSpec(b)))
    if task == "counting":
        return PromptSpec(task, (ObjectSpec(rng.choice(SHAPES)),), count=rng.choice(tuple(NUMBERS.values())))
    if task == "colors":
        return PromptSpec(task, (ObjectSpec(rng.choice(SHAPES), rng.choice(COLORS)),))
    if task == "position":
        a, b = rng.sample(SHAPES, 2)
        return PromptSpec(task, (ObjectSpec(a), ObjectSpec(b)), relation=rng.choice(RELATIONS))
    if task == "color_attr":
        (a, b), (ca, cb) = rng.sample(SHAPES, 2), rng.sample(COLORS, 2)
        return PromptSpec(task, (ObjectSpec(a, ca), ObjectSpec(b, cb)))
    raise ValueError(f"unknown shapes task {task!r}; allowed: {', '.join(TASKS)}")


def _noun(obj: ObjectSpec) -> str:
    return f"{obj.color} {obj.shape}" if obj.color else obj.shape


# The prompt's text: "a cross", "a square and a bar", "three triangles", "a red square",
# "a cross left of a bar", "a green square and a red bar".
def prompt_text(spec: PromptSpec) -> str:
    if spec.task == "counting":
        number = next(w for w, n in NUMBERS.items() if n == spec.count)
        return f"{number} {PLURALS[spec.objects[0].shape]}"
    if spec.task == "position":
        a, b = spec.objects
        return f"a {_noun(a)} {spec.relation} a {_noun(b)}"
    return " and ".join(f"a {_noun(o)}" for o in spec.objects)


def _parse_noun(words: list[str], text: str) -> ObjectSpec:
    if len(words) == 2 and words[0] == "a" and words[1] in SHAPES:
        return ObjectSpec(words[1])
    if len(words) == 3 and words[0] == "a" and words[1] in COLORS and words[2] in SHAPES:
        return ObjectSpec(words[2], words[1])
    raise ValueError(f"cannot parse {' '.join(words)!r} in shapes prompt {text!r}")


# Parse a prompt's text back into what it asks for (the inverse of `prompt_text`).
def parse_prompt(text: str) -> PromptSpec:
    words = text.split()
    if len(words) == 2 and words[0] in NUMBERS:
        shape = next((s for s, p in PLURALS.items() if p == words[1]), None)
        if shape is not None:
            return PromptSpec("counting", (ObjectSpec(shape),), count=NUMBERS[words[0]])
    for rel in RELATIONS:
        rel_words = rel.split()
        for i in range(1, len(words) - len(rel_words) + 1):
            if words[i:i + len(rel_words)] == rel_words:
                a = _parse_noun(words[:i], text)
                b = _parse_noun(words[i + len(rel_words):], text)
                return PromptSpec("position", (a, b), relation=rel)
    if "and" in words:
        i = words.index("and")
        a, b = _parse_noun(words[:i], text), _parse_noun(words[i + 1:], text)
        if (a.color is None) != (b.color is None):
            raise ValueError(f"shapes prompt {text!r} colours one object but not the other")
        return PromptSpec("color_attr" if a.color else "two_object", (a, b))
    if words:
        obj = _parse_noun(words, text)
        return PromptSpec("colors" if obj.color else "single_object", (obj,))
    raise ValueError(f"cannot parse shapes prompt {text!r}")


# Word ids [B, PROMPT_LEN] of prompts (padded with <pad>); unknown words raise.
def tokenize(prompts: Sequence[str]) -> Tensor:
    out = torch.full((len(prompts), PROMPT_LEN), WORD_ID[PAD], dtype=torch.long)
    for i, text in enumerate(prompts):
        words = text.split()
        if len(words) > PROMPT_LEN:
            raise ValueError(f"shapes prompt {text!r} has {len(words)} words; at most {PROMPT_LEN}")
        for j, w in enumerate(words):
            if w not in WORD_ID:
                raise ValueError(f"unknown word {w!r} in shapes prompt {text!r}; vocabulary: {', '.join(VOCAB[2:])}")
            out[i, j] = WORD_ID[w]
    return out


#----------------------------------------------------------------------------
# Scenes: layouts that satisfy a prompt.


# Token of an object (shape, colour) and back.
def object_token(shape: str, color: str) -> int:
    return 1 + SHAPES.index(shape) * len(COLORS) + COLORS.index(color)


def token_object(token: int) -> tuple[str, str]:
    return SHAPES[(token - 1) // len(COLORS)], COLORS[(token - 1) % len(COLORS)]


# Pixel bounding box (x0, y0, x1, y1), end-exclusive, of a shape drawn in cell `cell` (row-major).
def object_box(shape: str, cell: int) -> tuple[int, int, int, int]:
    template = TEMPLATES[shape]
    x0, y0 = (cell % GRID) * CELL, (cell // GRID) * CELL
    return x0, y0, x0 + len(template[0]), y0 + len(template)


# GenEval's relative position of box A to box B: the set of relations among RELATIONS that hold
# (centre offset shrunk by POSITION_THRESHOLD x the summed box sizes, then normalised; > 0.5).
def relative_position(box_a: Sequence[float], box_b: Sequence[float]) -> set[str]:
    ca = ((box_a[0] + box_a[2]) / 2, (box_a[1] + box_a[3]) / 2)
    cb = ((box_b[0] + box_b[2]) / 2, (box_b[1] + box_b[3]) / 2)
    dims = (box_a[2] - box_a[0] + box_b[2] - box_b[0], box_a[3] - box_a[1] + box_b[3] - box_b[1])
    offset = (ca[0] - cb[0], ca[1] - cb[1])
    norm = (offset[0] ** 2 + offset[1] ** 2) ** 0.5
    revised = [max(abs(o) - POSITION_THRESHOLD * d, 0.0) * (1 if o > 0 else -1) for o, d in zip(offset, dims)]
    if norm == 0 or all(abs(r) < 1e-3 for r in revised):
        return set()
    dx, dy = revised[0] / norm, revised[1] / norm
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


# Layout tokens [POSITIONS] of a random scene holding exactly the prompt's objects; colours the
# prompt leaves open are random, positions uniform (position prompts: rejection until the
# relation holds under the checker's own rule).
def sample_layout(spec: PromptSpec, rng: random.Random) -> list[int]:
    objects = spec.scene_objects()
    colors = [o.color or rng.choice(COLORS) for o in objects]
    while True:
        cells = rng.sample(range(POSITIONS), len(objects))
        if spec.relation is None or spec.relation in relative_position(
                object_box(objects[0].shape, cells[0]), object_box(objects[1].shape, cells[1])):
            break
    layout = [0] * POSITIONS
    for obj, color, cell in zip(objects, colors, cells):
        layout[cell] = object_token(obj.shape, color)
    return layout


# n random (prompt, layout) pairs with tasks drawn uniformly, deterministic from `seed`.
def sample_batch(n: int, seed: int) -> tuple[Tensor, list[str]]:
    rng = random.Random(seed)
    specs = [random_prompt(rng.choice(TASKS), rng) for _ in range(n)]
    layouts = [sample_layout(s, rng) for s in specs]
    return torch.tensor(layouts, dtype=torch.long), [prompt_text(s) for s in specs]


# n random prompts with tasks drawn uniformly, deterministic from `seed`.
def sample_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [prompt_text(random_prompt(rng.choice(TASKS), rng)) for _ in range(n)]


# The i-th evaluation prompt: task TASKS[i mod 6], drawn from a stream of its own, so the first
# n evaluation prompts do not depend on n.
def eval_prompt(i: int) -> str:
    return prompt_text(random_prompt(TASKS[i % len(TASKS)], random.Random(f"shapes-eval-{i}")))


# The first n evaluation prompts (balanced over the six tasks).
def eval_prompts(n: int) -> list[str]:
    return [eval_prompt(i) for i in range(n)]


# Every prompt the grammar can produce, in a fixed order.
@lru_cache(maxsize=None)
def all_prompts() -> tuple[str, ...]:
    out: list[PromptSpec] = [PromptSpec("single_object", (ObjectSpec(s),)) for s in SHAPES]
    pairs = [(a, b) for a in SHAPES for b in SHAPES if a != b]
    out += [PromptSpec("two_object", (ObjectSpec(a), ObjectSpec(b))) for a, b in pairs]
    out += [PromptSpec("counting", (ObjectSpec(s),), count=n) for n in NUMBERS.values() for s in SHAPES]
    out += [PromptSpec("colors", (ObjectSpec(s, c),)) for s in SHAPES for c in COLORS]
    out += [PromptSpec("position", (ObjectSpec(a), ObjectSpec(b)), relation=r) for a, b in pairs for r in RELATIONS]
    out += [PromptSpec("color_attr", (ObjectSpec(a, ca), ObjectSpec(b, cb))) for a, b in pairs
            for ca in COLORS for cb in COLORS if ca != cb]
    return tuple(prompt_text(s) for s in out)


#----------------------------------------------------------------------------
# Rendering (the fixed "tokenizer decoder").


# The rendered 4x4 RGB patch of every token value: [NUM_TOKENS, 3, CELL, CELL] (token 0 is background).
@lru_cache(maxsize=None)
def token_patches() -> Tensor:
    patches = torch.zeros(NUM_TOKENS, 3, CELL, CELL)
    for token in range(1, NUM_TOKENS):
        shape, color = token_object(token)
        rgb = torch.tensor(PALETTE[1 + COLORS.index(color)])
        for y, row in enumerate(TEMPLATES[shape]):
            for x, on in enumerate(row):
                if on:
                    patches[token, :, y, x] = rgb
    return patches


def _cells_to_image(cells: Tensor) -> Tensor:
    # [B, GRID*GRID, 3, CELL, CELL] -> [B, 3, SIDE, SIDE]
    b = cells.shape[0]
    x = cells.view(b, GRID, GRID, 3, CELL, CELL).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, 3, SIDE, SIDE)


# Render layout tokens [B, POSITIONS] to images [B, 3, SIDE, SIDE] in [0, 1].
def render(layouts: Tensor) -> Tensor:
    return _cells_to_image(token_patches().to(layouts.device)[layouts])


# The expected rendering of token distributions [B, POSITIONS, NUM_TOKENS]: sum_j p_j patch_j per
# cell (exactly `render` on one-hot distributions).
def render_soft(probs: Tensor) -> Tensor:
    patches = token_patches().to(probs.device, probs.dtype).flatten(1)
    b = probs.shape[0]
    return _cells_to_image((probs @ patches).view(b, POSITIONS, 3, CELL, CELL))


#----------------------------------------------------------------------------
# Reference distributions.


# Per-cell token frequencies [POSITIONS, NUM_TOKENS] of `samples` scenes of one prompt, drawn from a
# stream seeded by the prompt (the "prompt-conditioned marginals" baseline).
@lru_cache(maxsize=4096)
def prompt_marginals(prompt: str, samples: int = 256) -> Tensor:
    rng = random.Random(f"shapes-marginals-{prompt}")
    spec = parse_prompt(prompt)
    layouts = torch.tensor([sample_layout(spec, rng) for _ in range(samples)], dtype=torch.long)
    return torch.nn.functional.one_hot(layouts, NUM_TOKENS).float().mean(0)
