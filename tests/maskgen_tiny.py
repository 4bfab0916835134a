"""A tiny MaskGen teacher on disk, for tests: the parity fixtures' tiny MaskGen-VQ and TA-TiTok
files (released key layout) plus a tiny random OpenAI-style CLIP written in open_clip's formats
(model-config JSON, full-model safetensors with `visual.*`), so every file goes through the same
loaders a user's released files do.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from softdimo.teachers.maskgen import MaskGenConfig

FIXTURES = Path(__file__).parent / "fixtures" / "parity" / "maskgen"
MASKGEN_FILE = FIXTURES / "maskgen_vq_tiny_state_dict.safetensors"
TATITOK_FILE = FIXTURES / "tatitok_vq_tiny_state_dict.safetensors"

# Text tower matching the tiny MaskGen / TA-TiTok: width = embed dim = 32, context 7 (the BPE
# vocabulary is open_clip's, hence the full vocab size).
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 7, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}

PROMPTS = ("a red cube on a table", "two dogs in the snow", "a painting of a lighthouse")


# Write the tiny CLIP config and seeded random full-CLIP weights; returns (config, weights) paths.
def write_tiny_clip(directory: Path, seed: int = 5) -> tuple[Path, Path]:
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.model.CLIP(TINY_CLIP_CONFIG["embed_dim"], TINY_CLIP_CONFIG["vision_cfg"],
                                 TINY_CLIP_CONFIG["text_cfg"], quick_gelu=True)
    with torch.no_grad():  # make LayerNorm affine parameters non-trivial too
        for name, p in model.named_parameters():
            if "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    config_path, weights_path = directory / "tiny_clip.json", directory / "tiny_clip.safetensors"
    config_path.write_text(json.dumps(TINY_CLIP_CONFIG))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights_path))
    return config_path, weights_path


# Write prompt files and the tiny CLIP; returns a `teacher.*` configuration of the tiny teacher.
def tiny_maskgen_config(directory: Path, prompts: Sequence[str] = PROMPTS) -> MaskGenConfig:
    clip_config, clip_weights = write_tiny_clip(directory)
    prompt_file = directory / "prompts.txt"
    prompt_file.write_text("\n".join(prompts) + "\n\n")
    return MaskGenConfig(size="tiny", generator_weights=str(MASKGEN_FILE),
                         tokenizer_weights=str(TATITOK_FILE), text_encoder=str(clip_config),
                         text_encoder_weights=str(clip_weights), train_prompts=str(prompt_file),
                         eval_prompts=str(prompt_file))
