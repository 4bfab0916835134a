"""A tiny Meissonic teacher on disk, for tests: the parity fixtures' tiny transformer and VQ-VAE
files (released key layouts) and the fixtures' tiny CLIP text encoder (transformers layout) with
its token table widened to CLIP's BPE vocabulary, so prompts go through open_clip's tokenizer and
every file goes through the loaders a user's released files do.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from softdimo.teachers.meissonic import MeissonicConfig

FIXTURES = Path(__file__).parent / "fixtures" / "parity" / "meissonic"
TRANSFORMER_FILE = FIXTURES / "meissonic_transformer_tiny_state_dict.safetensors"
VQVAE_FILE = FIXTURES / "meissonic_vqvae_tiny_state_dict.safetensors"
CLIP_FILE = FIXTURES / "meissonic_clip_text_tiny_state_dict.safetensors"

PROMPTS = ("a red cube on a table", "two dogs in the snow", "a painting of a lighthouse")
BPE_VOCAB = 49408


# open_clip model-config JSON of a text tower shaped like the fixture's CLIPTextConfig.
def clip_config(vocab_size: int) -> dict:
    text = json.loads((FIXTURES / "tiny_config.json").read_text())["text_encoder"]
    return {"embed_dim": text["projection_dim"],
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16},
            "text_cfg": {"context_length": text["max_position_embeddings"], "vocab_size": vocab_size,
                         "width": text["hidden_size"], "heads": text["num_attention_heads"],
                         "layers": text["num_hidden_layers"]}}


# Write the fixture CLIP with a BPE-sized token table (fixture rows first, seeded rows after) and its
# open_clip config; returns (config, weights) paths.
def write_tiny_clip(directory: Path, seed: int = 5) -> tuple[Path, Path]:
    from safetensors.torch import load_file, save_file

    state = load_file(str(CLIP_FILE))
    key = "text_model.embeddings.token_embedding.weight"
    table = state[key]
    extra = 0.5 * torch.randn(BPE_VOCAB - table.shape[0], table.shape[1], generator=torch.Generator().manual_seed(seed))
    state[key] = torch.cat([table, extra])
    config_path, weights_path = directory / "tiny_clip.json", directory / "tiny_clip.safetensors"
    config_path.write_text(json.dumps(clip_config(BPE_VOCAB)))
    save_file(state, str(weights_path))
    return config_path, weights_path


# Write prompt files and the tiny CLIP; returns a `teacher.*` configuration of the tiny teacher.
def tiny_meissonic_config(directory: Path, prompts: Sequence[str] = PROMPTS, **overrides) -> MeissonicConfig:
    clip_json, clip_weights = write_tiny_clip(directory)
    prompt_file = directory / "prompts.txt"
    prompt_file.write_text("\n".join(prompts) + "\n")
    fields = dict(size="tiny", transformer_weights=str(TRANSFORMER_FILE), vqvae_weights=str(VQVAE_FILE),
                  text_encoder=str(clip_json), text_encoder_weights=str(clip_weights),
                  train_prompts=str(prompt_file), eval_prompts=str(prompt_file))
    return MeissonicConfig(**{**fields, **overrides})
