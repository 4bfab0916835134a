"""The Meissonic transformer (arXiv 2410.08261): a Flux-style MM-DiT over VQ tokens, as an `MDMNetwork`.

Own implementation whose `state_dict` matches the released `transformer/` folder of the Hugging
Face repository `MeissonFlow/Meissonic` (`Transformer2DModel`, the `Meissonic_src/transformer.py`
of `yuanzhi-zhu/DiMO` and `src/transformer.py` of `viiika/Meissonic`, built on diffusers blocks):

- `embed`: token table `embeddings` (codebook + unused rows + the mask row, `vocab_size` rows),
  RMSNorm `layer_norm`, 1x1 `conv` (no bias): per-token input embeddings (the tensor Di[M]O
  perturbs with noise, and the one the soft path mixes in *table* space before the RMSNorm).
- `down_block.downsample`: RMSNorm over channels, 2x2 stride-2 conv (the token grid halves: 64x64
  -> 32x32 at 1024 px); `project_to_hidden_norm` / `project_to_hidden`.
- Conditioning: `context_embedder` (CLIP penultimate hidden states -> width) and RMSNorm
  `encoder_proj_layer_norm`; micro-conditions [width, height, crop top, crop left, aesthetic]
  each as a 256-d sinusoid, appended to the pooled CLIP projection, `cond_embed` (two linears, no
  bias), then `time_text_embed`: sinusoid of `timestep * 1000` through `timestep_embedder` plus
  `text_embedder` of the pooled vector; this c drives every AdaLN.
- `transformer_blocks`: double-stream MM-DiT blocks (`mmdit.JointBlock` with RMS qk-norm, text
  first, RoPE); `single_transformer_blocks`: single-stream blocks over [text; image] (AdaLN-Zero
  with 3 chunks, parallel attention and MLP, `proj_out` of their concatenation, gated residual).
- RoPE over 3 axes (16, 56, 56 of the 128 head dims), theta 10000: text tokens at position 0,
  image tokens at (0, row, column) of the downsampled grid; interleaved pairs.
- `project_from_hidden_norm` / `project_from_hidden`, `up_block.upsample` (RMSNorm, 2x2 stride-2
  transposed conv), `mlm_layer` (1x1 conv, RMSNorm, 1x1 conv to the codebook logits, no bias).

RMSNorms have eps 1e-6; AdaLN norms are non-affine LayerNorms, eps 1e-6; GELU is tanh-approximated.
Dropout modules sit where upstream has them (p = 0 in the released model; train mode only).
`forward` never masks anything and takes the embeddings, so hard, soft and noised inputs share it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softdimo.teachers.base import Condition, NetworkOutput, TokenLayout, check_hidden_layers
from softdimo.teachers.mmdit import JointBlock, RMSNorm, apply_rotary, split_heads
from softdimo.teachers.text_conditioned import NullText

MICRO_CONDITIONS = 5            # [orig width, orig height, crop top, crop left, aesthetic score]
SINUSOID_DIM = 256              # per micro-condition and for the timestep (fixed upstream)

#----------------------------------------------------------------------------


# Architecture of the Meissonic transformer (the keys of the released `transformer/config.json`).
@dataclass(frozen=True)
class MeissonicArch:
    num_layers: int = 14                    # double-stream blocks
    num_single_layers: int = 28             # single-stream blocks
    heads: int = 8
    head_dim: int = 128
    text_dim: int = 1024                    # `joint_attention_dim`: CLIP hidden width
    pooled_dim: int = 1024                  # `pooled_projection_dim`: CLIP projection width
    axes_dims_rope: tuple[int, int, int] = (16, 56, 56)
    vocab_size: int = 8256                  # table rows; the last one is the mask token
    codebook_size: int = 8192               # C: logits classes
    grid: int = 64                          # token grid side (1024 px / VQ factor 16)
    dropout: float = 0.0

    @property
    def width(self) -> int:
        return self.heads * self.head_dim

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1

    # Read an upstream `transformer/config.json` (as a dict) plus the token grid side.
    @classmethod
    def from_upstream(cls, config: Mapping[str, Any], grid: int) -> "MeissonicArch":
        if not (config.get("downsample") and config.get("upsample")):
            raise ValueError("only Meissonic configs with downsample and upsample (the released "
                             "1024 px model) are supported")
        if config.get("guidance_embeds"):
            raise ValueError("guidance_embeds=True is not used by Meissonic and not supported")
        return cls(num_layers=config["num_layers"], num_single_layers=config["num_single_layers"],
                   heads=config["num_attention_heads"], head_dim=config["attention_head_dim"],
                   text_dim=config["joint_attention_dim"], pooled_dim=config["pooled_projection_dim"],
                   axes_dims_rope=tuple(config["axes_dims_rope"]), vocab_size=config["vocab_size"],
                   codebook_size=config["codebook_size"], grid=grid)

    def check(self) -> None:
        if sum(self.axes_dims_rope) != self.head_dim or any(d % 2 for d in self.axes_dims_rope):
            raise ValueError(f"axes_dims_rope {self.axes_dims_rope} must be even and sum to head_dim {self.head_dim}")
        if self.pooled_dim != self.width:
            raise ValueError(f"pooled_projection_dim {self.pooled_dim} must equal the width {self.width} "
                             "(cond_embed feeds text_embedder)")
        if self.grid % 2 or self.vocab_size <= self.codebook_size:
            raise ValueError(f"grid {self.grid} must be even and vocab_size {self.vocab_size} > codebook_size "
                             f"{self.codebook_size}")


# Released size (HF `MeissonFlow/Meissonic`, transformer/config.json) and the fixtures' tiny one.
MEISSONIC_ARCHS: dict[str, MeissonicArch] = {
    "full": MeissonicArch(),
    "tiny": MeissonicArch(num_layers=2, num_single_layers=2, heads=2, head_dim=16, text_dim=24, pooled_dim=32,
                          axes_dims_rope=(4, 6, 6), vocab_size=40, codebook_size=32, grid=8),
}

#----------------------------------------------------------------------------


# Sinusoidal embedding of scalars (diffusers `get_timestep_embedding`, flip_sin_to_cos, shift 0):
# frequencies exp(-ln(10000) k / (dim/2)) in float32, laid out [cos | sin]. [N] -> [N, dim].
def sinusoid(values: Tensor, dim: int = SINUSOID_DIM, max_period: float = 10000.0) -> Tensor:
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half
    args = values.float()[:, None] * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


# Linear -> SiLU -> Linear (diffusers `TimestepEmbedding` / `PixArtAlphaTextProjection` keys).
class TwoLayerMLP(nn.Module):
    def __init__(self, dim_in: int, dim: int, bias: bool = True):
        super().__init__()
        self.linear_1 = nn.Linear(dim_in, dim, bias=bias)
        self.linear_2 = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


# c = timestep_embedder(sinusoid(t)) + text_embedder(pooled) (`CombinedTimestepTextProjEmbeddings`).
class TimeTextEmbedding(nn.Module):
    def __init__(self, dim: int, pooled_dim: int):
        super().__init__()
        self.timestep_embedder = TwoLayerMLP(SINUSOID_DIM, dim)
        self.text_embedder = TwoLayerMLP(pooled_dim, dim)

    def forward(self, timestep: Tensor, pooled: Tensor) -> Tensor:
        return self.timestep_embedder(sinusoid(timestep).to(pooled.dtype)) + self.text_embedder(pooled)


# Token ids (or table-space vectors) -> per-token input embeddings: RMSNorm then 1x1 conv.
class TokenEmbedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, dim)
        self.layer_norm = RMSNorm(dim)
        self.conv = nn.Conv2d(dim, dim, 1, bias=False)

    # Table-space vectors [B, L, D] -> [B, L, D] (the 1x1 conv is a per-token linear map).
    def project(self, table_vectors: Tensor) -> Tensor:
        return F.linear(self.layer_norm(table_vectors), self.conv.weight[:, :, 0, 0])


# RMSNorm over channels then a 2x2 stride-2 conv (`Downsample2D`), or a 2x2 stride-2 transposed
# conv (`Upsample2D`), on [B, D, H, W]; no biases.
class Resample(nn.Module):
    def __init__(self, dim: int, up: bool):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.conv = (nn.ConvTranspose2d if up else nn.Conv2d)(dim, dim, 2, stride=2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


# Holder giving the released key names `down_block.downsample.*` / `up_block.upsample.*`.
class ResampleBlock(nn.Module):
    def __init__(self, dim: int, up: bool):
        super().__init__()
        setattr(self, "upsample" if up else "downsample", Resample(dim, up))
        self.up = up

    def forward(self, x: Tensor) -> Tensor:
        return (self.upsample if self.up else self.downsample)(x)


# Logit head (`ConvMlmLayer`): 1x1 conv, RMSNorm, 1x1 conv to the codebook, on [B, L, D] tokens.
class MlmHead(nn.Module):
    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=False)
        self.layer_norm = RMSNorm(dim)
        self.conv2 = nn.Conv2d(dim, classes, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.layer_norm(F.linear(x, self.conv1.weight[:, :, 0, 0]))
        return F.linear(h, self.conv2.weight[:, :, 0, 0])


# Attention over one joint sequence with RMS qk-norm and RoPE, no output projection (pre_only).
class SingleStreamAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm_q, self.norm_k = RMSNorm(dim // heads), RMSNorm(dim // heads)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        q, k, v = (split_heads(f(x), self.heads) for f in (self.to_q, self.to_k, self.to_v))
        q, k = apply_rotary(self.norm_q(q), *rope), apply_rotary(self.norm_k(k), *rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(x.shape)


# AdaLN-Zero with three chunks (diffusers `AdaLayerNormZeroSingle`): (modulated x, gate).
class AdaLNZeroSingle(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 3 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        shift, scale, gate = self.linear(F.silu(c)).chunk(3, dim=1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None], gate


# Single-stream block (Meissonic `SingleTransformerBlock`): x + gate * proj_out([attn(h) | mlp(h)]).
class SingleStreamBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm = AdaLNZeroSingle(dim)
        self.proj_mlp = nn.Linear(dim, mlp_ratio * dim)
        self.attn = SingleStreamAttention(dim, heads)
        self.proj_out = nn.Linear(dim + mlp_ratio * dim, dim)

    def forward(self, x: Tensor, c: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        h, gate = self.norm(x, c)
        mlp = F.gelu(self.proj_mlp(h), approximate="tanh")
        return x + gate[:, None] * self.proj_out(torch.cat([self.attn(h, rope), mlp], dim=2))


# RoPE tables (cos, sin) [T + n*n, head_dim] for T text tokens at position 0 and an n x n image grid
# at (0, row, column): per axis, frequencies theta^(-2j/d) and angles in float64, each repeated twice.
def rope_tables(axes_dims: Sequence[int], text_len: int, n: int, device: torch.device | str,
                theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    rows = torch.arange(n, device=device, dtype=torch.float64).repeat_interleave(n)
    cols = torch.arange(n, device=device, dtype=torch.float64).repeat(n)
    zeros = torch.zeros(text_len + n * n, device=device, dtype=torch.float64)
    positions = (zeros, torch.cat([zeros[:text_len], rows]), torch.cat([zeros[:text_len], cols]))
    cos, sin = [], []
    for d, pos in zip(axes_dims, positions):
        freqs = 1.0 / theta ** (torch.arange(0, d, 2, device=device, dtype=torch.float64) / d)
        angles = torch.outer(pos, freqs)
        cos.append(angles.cos().repeat_interleave(2, dim=1).float())
        sin.append(angles.sin().repeat_interleave(2, dim=1).float())
    return torch.cat(cos, dim=1), torch.cat(sin, dim=1)


#----------------------------------------------------------------------------


# The Meissonic transformer as an `MDMNetwork` (tokens [B, L, 1] over the grid in raster order).
# Condition tensors: "seq" [B, T, text_dim], "pooled" [B, pooled_dim], "micro" [B, 5] and
# "timestep" [B] (the upstream `timestep` argument: 0 in Di[M]O, the step index in the sampler).
class MeissonicNetwork(NullText, nn.Module):
    null_prompt = "negative-prompt"

    def __init__(self, arch: MeissonicArch, image_shape: tuple[int, int, int] = (3, 1024, 1024)):
        super().__init__()
        arch.check()
        self.arch = arch
        self.layout = TokenLayout(positions=arch.grid ** 2, groups=1, classes=arch.codebook_size,
                                  mask_id=arch.mask_id, image_shape=image_shape)
        self.num_layers = arch.num_layers + arch.num_single_layers
        d = arch.width
        self.time_text_embed = TimeTextEmbedding(d, arch.pooled_dim)
        self.context_embedder = nn.Linear(arch.text_dim, d)
        self.transformer_blocks = nn.ModuleList([
            JointBlock(d, arch.heads, context_pre_only=False, qk_norm=True, context_first=True,
                       dropout=arch.dropout) for _ in range(arch.num_layers)])
        self.single_transformer_blocks = nn.ModuleList([SingleStreamBlock(d, arch.heads)
                                                        for _ in range(arch.num_single_layers)])
        self.embed = TokenEmbedding(arch.vocab_size, d)
        self.mlm_layer = MlmHead(d, arch.codebook_size)
        self.cond_embed = TwoLayerMLP(MICRO_CONDITIONS * SINUSOID_DIM + arch.pooled_dim, d, bias=False)
        self.encoder_proj_layer_norm = RMSNorm(d)
        self.project_to_hidden_norm = RMSNorm(d)
        self.project_to_hidden = nn.Linear(d, d, bias=False)
        self.project_from_hidden_norm = RMSNorm(d)
        self.project_from_hidden = nn.Linear(d, d, bias=False)
        self.down_block = ResampleBlock(d, up=False)
        self.up_block = ResampleBlock(d, up=True)
        self._register_null_text()

    # The `embed` submodule (its name is taken by the `MDMNetwork` method below).
    @property
    def token_embedding(self) -> TokenEmbedding:
        return self._modules["embed"]

    # Input embeddings of hard tokens [B, L, 1] (mask id allowed) -> [B, L, D].
    def embed(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[-1] != 1 or tokens.shape[1] != self.layout.positions:
            raise ValueError(f"tokens must be [B, {self.layout.positions}, 1], got {tuple(tokens.shape)}")
        ids = tokens[..., 0]
        if bool((((ids < 0) | (ids >= self.layout.classes)) & (ids != self.layout.mask_id)).any()):
            raise ValueError(f"token ids must lie in [0, {self.layout.classes}) or equal the mask id "
                             f"{self.layout.mask_id}")
        return self.token_embedding.project(self.token_embedding.embeddings(ids))

    # Soft embedding (Soft-Di[M]O Eq. 3): sum_j p_j E_j of probs [B, L, 1, C] in table space, the
    # mask row where `mask` ([B, L, 1] or [B, L]) is True, then the RMSNorm and 1x1 conv.
    def embed_soft(self, probs: Tensor, mask: Tensor | None = None) -> Tensor:
        table = self.token_embedding.embeddings.weight
        e = probs[..., 0, :] @ table[: self.layout.classes]
        if mask is not None:
            m = mask[..., 0] if mask.dim() == 3 else mask
            e = torch.where(m[..., None], table[self.layout.mask_id].to(e.dtype).expand_as(e), e)
        return self.token_embedding.project(e)

    # Context stream [B, T, D] and modulation c [B, D]; `drop` rows use the null condition.
    def condition(self, cond: Condition, drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
        seq, pooled = self.with_null_text(cond.tensors["seq"], cond.tensors["pooled"], drop)
        micro = cond.tensors["micro"]
        micro = sinusoid(micro.reshape(-1)).reshape(micro.shape[0], -1).to(pooled.dtype)
        pooled = self.cond_embed(torch.cat([pooled, micro], dim=1))
        c = self.time_text_embed(cond.tensors["timestep"].to(pooled.dtype) * 1000, pooled)
        return self.encoder_proj_layer_norm(self.context_embedder(seq)), c

    # Logits [B, L, 1, C] (and the image stream after the requested blocks, double-stream blocks
    # first) from input embeddings [B, L, D]. Never masks anything.
    def forward(self, embeds: Tensor, cond: Condition, drop: Tensor | None = None,
                hidden_layers: Sequence[int] = ()) -> NetworkOutput:
        check_hidden_layers(hidden_layers, self.num_layers)
        ctx, c = self.condition(cond, drop)
        b, n = embeds.shape[0], self.arch.grid
        x = self.down_block(embeds.transpose(1, 2).reshape(b, -1, n, n))
        x = self.project_to_hidden(self.project_to_hidden_norm(x.flatten(2).transpose(1, 2)))
        t = ctx.shape[1]
        rope = rope_tables(self.arch.axes_dims_rope, t, n // 2, x.device)
        hidden = {}
        for i, block in enumerate(self.transformer_blocks):
            ctx, x = block(x, ctx, c, rope)
            if i in hidden_layers:
                hidden[i] = x
        h = torch.cat([ctx, x], dim=1)
        for j, block in enumerate(self.single_transformer_blocks):
            h = block(h, c, rope)
            if self.arch.num_layers + j in hidden_layers:
                hidden[self.arch.num_layers + j] = h[:, t:]
        x = self.project_from_hidden(self.project_from_hidden_norm(h[:, t:]))
        x = self.up_block(x.transpose(1, 2).reshape(b, -1, n // 2, n // 2))
        logits = self.mlm_layer(x.flatten(2).transpose(1, 2))
        return NetworkOutput(logits[:, :, None, :], [hidden[i] for i in hidden_layers])

    # Di[M]O's `fix_emb_layer` for Meissonic: the whole input embedding and the logit head.
    def embedding_parameter_names(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if name.startswith(("embed.", "mlm_layer."))}
