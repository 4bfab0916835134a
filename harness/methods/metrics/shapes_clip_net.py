"""shapes-clip-v1: a small contrastive image-text model of the shapes world (the CLIP / HPS
analogue behind the `shapes_clip` reward and metric), and how it was trained; shapes-clip-heldout-v1
is the same model trained from other seeds, the independent score a run that optimises
shapes-clip-v1 is also measured with (`shapes_clip_heldout`).

An image encoder (two convolutions, the second cell-sized with stride 4, then an MLP) and a text
encoder (word and position embeddings, two pre-LN transformer layers, mean over the words) map
into a shared 64-d space; the score of a pair is the cosine of the two embeddings. Training is
CLIP's symmetric InfoNCE on freshly rendered (prompt, scene) pairs, with every identical prompt in
the batch counted as a positive, plus one contradicting prompt per image as an extra text
negative (another colour, shape, count or the opposite relation), so that colour binding,
counting and position matter to the score. It never sees the exact checker.

The weights are committed (`harness/metrics/weights/`) so that the sha256 in every protocol is
the same on every machine; `python -m harness.methods.metrics.shapes_clip_net [--model heldout]`
re-trains them (deterministic on one machine, 1 thread) and prints held-out accuracies and the hash.
"""
from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from harness.store.assets import sha256_file
from softdimo.data import shapes as world
from softdimo.files import atomic_write

WEIGHTS_DIR = Path(__file__).parent / "weights"
EMBED_DIM = 64
TRAIN_STEPS = 1500
TRAIN_BATCH = 256
TRAIN_LR = 2e-3

#----------------------------------------------------------------------------


# One committed model: its name, weights file and training seed (batches are seeded from it too).
@dataclass(frozen=True)
class ClipModelSpec:
    name: str
    filename: str
    seed: int


MODELS = {"v1": ClipModelSpec("shapes-clip-v1", "shapes_clip_v1.safetensors", seed=7),
          "heldout": ClipModelSpec("shapes-clip-heldout-v1", "shapes_clip_heldout_v1.safetensors", seed=11)}
NAME = MODELS["v1"].name

#----------------------------------------------------------------------------


# Images [B, 3, 16, 16] in [0, 1] -> unit embeddings [B, EMBED_DIM].
class ShapesImageEncoder(nn.Module):
    def __init__(self, width: int = 32, cell_width: int = 64, dim: int = EMBED_DIM):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(width, cell_width, world.CELL, stride=world.CELL), nn.GELU())
        self.mlp = nn.Sequential(nn.Linear(cell_width * world.POSITIONS, 256), nn.GELU(), nn.Linear(256, dim))

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.mlp(self.conv(images * 2.0 - 1.0).flatten(1)), dim=-1)


