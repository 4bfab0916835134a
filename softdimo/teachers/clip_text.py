"""Prompt -> CLIP text features for MaskGen (docs/maskgen.md), from local open_clip weights.

Only the architecture config, the text tower module and the BPE tokenizer come from open_clip; the
block loop and the EOT pooling are done here, because both changed across open_clip releases
(3.x `text_global_pool` returns one tensor where MaskGen's code unpacks two; 2.x switched the text
blocks to batch-first). Three features per prompt:

- `seq`: hidden states after the first L-1 of L blocks (penultimate layer, no `ln_final`),
  [B, T, width]: MaskGen's context stream.
- `pooled`: `ln_final` of the last layer at the EOT position (argmax of the token ids), times
  `text_projection`, [B, embed_dim]: MaskGen's pooled condition (before the aesthetic sinusoid).
- `final`: `ln_final` of the last layer, [B, T, width]: the TA-TiTok decoder's text guidance.

The architecture is an open_clip model name (`ViT-L-14-336`) or the path of a JSON file in
open_clip's model-config format; weights are a local safetensors file or weights-only torch
pickle of a full CLIP (open_clip or OpenAI key names; `visual.*` is dropped) or of the text tower,
or a Hugging Face transformers `CLIPTextModel(WithProjection)` file (`text_model.*`,
`text_projection.weight`; Meissonic's `text_encoder/model.safetensors`), renamed on load. The
transformers text model computes the same function: `hidden_states[-2]` is `seq`, `text_embeds`
is `pooled` (its EOT pooling takes the first end-of-text token, the argmax for CLIP's BPE ids).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from softdimo.teachers.weights import CheckpointError, load_strict, read_state_dict

# Keys of a full CLIP checkpoint that belong to neither tower (or are OpenAI metadata).
_NON_TEXT_KEYS = {"logit_scale", "logit_bias", "input_resolution", "context_length", "vocab_size"}

#----------------------------------------------------------------------------


# The three text features of a batch of prompts (see the module docstring).
@dataclass
class TextFeatures:
    seq: Tensor
    pooled: Tensor
    final: Tensor


# A frozen OpenAI-style CLIP text tower with its tokenizer.
class ClipTextEncoder(nn.Module):
    def __init__(self, tower: nn.Module, tokenizer: Any, model_name: str):
        super().__init__()
        self.tower = tower
        self.tokenizer = tokenizer
        self.model_name = model_name

    @property
    def width(self) -> int:
        return self.tower.transformer.width

    @property
    def context_length(self) -> int:
        return self.tower.positional_embedding.shape[0]

    @property
    def embed_dim(self) -> int:
        proj = self.tower.text_projection
        return proj.shape[1] if isinstance(proj, nn.Parameter) else proj.out_features

    # Prompts -> BPE token ids [B, T] (start, text, end-of-text, zero padding; truncated to T).
    def tokenize(self, prompts: Sequence[str]) -> Tensor:
        return self.tokenizer(list(prompts)).to(self.tower.positional_embedding.device)

    # Token ids [B, T] -> (seq, pooled, final) features.
    def forward(self, ids: Tensor) -> TextFeatures:
        t = self.tower
        x = t.token_embedding(ids) + t.positional_embedding
        blocks = list(t.transformer.resblocks)
        seq_first = not getattr(blocks[0].attn, "batch_first", True)
        if seq_first:
            x = x.transpose(0, 1)
        for block in blocks[:-1]:
            x = block(x, attn_mask=t.attn_mask)
        penultimate = x
        x = t.ln_final(blocks[-1](x, attn_mask=t.attn_mask))
        if seq_first:
            penultimate, x = penultimate.transpose(0, 1), x.transpose(0, 1)
        eot = x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]
        proj = t.text_projection
        pooled = eot @ proj if isinstance(proj, nn.Parameter) else proj(eot)
        return TextFeatures(seq=penultimate, pooled=pooled, final=x)

    # Prompts -> features, without gradients.
    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> TextFeatures:
        return self(self.tokenize(prompts))


#----------------------------------------------------------------------------


# (embed_dim, text_cfg, quick_gelu) of an open_clip model name or model-config JSON file.
def open_clip_text_config(model: str) -> tuple[int, dict[str, Any], bool]:
    import open_clip

    path = Path(model).expanduser()
    if model.endswith(".json"):
        if not path.is_file():
            raise CheckpointError(f"CLIP text encoder: model config {path} does not exist")
        cfg = json.loads(path.read_text())
        cfg = cfg.get("model_cfg", cfg)
    else:
        cfg = open_clip.get_model_config(model)
        if cfg is None:
            raise CheckpointError(f"CLIP text encoder: {model!r} is neither an open_clip model name "
                               f"nor a .json model config; e.g. ViT-L-14-336")
    if "embed_dim" not in cfg or "text_cfg" not in cfg:
        raise CheckpointError(f"CLIP text encoder: config of {model!r} lacks 'embed_dim' or 'text_cfg'")
    text_cfg = dict(cfg["text_cfg"])
    unsupported = {k: text_cfg[k] for k in ("hf_model_name", "hf_tokenizer_name", "embed_cls",
                                            "no_causal_mask", "final_ln_after_pool")
                   if text_cfg.get(k)}
    if text_cfg.get("pool_type", "argmax") != "argmax":
        unsupported["pool_type"] = text_cfg["pool_type"]
    if unsupported:
        raise CheckpointError(f"CLIP text encoder {model!r}: only OpenAI-style text towers (causal, "
                           f"BPE tokenizer, argmax EOT pooling) are supported; got {unsupported}")
    return int(cfg["embed_dim"]), text_cfg, bool(cfg.get("quick_gelu", False))


# Text-tower entries of a CLIP checkpoint, named as in open_clip's `TextTransformer`.
def text_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    if any(k.startswith("text_model.") for k in state):
        return _from_transformers(state)
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("visual.") or key in _NON_TEXT_KEYS:
            continue
        out[key.removeprefix("text.")] = value
    return out


# transformers `CLIPTextModel(WithProjection)` keys -> open_clip names: q/k/v stacked into
# `in_proj_*`, the projection transposed; the `position_ids` buffer of older files dropped. Keys
# that match no rule keep their name, so a strict load reports them.
def _from_transformers(state: dict[str, Tensor]) -> dict[str, Tensor]:
    renames = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
               "text_model.embeddings.position_embedding.weight": "positional_embedding",
               "text_model.final_layer_norm.": "ln_final.", "text_model.encoder.layers.": "transformer.resblocks."}
    parts = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key == "text_model.embeddings.position_ids":
            continue
        if key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
            continue
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        for old, new in parts.items():
            key = key.replace(f".{old}.", f".{new}.")
        for proj in ("q_proj", "k_proj", "v_proj"):
            if f".self_attn.{proj}." in key:
                prefix, kind = key.split(f".self_attn.{proj}.")
                qkv.setdefault(f"{prefix}.attn.in_proj_{kind}", {})[proj] = value
                break
        else:
            out[key] = value
    for key, pieces in qkv.items():
        if set(pieces) != {"q_proj", "k_proj", "v_proj"}:
            raise CheckpointError(f"CLIP text encoder: {key} needs q_proj, k_proj and v_proj; got {sorted(pieces)}")
        out[key] = torch.cat([pieces["q_proj"], pieces["k_proj"], pieces["v_proj"]])
    return out


# Build the text tower of `model` and strictly load its weights from a local file; `quick_gelu`
# forces QuickGELU (the OpenAI weights were trained with it; open_clip sets it per pretrained tag).
def build_clip_text_encoder(model: str, weights: str | Path, quick_gelu: bool = True) -> ClipTextEncoder:
    from open_clip.model import _build_text_tower
    from open_clip.tokenizer import SimpleTokenizer

    embed_dim, text_cfg, cfg_quick_gelu = open_clip_text_config(model)
    state = text_state_dict(read_state_dict(weights, "CLIP text encoder"))
    tower = _build_text_tower(embed_dim, text_cfg, quick_gelu=quick_gelu or cfg_quick_gelu)
    load_strict(tower, state, f"CLIP text encoder: {weights}")
    tokenizer = SimpleTokenizer(context_length=tower.positional_embedding.shape[0])
    return ClipTextEncoder(tower, tokenizer, model).eval().requires_grad_(False)
