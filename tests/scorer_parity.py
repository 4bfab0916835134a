"""Readers of the scorer parity fixtures (tests/fixtures/parity/{scorer_inputs,hps,clip_score,
image_reward,pickscore}/, each with a README saying how upstream code made it)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

PARITY = Path(__file__).resolve().parent / "fixtures" / "parity"
INPUTS = PARITY / "scorer_inputs"
# Float32 tolerances (tests/float_tolerance.py) of the tiny scorers of the fixtures (READMEs), as
# (sequential reductions, longest reduction). A score: the vision tower's patch embedding (14 x 14 x 3
# = 588 terms), 2 blocks of 9 reductions over at most 257 tokens, norms and projection, the text
# tower likewise, the cosine, and ImageReward's MLP head over up to 1024 units: 30 reductions.
SCORE = (30, 1024)
PIXELS = (3, 224 * 224)      # resampling, normalisation, then a sum over a 224 x 224 image
GRADIENT = (60, 224 * 224)   # a score's gradient (back through both towers), summed over an image


# The fixed images (PIL RGB, loaded) and their prompts; image i goes with prompt i.
def parity_inputs() -> tuple[list[Path], list[Image.Image], list[str]]:
    meta = json.loads((INPUTS / "prompts.json").read_text())
    paths = [INPUTS / name for name in meta["images"]]
    images = []
    for path in paths:
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    return paths, images, meta["prompts"]


# Images [3, H, W] in [0, 1] (ToTensor of the PIL images), one tensor per image (sizes differ).
def float_images(images: list[Image.Image]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
            for im in images]


# A stored state dict. Tables stored sparsely (`<key>.rows` int64 ids and `<key>.values`, full
# shape in the metadata `sparse_shape.<key>`) come back dense, zero outside the stored rows.
def load_state(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(str(path))
    state = {}
    for key, value in tensors.items():
        if key.endswith(".rows"):
            continue
        if key.endswith(".values"):
            name = key[:-len(".values")]
            shape = [int(s) for s in meta[f"sparse_shape.{name}"].split(",")]
            dense = torch.zeros(shape, dtype=value.dtype)
            dense[tensors[name + ".rows"]] = value
            state[name] = dense
        else:
            state[key] = value
    return state


# The CLIP BPE `tokenizer.json` of PickScore's processor: the stored skeleton (pipeline, special
# tokens) with the vocabulary and merges rebuilt from the BPE file open_clip ships.
def write_clip_tokenizer_json(path: Path) -> Path:
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    doc = json.loads((PARITY / "pickscore" / "tokenizer_skeleton.json").read_text())
    doc["model"]["vocab"] = {token: i for i, token in enumerate(vocab)}
    doc["model"]["merges"] = merges
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False))
    return path

