"""MaskGen-VQ (text-to-image MDM, TA-TiTok tokens) as a Di[M]O / Soft-Di[M]O teacher.

Own implementation whose `state_dict` matches the released `MaskGen_VQ` checkpoints
(`bytedance/1d-tokenizer`, docs/maskgen.md): `text_embed_proj`, `cond_pooled_proj`,
`blocks.{i}.*` (MM-DiT, see `mmdit.py`), `norm.linear`, `embeddings.weight` (codebook rows, the
mask row `codebook_size`, unused class rows, the "none condition" row), `pos_embed` and
`lm_head.weight`, which is the same tensor as `embeddings.weight` (logits = x E[:C]^T, no bias).

Differences from the upstream module, on purpose:
- Masking is always outside the module. Upstream `forward` re-masks its input itself in train
  mode (random arccos ratio), which would silently corrupt the auxiliary model psi trained in
  train mode; here `forward` is a pure function of its input embeddings in both modes.
- `forward` takes input embeddings (hard lookups from `embed`, or Soft-Di[M]O's expected
  embeddings from `embed_soft`) instead of token ids.
- The null (empty-prompt) text encoding lives in the network as a non-persistent buffer, so the
  `drop` rows of a batch (CFG, label dropout) need no second encoding pass, and deep copies of
  the network (theta, psi) carry it along (`text_conditioned.NullText`, as Meissonic's).

Conditioning (docs/maskgen.md): context stream = `text_embed_proj` of CLIP's penultimate hidden
states; c = `cond_pooled_proj`([pooled CLIP vector | 256-d sinusoid of aesthetic_score * 100]),
which drives every AdaLN and the final norm. There is no timestep or mask-ratio input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from softdimo.params import param
from softdimo.teachers.base import (Condition, ImageNoise, NetworkOutput, TokenLayout, check_hidden_layers,
                                    guided_logits)
from softdimo.teachers.clip_text import ClipTextEncoder, build_clip_text_encoder
from softdimo.teachers.mmdit import AdaLNContinuous, JointBlock
from softdimo.teachers.tatitok import TATITOK_ARCHS, TATiTok, load_tatitok
from softdimo.teachers.text_conditioned import NullText, PromptFiles, TextConditioned
from softdimo.teachers.weights import CheckpointError, build_uninitialised, load_strict, read_state_dict

#----------------------------------------------------------------------------


# Architecture of MaskGen-VQ (the `model.maskgen` and `model.vq_model` keys it reads upstream).
@dataclass(frozen=True)
class MaskGenArch:
    codebook_size: int = 8192           # C: image-token classes; C is also the mask id
    seq_len: int = 128                  # L: 1-D TA-TiTok tokens per image
    width: int = 1024
    depth: int = 16
    heads: int = 16
    text_dim: int = 768                 # CLIP text width (= pooled dim for ViT-L-14-336)
    micro_condition_dim: int = 256      # aesthetic sinusoid width; 0 = no micro-condition
    condition_num_classes: int = 1000   # unused class rows kept in `embeddings`

    @property
    def vocab_rows(self) -> int:
        return self.codebook_size + 1 + self.condition_num_classes + 1

    # Read the upstream nested config (HF `config.json` / infer YAML as a dict).
    @classmethod
    def from_upstream(cls, config: Mapping[str, Any]) -> "MaskGenArch":
        mg, vq = config["model"]["maskgen"], config["model"]["vq_model"]
        if not mg.get("weight_tying", True):
            raise ValueError("MaskGen configs without weight tying are not supported")
        return cls(codebook_size=vq["codebook_size"], seq_len=vq["num_latent_tokens"],
                   width=mg["decoder_embed_dim"], depth=mg["decoder_depth"],
                   heads=mg["decoder_num_heads"], text_dim=vq.get("text_embed_dim", 768),
                   micro_condition_dim=mg["micro_condition_embed_dim"] if mg["micro_condition"] else 0,
                   condition_num_classes=mg["condition_num_classes"])


# Released sizes (configs/infer/MaskGen/maskgen_vq_{l,xl}.yaml) and the parity fixtures' tiny one.
MASKGEN_ARCHS: dict[str, MaskGenArch] = {
    "L": MaskGenArch(),
    "XL": MaskGenArch(width=1280, depth=20),
    "tiny": MaskGenArch(codebook_size=32, seq_len=8, width=32, depth=2, heads=4, text_dim=32,
                        micro_condition_dim=16, condition_num_classes=10),
}
TOKENIZER_OF_SIZE = {"L": "bl128_vq", "XL": "bl128_vq", "tiny": "tiny"}


# Sinusoid of the aesthetic score (upstream `get_sinusoidal_encoding(score * 100)`): frequencies
# exp(-ln(1000) k / (dim/2)), k = 0..dim/2-1, laid out [sin | cos]. The exponents are float32 as
# upstream; exp is taken in float64 and rounded, so the frequencies do not depend on the CPU's
# vectorised float32 exp (a 1-ulp frequency error moves sin(650 f) by 3e-5).
def aesthetic_embedding(score: Tensor, dim: int, max_period: float = 1000.0) -> Tensor:
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=score.device) / half
    freqs = torch.exp(exponent.double()).float()
    args = (score * 100).float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


# Output head tied to the embedding table: logits = x E[:C]^T (no bias); `weight` is the very
# Parameter of `embeddings`, so it is saved as `lm_head.weight` too, as in the released files.
class TiedHead(nn.Module):
    def __init__(self, embeddings: nn.Embedding, classes: int):
        super().__init__()
        self.weight = embeddings.weight
        self.classes = classes

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight[: self.classes].T


#----------------------------------------------------------------------------


# The MaskGen-VQ network as an `MDMNetwork` (one group: tokens [B, L, 1], logits [B, L, 1, C]).
class MaskGenNetwork(NullText, nn.Module):
    null_prompt = "empty-prompt"

    def __init__(self, arch: MaskGenArch, image_shape: tuple[int, int, int] = (3, 256, 256)):
        super().__init__()
        if arch.width % arch.heads:
            raise ValueError(f"width {arch.width} is not divisible by heads {arch.heads}")
        self.arch = arch
        self.layout = TokenLayout(positions=arch.seq_len, groups=1, classes=arch.codebook_size,
                                  mask_id=arch.codebook_size, image_shape=image_shape)
        self.num_layers = arch.depth
        d = arch.width
        self.text_embed_proj = nn.Linear(arch.text_dim, d)
        self.cond_pooled_proj = nn.Linear(arch.text_dim + arch.micro_condition_dim, d)
        self.blocks = nn.ModuleList([JointBlock(d, arch.heads, context_pre_only=i == arch.depth - 1)
                                     for i in range(arch.depth)])
        self.norm = AdaLNContinuous(d)
        self.embeddings = nn.Embedding(arch.vocab_rows, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, arch.seq_len, d))
        self.lm_head = TiedHead(self.embeddings, arch.codebook_size)
        self._register_null_text()

    # Re-point the head at the embedding table (after anything that replaced Parameters).
    def tie_weights(self) -> None:
        self.lm_head.weight = self.embeddings.weight

    # Input embeddings of hard tokens [B, L, 1] (mask id allowed) -> [B, L, D], no positions.
    def embed(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[-1] != 1:
            raise ValueError(f"tokens must be [B, L, 1], got {tuple(tokens.shape)}")
        if bool(((tokens < 0) | (tokens > self.layout.mask_id)).any()):
            raise ValueError(f"token ids must lie in [0, {self.layout.mask_id}] "
                             f"({self.layout.mask_id} = mask)")
        return self.embeddings(tokens[..., 0])

    # Soft embedding sum_j p_j E_j (Soft-Di[M]O Eq. 3) of probs [B, L, 1, C]; the mask row
    # E[C] where `mask` ([B, L, 1] or [B, L], bool) is True.
    def embed_soft(self, probs: Tensor, mask: Tensor | None = None) -> Tensor:
        table = self.embeddings.weight
        e = probs[..., 0, :] @ table[: self.layout.classes]
        if mask is not None:
            m = mask[..., 0] if mask.dim() == 3 else mask
            e = torch.where(m[..., None], table[self.layout.mask_id].to(e.dtype).expand_as(e), e)
        return e

    # Context stream [B, T, D] and pooled condition c [B, D]; `drop` rows use the null encoding.
    def condition(self, cond: Condition, drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
        seq, pooled = self.with_null_text(cond.tensors["seq"], cond.tensors["pooled"], drop)
        if self.arch.micro_condition_dim:
            aes = aesthetic_embedding(cond.tensors["aesthetic"], self.arch.micro_condition_dim)
            pooled = torch.cat([pooled, aes.to(pooled.dtype)], dim=-1)
        return self.text_embed_proj(seq), self.cond_pooled_proj(pooled)

    # Logits [B, L, 1, C] (and the image stream after the requested blocks) from embeddings
    # [B, L, D]. Never masks anything: the caller decides what is masked.
    def forward(self, embeds: Tensor, cond: Condition, drop: Tensor | None = None,
                hidden_layers: Sequence[int] = ()) -> NetworkOutput:
        check_hidden_layers(hidden_layers, self.num_layers)
        ctx, c = self.condition(cond, drop)
        x = embeds + self.pos_embed[:, : embeds.shape[1]]
        hidden = {}
        for i, block in enumerate(self.blocks):
            ctx, x = block(x, ctx, c)
            if i in hidden_layers:
                hidden[i] = x
        logits = self.lm_head(self.norm(x, c))
        return NetworkOutput(logits[:, :, None, :], [hidden[i] for i in hidden_layers])

    # Di[M]O's `fix_emb_layer` set: the token table (which is also the tied head) and positions.
    def embedding_parameter_names(self) -> set[str]:
        return {"embeddings.weight", "pos_embed"}


# Build MaskGen-VQ and strictly load a released file. `lm_head.weight` and `embeddings.weight`
# must agree when both are present; either alone is accepted (deduplicated safetensors exports).
def load_maskgen(path: str | Path, arch: MaskGenArch,
                 image_shape: tuple[int, int, int] = (3, 256, 256)) -> MaskGenNetwork:
    what = "MaskGen-VQ generator"
    state = read_state_dict(path, what)
    emb, head = state.get("embeddings.weight"), state.get("lm_head.weight")
    if emb is None and head is None:
        raise CheckpointError(f"{what}: {path} has neither embeddings.weight nor lm_head.weight")
    if emb is None:
        state["embeddings.weight"] = head
    elif head is None:
        state["lm_head.weight"] = emb
    elif emb.shape != head.shape or not torch.equal(emb, head):
        raise CheckpointError(f"{what}: {path} has lm_head.weight different from embeddings.weight; "
                           f"MaskGen-VQ ties them, so this is not a MaskGen-VQ checkpoint")
    network = build_uninitialised(lambda: MaskGenNetwork(arch, image_shape))
    network.tie_weights()
    load_strict(network, state, f"{what}: {path}")
    return network.eval().requires_grad_(False)


#----------------------------------------------------------------------------
# Sampling (upstream `MaskGen_VQ.generate`; docs/maskgen.md, "Sampler").


# MaskGen's guidance scale s at progress r = (step + 1) / T. Its CFG is z_c + s (z_c - z_u),
# i.e. `guided_logits` weight w = 1 + s. "cosine": s = (g - 1)(1 - cos(pi r^pow)) / 2 + 1.
def maskgen_guidance(g: float, ratio: float, decay: str, power: float = 1.0) -> float:
    if decay == "cosine":
        return (g - 1) * (1 - math.cos(math.pi * ratio ** power)) / 2 + 1
    if decay == "linear":
        return ratio * (g - 1) + 1
    if decay == "none":
        return g
    raise ValueError(f"unknown guidance decay {decay!r}; allowed: cosine, linear, none")


GUIDANCE_DECAYS = ("cosine", "linear", "none")


# Number of tokens re-masked after the step at progress r: floor(L arccos(r) / (pi/2)) in float32
# as upstream, clamped to [1, masked - 1] per image.
def remask_count(seq_len: int, ratio: float, masked: Tensor) -> Tensor:
    gamma = torch.acos(torch.tensor(ratio, dtype=torch.float32)) / (math.pi * 0.5)
    n = torch.floor(seq_len * gamma).to(masked.device)
    return torch.clamp(torch.minimum(masked - 1, n.long()), min=1)


# K-step MaskGen sampler with per-image noise. At step k (r = (k+1)/K): CFG with the decayed scale;
# logits / (temperature * (0.5 + 0.8 (1 - r))) (softmax annealing); draw argmax(logits + tau G)
# with tau = randomize_temperature (1 - r); confidence = drawn logit + fresh tau G (known tokens
# +inf); re-mask the `remask_count` least confident. Returns tokens [B, L, 1].
# Departures from upstream `generate`, neither affecting the released settings: the clamp of the
# re-mask count is per image (upstream takes image 0's; equal unless confidences tie), and without
# annealing the softmax temperature is `temperature` (upstream divides by tau, which is 0 at the end).
@torch.no_grad()
def maskgen_sample(network: MaskGenNetwork, cond: Condition, noise: ImageNoise, steps: int = 16,
                   guidance: float = 12.0, randomize_temperature: float = 2.0,
                   temperature: float = 1.0, guidance_decay: str = "cosine",
                   guidance_power: float = 1.0, softmax_annealing: bool = True) -> Tensor:
    layout = network.layout
    b, L = len(noise), layout.positions
    if cond.batch_size != b:
        raise ValueError(f"condition batch {cond.batch_size} != noise streams {b}")
    device = network.embeddings.weight.device
    ids = torch.full((b, L), layout.mask_id, dtype=torch.long, device=device)
    for step in range(steps):
        ratio = (step + 1) / steps
        tau = randomize_temperature * (1.0 - ratio)
        is_mask = ids == layout.mask_id
        w = 1.0 + maskgen_guidance(guidance, ratio, guidance_decay, guidance_power)
        logits = guided_logits(network, network.embed(ids[..., None]), cond, w).logits[:, :, 0]
        scale = temperature * (0.5 + 0.8 * (1.0 - ratio)) if softmax_annealing else temperature
        logits = logits / scale
        drawn = (logits + tau * noise.gumbel(L, layout.classes).to(device)).argmax(dim=-1)
        drawn_logit = logits.gather(-1, drawn[..., None])[..., 0]
        drawn = torch.where(is_mask, drawn, ids)
        confidence = torch.where(is_mask, drawn_logit, torch.full_like(drawn_logit, math.inf))
        confidence = confidence + tau * noise.gumbel(L).to(device)
        if step == steps - 1:
            ids = drawn
            break
        n = remask_count(L, ratio, is_mask.sum(dim=1))
        cutoff = confidence.sort(dim=-1).values.gather(1, (n - 1)[:, None])
        ids = torch.where(confidence <= cutoff, torch.full_like(drawn, layout.mask_id), drawn)
    return ids[..., None]


#----------------------------------------------------------------------------


# Configuration of the `maskgen` teacher (grid keys `teacher.*`).
@dataclass(frozen=True)
class MaskGenConfig(PromptFiles):
    size: str = param("L", choices=tuple(MASKGEN_ARCHS), help="MaskGen-VQ size (tiny: tests only)")
    generator_weights: str = param("", help="MaskGen-VQ weight file; empty = asset maskgen_vq_<size>")
    tokenizer_weights: str = param("", help="TA-TiTok weight file; empty = asset tatitok_bl128_vq")
    text_encoder: str = param("ViT-L-14-336", help="open_clip model name or open_clip config JSON")
    text_encoder_weights: str = param("", help="CLIP weight file; empty = asset "
                                      "openai_clip_vit_l_14_336")
    quick_gelu: bool = param(True, help="force QuickGELU in the text tower (OpenAI weights)")
    aesthetic_score: float = param(6.5, lo=0.0, hi=10.0, help="micro-condition (released 6.5)")
    guidance_decay: str = param("cosine", choices=GUIDANCE_DECAYS, help="sampler CFG schedule")
    guidance_power: float = param(1.0, lo=0.0, help="exponent of the cosine CFG schedule")
    softmax_annealing: bool = param(True, help="sampler temperature 0.5 + 0.8 (1 - r)")


# MaskGen-VQ + TA-TiTok decoder + CLIP text encoder as a `Teacher` (condition kind "text").
class MaskGenTeacher(TextConditioned):
    name = "maskgen"
    condition_kind = "text"

    def __init__(self, network: MaskGenNetwork, tokenizer: TATiTok, text_encoder: ClipTextEncoder,
                 config: MaskGenConfig):
        _check_compatible(network.arch, tokenizer, text_encoder)
        self.network, self.tokenizer, self.text_encoder = network, tokenizer, text_encoder
        self.config = config
        self.layout = network.layout
        null = text_encoder.encode([""])
        network.set_null_condition(null.seq[0], null.pooled[0])

    # Prompts -> Condition with CLIP seq / pooled / final features and the aesthetic score.
    def encode_condition(self, raw: Sequence[Any]) -> Condition:
        prompts = self.prompts_of(raw)
        f = self.text_encoder.encode(prompts)
        aes = torch.full((len(prompts),), self.config.aesthetic_score, device=f.seq.device)
        return Condition("text", {"seq": f.seq, "pooled": f.pooled, "aesthetic": aes,
                                  "final": f.final}, prompts)

    def _text_guidance(self, cond: Condition | None, batch: int) -> Tensor:
        if cond is None:
            raise ValueError("the TA-TiTok decoder is text-conditioned: pass the Condition of "
                             "the images (its 'final' CLIP features) to decode / decode_soft")
        if cond.batch_size != batch:
            raise ValueError(f"condition batch {cond.batch_size} != token batch {batch}")
        return cond.tensors["final"]

    # Hard tokens [B, L, 1] -> images [B, 3, H, W] in [0, 1].
    def decode(self, tokens: Tensor, cond: Condition | None = None) -> Tensor:
        text = self._text_guidance(cond, tokens.shape[0])
        return self.tokenizer.decode_tokens(tokens[..., 0], text).clamp(0.0, 1.0)

    # Token distributions [B, L, 1, C] -> images: p @ codebook into the decoder (differentiable).
    def decode_soft(self, probs: Tensor, cond: Condition | None = None) -> Tensor:
        text = self._text_guidance(cond, probs.shape[0])
        return self.tokenizer.decode_probs(probs[..., 0, :], text).clamp(0.0, 1.0)

    # The released sampler: 16 steps, MaskGen guidance scale 12 (cosine decay; `cfg` is MaskGen's
    # g, see `maskgen_guidance`), randomize temperature 2.0 (`choice_temperature`), softmax
    # annealing scaled by `temperature` (1.0 = released). -> tokens [B, L, 1].
    def sample(self, cond: Condition, steps: int = 16, cfg: float = 12.0,
               noise: ImageNoise | None = None, temperature: float = 1.0,
               choice_temperature: float = 2.0) -> Tensor:
        if noise is None:
            raise ValueError("sample needs `noise` (an ImageNoise: one random stream per image)")
        c = self.config
        return maskgen_sample(self.network, cond, noise, steps=steps, guidance=cfg,
                              randomize_temperature=choice_temperature, temperature=temperature,
                              guidance_decay=c.guidance_decay, guidance_power=c.guidance_power,
                              softmax_annealing=c.softmax_annealing)


def _check_compatible(arch: MaskGenArch, tokenizer: TATiTok, text: ClipTextEncoder) -> None:
    t = tokenizer.arch
    problems = []
    if (t.codebook_size, t.num_latent_tokens) != (arch.codebook_size, arch.seq_len):
        problems.append(f"TA-TiTok has {t.num_latent_tokens} tokens x {t.codebook_size} codes, "
                        f"MaskGen {arch.seq_len} x {arch.codebook_size}")
    if text.width != arch.text_dim or text.embed_dim != arch.text_dim:
        problems.append(f"CLIP text width/embed dim {text.width}/{text.embed_dim}, MaskGen "
                        f"expects {arch.text_dim}")
    if (text.width, text.context_length) != (t.text_dim, t.text_context_length):
        problems.append(f"CLIP text features [{text.context_length}, {text.width}], TA-TiTok "
                        f"expects [{t.text_context_length}, {t.text_dim}]")
    if problems:
        raise CheckpointError("MaskGen components do not fit together: " + "; ".join(problems))


# Load the three components from local files and assemble the teacher on `device`.
def build_maskgen_teacher(config: MaskGenConfig, generator_weights: str | Path,
                          tokenizer_weights: str | Path, text_encoder_weights: str | Path,
                          device: torch.device | str = "cpu") -> MaskGenTeacher:
    tok_arch = TATITOK_ARCHS[TOKENIZER_OF_SIZE[config.size]]
    image_shape = (3, tok_arch.image_size, tok_arch.image_size)
    network = load_maskgen(generator_weights, MASKGEN_ARCHS[config.size], image_shape).to(device)
    tokenizer = load_tatitok(tokenizer_weights, tok_arch, with_encoder=False).to(device)
    text = build_clip_text_encoder(config.text_encoder, text_encoder_weights, config.quick_gelu).to(device)
    return MaskGenTeacher(network, tokenizer, text, config)
