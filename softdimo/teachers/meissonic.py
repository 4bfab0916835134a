"""Meissonic (arXiv 2410.08261, 1024 px text-to-image MDM) as a Di[M]O / Soft-Di[M]O teacher.

Three released components of the Hugging Face repository `MeissonFlow/Meissonic`, each loaded
strictly from a local file: the transformer (`meissonic_transformer.py`), the VQ decoder
(`vq_decoder.py`) and the CLIP ViT-H/14 text encoder (`clip_text.py`, transformers layout). The
tokenizer is open_clip's copy of CLIP's BPE vocabulary (padding with "!", id 0, as the 460-byte
`tokenizer/special_tokens_map.json` of the release, the SDXL `tokenizer_2` one, says).

How Meissonic is conditioned, as its pipeline and Di[M]O's `train_DIMO_Meissonic.py` /
`sample_Meissonic.py` call it: the prompt is tokenised to 77 ids; the context stream is the
text encoder's penultimate hidden states (`hidden_states[-2]`), the pooled vector its projected
EOT feature (`text_embeds`); micro-conditions [1024, 1024, 0, 0, aesthetic 6.0]; `timestep` 0
in distillation (Di[M]O passes int(ratio) * 1000 = 0), the step index in the sampler. The null
condition of CFG is the negative prompt (Di[M]O `distil_neg_prompt: True`; the pipeline's
`negative_prompt`), stored in the network like MaskGen's empty prompt.

Sampler (Meissonic `Pipeline` + `Scheduler`): K steps, all tokens masked at the start; at step i
(timestep K-1-i) CFG z_neg + g (z_c - z_neg); tokens drawn from softmax(z) at masked positions;
confidence log p(drawn) + tau_i Gumbel (known tokens never re-masked), tau_i = linspace(2, 0, K);
the floor(L cos(pi/2 (i+1)/K)) least confident (clamped to [1, masked - 1]) re-masked; the last
step keeps every draw.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from softdimo.params import param
from softdimo.teachers.base import Condition, ImageNoise, guided_logits
from softdimo.teachers.clip_text import ClipTextEncoder, build_clip_text_encoder
from softdimo.teachers.meissonic_transformer import MEISSONIC_ARCHS, MeissonicArch, MeissonicNetwork
from softdimo.teachers.text_conditioned import PromptFiles, TextConditioned
from softdimo.teachers.vq_decoder import VQ_DECODER_ARCHS, VQDecoder, load_vq_decoder
from softdimo.teachers.weights import CheckpointError, build_uninitialised, load_strict, read_state_dict

# The negative prompt of Meissonic's inference script and of Di[M]O's distillation and validation.
NEGATIVE_PROMPT = ("worst quality, low quality, low res, blurry, distortion, watermark, logo, signature, "
                   "text, jpeg artifacts, signature, sketch, duplicate, ugly, identifying mark")

#----------------------------------------------------------------------------


# Build the Meissonic transformer and strictly load a released `transformer` file.
def load_meissonic_network(path: str | Path, arch: MeissonicArch,
                           image_shape: tuple[int, int, int] = (3, 1024, 1024)) -> MeissonicNetwork:
    state = read_state_dict(path, "Meissonic transformer")
    network = build_uninitialised(lambda: MeissonicNetwork(arch, image_shape))
    load_strict(network, state, f"Meissonic transformer: {path}")
    return network.eval().requires_grad_(False)


#----------------------------------------------------------------------------
# Sampling (upstream `Pipeline.__call__` and `Scheduler.step`).


# Tokens re-masked after step i of K: floor(L cos(pi/2 (i+1)/K)) in float32 as upstream, clamped
# to [1, masked - 1] per image ([B] long).
def remask_count(seq_len: int, step: int, steps: int, masked: Tensor) -> Tensor:
    ratio = torch.tensor(step + 1, dtype=torch.float32) / steps
    n = torch.floor(seq_len * torch.cos(ratio * math.pi / 2)).to(masked.device)
    return torch.clamp(torch.minimum(masked - 1, n.long()), min=1)


# The re-masking of one step: confidence log p(drawn) + tau * gumbel at masked positions (known
# tokens get the float max), the `count` least confident per image set back to the mask.
def remask(probs: Tensor, drawn: Tensor, ids: Tensor, mask_id: int, count: Tensor, tau: Tensor | float,
           gumbel: Tensor) -> Tensor:
    unknown = ids == mask_id
    chosen = probs.gather(-1, drawn[..., None])[..., 0]
    chosen = torch.where(unknown, chosen, torch.finfo(chosen.dtype).max)
    confidence = torch.log(chosen.clamp(1e-20)) + tau * gumbel
    cutoff = confidence.sort(dim=-1).values.gather(1, count[:, None])
    return torch.where(confidence < cutoff, torch.full_like(drawn, mask_id), drawn)


# One categorical draw per token from probs [B, L, C] by inverse CDF with uniforms u [B, L]
# (the distribution of upstream's `torch.multinomial`).
def draw_categorical(probs: Tensor, u: Tensor) -> Tensor:
    cdf = probs.cumsum(dim=-1)
    target = (u * cdf[..., -1])[..., None]
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


# K-step Meissonic sampler with per-image noise -> tokens [B, L, 1]. `guidance` is the pipeline's
# guidance scale g (CFG only when g > 1); `choice_temperature` the start of the linear 2 -> 0
# Gumbel temperature; `temperature` divides the logits (1 = upstream).
@torch.no_grad()
def meissonic_sample(network: MeissonicNetwork, cond: Condition, noise: ImageNoise, steps: int = 64,
                     guidance: float = 9.0, temperature: float = 1.0, choice_temperature: float = 2.0) -> Tensor:
    layout = network.layout
    b, length = len(noise), layout.positions
    if cond.batch_size != b:
        raise ValueError(f"condition batch {cond.batch_size} != noise streams {b}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    device = network.token_embedding.embeddings.weight.device
    ids = torch.full((b, length), layout.mask_id, dtype=torch.long, device=device)
    taus = torch.linspace(choice_temperature, 0.0, steps)
    w = guidance if guidance > 1.0 else 1.0
    for step in range(steps):
        timestep = torch.full((b,), float(steps - 1 - step), device=device)
        cond_t = Condition(cond.kind, dict(cond.tensors, timestep=timestep), cond.raw)
        logits = guided_logits(network, network.embed(ids[..., None]), cond_t, w).logits[:, :, 0] / temperature
        probs = F.softmax(logits.float(), dim=-1)
        unknown = ids == layout.mask_id
        drawn = torch.where(unknown, draw_categorical(probs, noise.rand(length).to(device)), ids)
        if step == steps - 1:
            break
        count = remask_count(length, step, steps, unknown.sum(dim=1))
        ids = remask(probs, drawn, ids, layout.mask_id, count, taus[step].item(), noise.gumbel(length).to(device))
    return drawn[..., None]


#----------------------------------------------------------------------------


# Configuration of the `meissonic` teacher (grid keys `teacher.*`).
@dataclass(frozen=True)
class MeissonicConfig(PromptFiles):
    size: str = param("full", choices=tuple(MEISSONIC_ARCHS), help="Meissonic size (tiny: tests only)")
    transformer_weights: str = param("", help="transformer: asset name or file; empty = asset meissonic_transformer")
    vqvae_weights: str = param("", help="VQ-VAE: asset name or file; empty = asset meissonic_vqvae")
    text_encoder_weights: str = param("", help="CLIP text encoder: asset name or file; empty = asset "
                                      "meissonic_text_encoder")
    text_encoder: str = param("ViT-H-14", help="open_clip model name or config JSON of the text tower")
    negative_prompt: str = param(NEGATIVE_PROMPT, help="CFG null condition (Di[M]O distil_neg_prompt); '' = empty")
    aesthetic_score: float = param(6.0, lo=0.0, hi=10.0, help="micro-condition (Di[M]O 6.0)")


# Meissonic transformer + VQ decoder + CLIP text encoder as a `Teacher` (condition kind "text").
class MeissonicTeacher(TextConditioned):
    name = "meissonic"
    condition_kind = "text"

    def __init__(self, network: MeissonicNetwork, decoder: VQDecoder, text_encoder: ClipTextEncoder,
                 config: MeissonicConfig):
        _check_compatible(network.arch, decoder, text_encoder)
        self.network, self.decoder, self.text_encoder = network, decoder, text_encoder
        self.config = config
        self.layout = network.layout
        null = text_encoder.encode([config.negative_prompt])
        network.set_null_condition(null.seq[0], null.pooled[0])

    # Prompts -> Condition: CLIP seq / pooled, micro-conditions, timestep 0 (Di[M]O's value).
    def encode_condition(self, raw: Sequence[Any]) -> Condition:
        prompts = self.prompts_of(raw)
        f = self.text_encoder.encode(prompts)
        _, height, width = self.layout.image_shape
        micro = torch.tensor([[width, height, 0.0, 0.0, self.config.aesthetic_score]], device=f.seq.device)
        return Condition("text", {"seq": f.seq, "pooled": f.pooled, "micro": micro.expand(len(prompts), -1),
                                  "timestep": torch.zeros(len(prompts), device=f.seq.device)}, prompts)

    # Hard tokens [B, L, 1] -> images [B, 3, H, W] in [0, 1]; the condition is not used.
    def decode(self, tokens: Tensor, cond: Condition | None = None) -> Tensor:
        return self.decoder.decode_tokens(tokens[..., 0]).clamp(0.0, 1.0)

    # Token distributions [B, L, 1, C] -> images: p @ codebook into the decoder (differentiable).
    def decode_soft(self, probs: Tensor, cond: Condition | None = None) -> Tensor:
        return self.decoder.decode_probs(probs[..., 0, :]).clamp(0.0, 1.0)

    # The released sampler: 64 steps, guidance 9 against the negative prompt, Gumbel temperature
    # 2 -> 0 (`choice_temperature`), logits / `temperature` (1.0 = released). -> tokens [B, L, 1].
    def sample(self, cond: Condition, steps: int = 64, cfg: float = 9.0, noise: ImageNoise | None = None,
               temperature: float = 1.0, choice_temperature: float = 2.0) -> Tensor:
        if noise is None:
            raise ValueError("sample needs `noise` (an ImageNoise: one random stream per image)")
        return meissonic_sample(self.network, cond, noise, steps=steps, guidance=cfg, temperature=temperature,
                                choice_temperature=choice_temperature)


def _check_compatible(arch: MeissonicArch, decoder: VQDecoder, text: ClipTextEncoder) -> None:
    problems = []
    if decoder.arch.codebook_size != arch.codebook_size:
        problems.append(f"VQ codebook {decoder.arch.codebook_size} != transformer codebook {arch.codebook_size}")
    if text.width != arch.text_dim or text.embed_dim != arch.pooled_dim:
        problems.append(f"CLIP text width/projection {text.width}/{text.embed_dim}, the transformer expects "
                        f"{arch.text_dim}/{arch.pooled_dim}")
    if problems:
        raise CheckpointError("Meissonic components do not fit together: " + "; ".join(problems))


# Load the three components from local files and assemble the teacher on `device`.
def build_meissonic_teacher(config: MeissonicConfig, transformer_weights: str | Path, vqvae_weights: str | Path,
                            text_encoder_weights: str | Path, device: torch.device | str = "cpu") -> MeissonicTeacher:
    arch, vq_arch = MEISSONIC_ARCHS[config.size], VQ_DECODER_ARCHS[config.size]
    side = arch.grid * vq_arch.scale_factor
    network = load_meissonic_network(transformer_weights, arch, (3, side, side)).to(device)
    decoder = load_vq_decoder(vqvae_weights, vq_arch).to(device)
    text = build_clip_text_encoder(config.text_encoder, text_encoder_weights, quick_gelu=False).to(device)
    return MeissonicTeacher(network, decoder, text, config)
