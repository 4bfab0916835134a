"""The SD3-style two-stream (MM-DiT) transformer block that MaskGen-VQ is built from.

Own implementation, not a pinned `diffusers` block. Reasons: diffusers is a large dependency
(its `Attention` class carries a dozen processors and optional backends) used here for one block
of about 100 lines; its module layout has changed across releases, while the released MaskGen
checkpoints fix the key names forever. This module keeps those key names exactly
(`norm1.linear`, `norm1_context.linear`, `attn.{to_q,to_k,to_v,add_q_proj,add_k_proj,add_v_proj}`,
`attn.to_out.0`, `attn.to_add_out`, `ff.net.0.proj`, `ff.net.2`, `ff_context.*`) and computes the
same function as diffusers' `JointTransformerBlock` with `JointAttnProcessor2_0` (checked against
the parity fixtures, recorded with diffusers 0.32.2 and 0.42.1, to 1e-5):

- AdaLN-Zero on both streams: Linear(SiLU(c)) -> 6d, chunked (shift_msa, scale_msa, gate_msa,
  shift_mlp, scale_mlp, gate_mlp); non-affine LayerNorm, eps 1e-6.
- Joint attention: per-stream q/k/v with bias, keys concatenated image first, full bidirectional
  SDPA, no qk-norm; split back, `to_out.0` (image) and `to_add_out` (text).
- Gated residuals; feed-forward Linear(d, 4d), tanh-GELU, Linear(4d, d) per stream.
- The last block is `context_pre_only`: its `norm1_context` is AdaLN-continuous (Linear -> 2d,
  chunked **scale, then shift**), it has no `to_add_out`, `norm2_context` or `ff_context`, and its
  text output is discarded.

The Flux-style double-stream block of Meissonic (`meissonic_transformer.py`) is the same block with
three options: RMS qk-norm per head (`norm_q`, `norm_k`, `norm_added_q`, `norm_added_k`), the text
tokens first in the joint sequence, and rotary position embeddings on q and k.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#----------------------------------------------------------------------------


# AdaLN-Zero (diffusers `AdaLayerNormZero`): modulated norm plus the five remaining chunks.
class AdaLNZero(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 6 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: Tensor, c: Tensor) -> tuple[Tensor, ...]:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.linear(F.silu(c)).chunk(6, dim=1)
        x = self.norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        return x, gate_msa, shift_mlp, scale_mlp, gate_mlp


# AdaLN-continuous (diffusers `AdaLayerNormContinuous`): LN(x) * (1 + scale) + shift, scale first.
class AdaLNContinuous(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        scale, shift = self.linear(F.silu(c).to(x.dtype)).chunk(2, dim=1)
        return self.norm(x) * (1 + scale)[:, None, :] + shift[:, None, :]


# RMSNorm (diffusers `RMSNorm`): x / sqrt(mean(x^2) + eps) * weight over the last dimension.
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(variance + self.eps) * self.weight


# Rotary embedding on interleaved pairs (diffusers `apply_rotary_emb`, use_real): x [B, H, S, Dh],
# cos / sin [S, Dh] (each frequency repeated twice); (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin).
def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x0, x1 = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    rotated = torch.stack([-x1, x0], dim=-1).flatten(3)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


# [B, N, H * Dh] -> [B, H, N, Dh].
def split_heads(x: Tensor, heads: int) -> Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


# Linear projection followed by tanh-approximated GELU (diffusers `GELU(approximate="tanh")`).
class GeluProjection(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


# Feed-forward d -> 4d -> d; index 1 of `net` is the (parameter-free) dropout of the released
# layout (p = 0 in the released models; active in train mode only), so the second linear is `net.2`.
class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(GeluProjection(dim, mult * dim), nn.Dropout(dropout), nn.Linear(mult * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# Joint attention over [image tokens; text tokens] with separate projections per stream; optional
# RMS qk-norm per head, text-first order (Flux / Meissonic) and rotary embeddings (cos, sin) over
# the joint sequence. `to_out.1` is the output dropout of the released layout.
class JointAttention(nn.Module):
    def __init__(self, dim: int, heads: int, context_pre_only: bool, qk_norm: bool = False,
                 context_first: bool = False, dropout: float = 0.0):
        super().__init__()
        self.heads, self.context_first = heads, context_first
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.add_q_proj, self.add_k_proj, self.add_v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(dropout)])
        self.to_add_out = None if context_pre_only else nn.Linear(dim, dim)
        if qk_norm:
            head_dim = dim // heads
            self.norm_q, self.norm_k = RMSNorm(head_dim), RMSNorm(head_dim)
            self.norm_added_q, self.norm_added_k = RMSNorm(head_dim), RMSNorm(head_dim)
        else:
            self.norm_q = self.norm_k = self.norm_added_q = self.norm_added_k = None

    def forward(self, x: Tensor, ctx: Tensor, rope: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor | None]:
        n_img, n_ctx = x.shape[1], ctx.shape[1]
        q, k, v = (split_heads(f(x), self.heads) for f in (self.to_q, self.to_k, self.to_v))
        cq, ck, cv = (split_heads(f(ctx), self.heads) for f in (self.add_q_proj, self.add_k_proj, self.add_v_proj))
        if self.norm_q is not None:
            q, k, cq, ck = self.norm_q(q), self.norm_k(k), self.norm_added_q(cq), self.norm_added_k(ck)
        pairs = ((cq, q), (ck, k), (cv, v)) if self.context_first else ((q, cq), (k, ck), (v, cv))
        q, k, v = (torch.cat(p, dim=2) for p in pairs)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, dh = out.shape
        out = out.transpose(1, 2).reshape(b, n, h * dh)
        img, txt = (out[:, n_ctx:], out[:, :n_ctx]) if self.context_first else (out[:, :n_img], out[:, n_img:])
        x_out = self.to_out[1](self.to_out[0](img))
        ctx_out = self.to_add_out(txt) if self.to_add_out is not None else None
        return x_out, ctx_out


# One MM-DiT block (SD3 Eq. in diffusers' JointTransformerBlock; with qk_norm and context_first,
# Meissonic's `TransformerBlock`): returns (text, image) streams.
class JointBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_pre_only: bool, qk_norm: bool = False,
                 context_first: bool = False, dropout: float = 0.0):
        super().__init__()
        self.context_pre_only = context_pre_only
        self.norm1 = AdaLNZero(dim)
        self.norm1_context = AdaLNContinuous(dim) if context_pre_only else AdaLNZero(dim)
        self.attn = JointAttention(dim, heads, context_pre_only, qk_norm, context_first, dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim, dropout=dropout)
        if not context_pre_only:
            self.norm2_context = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.ff_context = FeedForward(dim, dropout=dropout)

    def forward(self, x: Tensor, ctx: Tensor, c: Tensor, rope: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor | None, Tensor]:
        x_n, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(x, c)
        if self.context_pre_only:
            ctx_n = self.norm1_context(ctx, c)
        else:
            ctx_n, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(ctx, c)
        attn_x, attn_ctx = self.attn(x_n, ctx_n, rope)

        # Image stream: gated attention residual, then the modulated, gated feed-forward.
        x = x + gate_msa[:, None] * attn_x
        h = self.norm2(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        x = x + gate_mlp[:, None] * self.ff(h)
        if self.context_pre_only:
            return None, x

        # Text stream: the same, with its own modulation chunks.
        ctx = ctx + c_gate_msa[:, None] * attn_ctx
        h = self.norm2_context(ctx) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
        ctx = ctx + c_gate_mlp[:, None] * self.ff_context(h)
        return ctx, x
