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


# Linear projection followed by tanh-approximated GELU (diffusers `GELU(approximate="tanh")`).
class GeluProjection(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


# Feed-forward d -> 4d -> d; index 1 of `net` is the (parameter-free) dropout slot of the released
# layout, kept so that the second linear is `net.2`.
class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GeluProjection(dim, mult * dim), nn.Identity(), nn.Linear(mult * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# Joint attention over [image tokens; text tokens] with separate projections per stream.
class JointAttention(nn.Module):
    def __init__(self, dim: int, heads: int, context_pre_only: bool):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.add_q_proj, self.add_k_proj, self.add_v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.to_add_out = None if context_pre_only else nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor | None]:
        n_img = x.shape[1]
        q = torch.cat([self._heads(self.to_q(x)), self._heads(self.add_q_proj(ctx))], dim=2)
        k = torch.cat([self._heads(self.to_k(x)), self._heads(self.add_k_proj(ctx))], dim=2)
        v = torch.cat([self._heads(self.to_v(x)), self._heads(self.add_v_proj(ctx))], dim=2)
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, dh = out.shape
        out = out.transpose(1, 2).reshape(b, n, h * dh)
        x_out = self.to_out[0](out[:, :n_img])
        ctx_out = self.to_add_out(out[:, n_img:]) if self.to_add_out is not None else None
        return x_out, ctx_out


# One MM-DiT block (SD3 Eq. in diffusers' JointTransformerBlock): returns (text, image) streams.
class JointBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_pre_only: bool):
        super().__init__()
        self.context_pre_only = context_pre_only
        self.norm1 = AdaLNZero(dim)
        self.norm1_context = AdaLNContinuous(dim) if context_pre_only else AdaLNZero(dim)
        self.attn = JointAttention(dim, heads, context_pre_only)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim)
        if not context_pre_only:
            self.norm2_context = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.ff_context = FeedForward(dim)

    def forward(self, x: Tensor, ctx: Tensor, c: Tensor) -> tuple[Tensor | None, Tensor]:
        x_n, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(x, c)
        if self.context_pre_only:
            ctx_n = self.norm1_context(ctx, c)
        else:
            ctx_n, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(ctx, c)
        attn_x, attn_ctx = self.attn(x_n, ctx_n)

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