# Word ids [B, PROMPT_LEN] -> unit embeddings [B, EMBED_DIM] (mean over non-pad words).
class ShapesTextEncoder(nn.Module):
    def __init__(self, d: int = 64, layers: int = 2, heads: int = 4, dim: int = EMBED_DIM):
        super().__init__()
        self.tok = nn.Embedding(len(world.VOCAB), d)
        self.pos = nn.Parameter(torch.randn(1, world.PROMPT_LEN, d) * 0.5)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.proj = nn.Linear(d, dim)

    def forward(self, ids: Tensor) -> Tensor:
        pad = ids == world.WORD_ID[world.PAD]
        x = self.blocks(self.tok(ids) + self.pos[:, : ids.shape[1]], src_key_padding_mask=pad)
        keep = (~pad).float()[..., None]
        pooled = (self.norm(x) * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return F.normalize(self.proj(pooled), dim=-1)


# The two encoders and CLIP's learned logit scale.
class ShapesClip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image = ShapesImageEncoder()
        self.text = ShapesTextEncoder()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    # Cosine similarity [B] of each image with its own prompt (word ids).
    def similarity(self, images: Tensor, ids: Tensor) -> Tensor:
        return (self.image(images) * self.text(ids)).sum(-1)


#----------------------------------------------------------------------------
# Training.


# A prompt that the scene of `spec` contradicts: one fact changed (colour, shape, count, relation).
def contradicting_prompt(spec: world.PromptSpec, rng: random.Random) -> str:
    objects = list(spec.objects)
    if spec.task == "counting":
        count = rng.choice([n for n in world.NUMBERS.values() if n != spec.count])
        if rng.random() < 0.5:
            return world.prompt_text(replace(spec, count=count))
    if spec.task == "position" and rng.random() < 0.5:
        opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
        return world.prompt_text(replace(spec, relation=opposite[spec.relation]))
    if spec.task == "color_attr" and rng.random() < 0.5:
        a, b = objects
        return world.prompt_text(replace(spec, objects=(replace(a, color=b.color), replace(b, color=a.color))))
    i = rng.randrange(len(objects))
    if objects[i].color is not None and rng.random() < 0.5:
        used = {o.color for o in objects}
        objects[i] = replace(objects[i], color=rng.choice([c for c in world.COLORS if c not in used]))
    else:
        used = {o.shape for o in objects}
        objects[i] = replace(objects[i], shape=rng.choice([s for s in world.SHAPES if s not in used]))
    return world.prompt_text(replace(spec, objects=tuple(objects)))


# (images, prompt ids, contradicting prompt ids, positives [B, B]) of one fresh training batch.
def training_batch(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    tokens, prompts = world.sample_batch(n, seed)
    rng = random.Random(seed + 1)
    negatives = [contradicting_prompt(world.parse_prompt(p), rng) for p in prompts]
    ids = world.tokenize(prompts)
    same = (ids[:, None, :] == ids[None, :, :]).all(-1).float()
    return world.render(tokens), ids, world.tokenize(negatives), same


# CLIP's symmetric InfoNCE with multiple positives (identical prompts) and extra text negatives.
def contrastive_loss(model: ShapesClip, images: Tensor, ids: Tensor, neg_ids: Tensor, same: Tensor) -> Tensor:
    img, txt, neg = model.image(images), model.text(ids), model.text(neg_ids)
    scale = model.logit_scale.exp().clamp(max=100.0)
    targets = same / same.sum(1, keepdim=True)
    i2t = scale * img @ torch.cat([txt, neg]).T
    t2i = scale * txt @ img.T
    i2t_targets = torch.cat([targets, torch.zeros_like(targets)], dim=1)
    return 0.5 * (torch.sum(-i2t_targets * F.log_softmax(i2t, 1), 1).mean()
                  + torch.sum(-targets * F.log_softmax(t2i, 1), 1).mean())


# Train one model deterministically from its seed (1 thread); returns it in eval mode.
def train_clip(spec: ClipModelSpec = MODELS["v1"], steps: int = TRAIN_STEPS,
               log: Callable[[str], None] = print) -> ShapesClip:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(spec.seed)
        model = ShapesClip()
        opt = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR, weight_decay=0.01)
        start = time.time()
        for step in range(steps):
            lr = TRAIN_LR * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
            for group in opt.param_groups:
                group["lr"] = lr
            loss = contrastive_loss(model, *training_batch(TRAIN_BATCH, spec.seed * 1_000_003 + step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 250 == 0 or step == steps - 1:
                log(f"{spec.name} step {step}/{steps} loss {loss.item():.4f} ({time.time() - start:.0f}s)")
        return model.eval()
    finally:
        torch.set_num_threads(threads)


# Held-out checks: how often an image scores its own prompt above a contradicting one, per task,
# and image-to-prompt retrieval accuracy among all prompts of the grammar.
@torch.no_grad()
def held_out_accuracy(model: ShapesClip, n: int = 1200, seed: int = 99) -> dict[str, float]:
    tokens, prompts = world.sample_batch(n, seed)
    rng = random.Random(seed)
    specs = [world.parse_prompt(p) for p in prompts]
    images = world.render(tokens)
    own = model.similarity(images, world.tokenize(prompts))
    other = model.similarity(images, world.tokenize([contradicting_prompt(s, rng) for s in specs]))
    out = {}
    for task in world.TASKS:
        idx = [i for i, s in enumerate(specs) if s.task == task]
        out[f"pair_{task}"] = float((own[idx] > other[idx]).float().mean())
    grammar = list(world.all_prompts())
    sims = model.image(images) @ model.text(world.tokenize(grammar)).T
    out["retrieval_top1"] = float(sum(grammar[j] == p for j, p in zip(sims.argmax(1).tolist(), prompts)) / n)
    return out


#----------------------------------------------------------------------------
# Loading.


_loaded: dict[str, tuple[ShapesClip, str]] = {}


# A committed model ("v1" or "heldout") in eval mode (frozen), with its weights' sha256.
def load_clip(key: str = "v1") -> tuple[ShapesClip, str]:
    if key not in _loaded:
        spec = MODELS[key]
        path = WEIGHTS_DIR / spec.filename
        if not path.is_file():
            raise FileNotFoundError(f"shapes network {spec.name} missing at {path}; re-create it with "
                                    f"`python -m harness.methods.metrics.shapes_clip_net --model {key}`")
        model = ShapesClip()
        model.load_state_dict(load_file(str(path)))
        _loaded[key] = (model.eval().requires_grad_(False), sha256_file(path))
    return _loaded[key]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Re-train a shapes contrastive network.")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--model", choices=sorted(MODELS), default="v1")
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    spec = MODELS[args.model]
    model = train_clip(spec, args.steps)
    path = args.out / spec.filename
    atomic_write(path, lambda tmp: save_file(model.state_dict(), str(tmp)))
    print(f"{spec.name} sha256 {sha256_file(path)} held-out {held_out_accuracy(model)}")


if __name__ == "__main__":
    main()
