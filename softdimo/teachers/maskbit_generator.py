"""MaskBit's generator `LFQBert` (Weber et al., TMLR 2024), reimplemented from its description.

A post-norm BERT over 16x16 bit tokens plus one class token (appended last). A token of N bits is
two groups of k = N/2 bits; each group is one categorical slot with 2^k classes, and the value 2^k
masks it. There is no embedding table: a group's index becomes k bits in {-1, +1} (least
significant first, 0 for a masked group), the two groups are concatenated (group 0 = low bits) and
a single `input_proj = Linear(N, D)` gives the token embedding (docs/maskbit.md). The parameter and
buffer names equal those of the released checkpoints, so their state dicts load strictly (the
files name the input projection `token_emb`; `MASKBIT_GENERATOR_RENAMES` maps it).

The soft embedding of Soft-Di[M]O (Eq. 3) is exact here without a 2^N table: with S_k the fixed
2^k x k matrix of +-1 bits, E[bits of group m] = p_m S_k, and the affine projection commutes with
the expectation (docs/maskbit.md, "Tokens, soft embeddings and the mask caveat").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from softdimo.teachers.base import Condition, NetworkOutput, TokenLayout, check_hidden_layers

MASKBIT_GENERATOR_RENAMES = {"token_emb": "input_proj"}   # released file name -> in-memory name

#----------------------------------------------------------------------------
# Bit tokens.


# S_k: row v holds the k bits of v in {-1, +1}, least significant first ([2^k, k]).
def sign_table(k: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
               ) -> Tensor:
    values = torch.arange(2 ** k, device=device)[:, None]
    powers = 2 ** torch.arange(k, device=device)
    return (((values & powers) != 0).to(dtype) * 2.0 - 1.0)


# Hard group indices [..., G] (mask value 2^k allowed) -> +-1 bits [..., G*k]; masked groups -> 0.
def token_bits(tokens: Tensor, k: int, dtype: torch.dtype = torch.float32) -> Tensor:
    powers = 2 ** torch.arange(k, device=tokens.device)
    bits = ((tokens[..., None] & powers) != 0).to(dtype) * 2.0 - 1.0
    bits = bits.masked_fill((tokens == 2 ** k)[..., None], 0.0)
    return bits.flatten(-2)


# Expected +-1 bits of per-group distributions [..., G, 2^k] -> [..., G*k] (p_m S_k per group);
# groups where `mask` [..., G] is True get the mask encoding 0.
def expected_bits(probs: Tensor, mask: Tensor | None = None) -> Tensor:
    k = int(math.log2(probs.shape[-1]))
    if 2 ** k != probs.shape[-1]:
        raise ValueError(f"the last dimension of probs must be 2^k classes, got {probs.shape[-1]}")
    bits = probs @ sign_table(k, probs.device, probs.dtype)
    if mask is not None:
        bits = bits.masked_fill(mask[..., None], 0.0)
    return bits.flatten(-2)


# Fraction of groups whose expected +-1 bits all lie within `tol` of 0, i.e. soft groups the
# teacher cannot tell from the mask encoding (the uniform distribution is one of them).
def near_uniform_fraction(probs: Tensor, tol: float = 0.1) -> float:
    k = int(math.log2(probs.shape[-1]))
    bits = probs.detach().float() @ sign_table(k, probs.device)
    return float((bits.abs().amax(dim=-1) <= tol).float().mean())


# Full token indices [...] (N bits) -> group indices [..., 2] (group 0 = low N/2 bits).
def split_groups(indices: Tensor, bits: int) -> Tensor:
    k = bits // 2
    return torch.stack([indices & (2 ** k - 1), indices >> k], dim=-1)


# Group indices [..., 2] -> full token indices [...] = g0 + g1 * 2^(N/2).
def combine_groups(tokens: Tensor, bits: int) -> Tensor:
    return tokens[..., 0] + (tokens[..., 1] << (bits // 2))


#----------------------------------------------------------------------------
# Network.


# Architecture of an LFQBert; the released generators are `LFQBertArch(bits=N)` (docs/maskbit.md).
@dataclass(frozen=True)
class LFQBertArch:
    bits: int = 14                 # N: bits per token
    groups: int = 2                # codebook_splits: categorical slots per position
    image_size: int = 256          # pixels per side of the decoded image
    input_stride: int = 16         # pixels per token per side (the tokenizer's downsampling)
    hidden: int = 1024             # D
    depth: int = 24                # transformer layers
    heads: int = 16
    mlp: int = 4096
    num_classes: int = 1000        # class_emb has num_classes + 1 rows; the last is the null class
    dropout: float = 0.1           # embedding, attention, residual and MLP dropout (off in eval)

    def __post_init__(self) -> None:
        if self.bits % self.groups:
            raise ValueError(f"bits ({self.bits}) must be divisible by groups ({self.groups})")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")

    @property
    def group_bits(self) -> int:   # k
        return self.bits // self.groups

    @property
    def classes(self) -> int:      # C = 2^k; also the mask value
        return 2 ** self.group_bits

    @property
    def grid(self) -> int:         # token positions per side
        return self.image_size // self.input_stride

    @property
    def positions(self) -> int:    # L
        return self.grid * self.grid


# Post-norm self-attention: x <- LN(x + Dropout(MHA(x))), LayerNorm eps 1e-12.
class BertAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True, bias=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        a = self.mha(x, x, x, need_weights=False)[0]
        return self.norm(x + self.dropout(a))


# Post-norm MLP: x <- LN(x + Dropout(W2 GELU(W1 x))), exact GELU.
class BertFeedForward(nn.Module):
    def __init__(self, dim: int, mlp: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.net(x))


# The layer stack; `layers.{i}.0` is attention and `layers.{i}.1` the MLP (released key layout).
class TransformerEncoder(nn.Module):
    def __init__(self, arch: LFQBertArch):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.ModuleList([BertAttention(arch.hidden, arch.heads, arch.dropout),
                           BertFeedForward(arch.hidden, arch.mlp, arch.dropout)])
            for _ in range(arch.depth)])


# MaskBit's generator (implements `MDMNetwork`): bit-token input projection, learned positions,
# class token last, post-norm transformer, grouped prediction head.
class LFQBert(nn.Module):
    def __init__(self, arch: LFQBertArch):
        super().__init__()
        self.arch = arch
        self.num_layers = arch.depth
        self.layout = TokenLayout(positions=arch.positions, groups=arch.groups, classes=arch.classes,
                                  mask_id=arch.classes,
                                  image_shape=(3, arch.image_size, arch.image_size))
        d = arch.hidden
        self.register_buffer("bits_to_indices", (2 ** torch.arange(arch.group_bits)).int())
        self.class_emb = nn.Embedding(arch.num_classes + 1, d)
        self.input_proj = nn.Linear(arch.bits, d)
        self.pos_emb = nn.Parameter(torch.zeros(1, arch.positions + 1, d))
        self.first_layer = nn.Sequential(nn.LayerNorm(d, eps=1e-12), nn.Dropout(arch.dropout))
        self.transformer = TransformerEncoder(arch)
        self.last_layer = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=1e-12))
        self.prediction_layer = nn.Linear(d, arch.groups * arch.classes)

    # Random initialisation (truncated normal, std 0.02, for linear, embedding and position
    # weights; zero biases; unit LayerNorms), drawn from `generator` so a seed fixes the network.
    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> "LFQBert":
        def normal_(t: Tensor) -> None:
            nn.init.trunc_normal_(t, std=0.02, a=-0.04, b=0.04, generator=generator)

        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Linear, nn.Embedding)):
                normal_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention):
                normal_(m.in_proj_weight)
                nn.init.zeros_(m.in_proj_bias)
        normal_(self.pos_emb)
        return self

    # +-1 bits [B, L, N] of hard group tokens [B, L, G] (the tokenizer latent; 0 for masked groups).
    def token_bits(self, tokens: Tensor) -> Tensor:
        return token_bits(tokens, self.arch.group_bits, self.input_proj.weight.dtype)

    # Embeddings of hard tokens [B, L, G] -> [B, L, D]: input_proj of their bits (no positions).
    def embed(self, tokens: Tensor) -> Tensor:
        return self.input_proj(self.token_bits(tokens))

    # Soft embedding (Soft-Di[M]O Eq. 3, exact for the affine projection): input_proj(E_p[bits]);
    # groups where `mask` [B, L, G] is True get the mask encoding.
    def embed_soft(self, probs: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.input_proj(expected_bits(probs.to(self.input_proj.weight.dtype), mask))

    # Logits [B, L, G, C] from input embeddings [B, L, D]; `drop` [B] selects the null class
    # (never modifies the condition's label tensor); hidden states of the requested layers.
    def forward(self, embeds: Tensor, cond: Condition, drop: Tensor | None = None,
                hidden_layers: Sequence[int] = ()) -> NetworkOutput:
        b, n = embeds.shape[:2]
        if n != self.arch.positions:
            raise ValueError(f"expected {self.arch.positions} token positions, got {n}")
        check_hidden_layers(hidden_layers, self.num_layers)
        labels = cond.tensors["labels"].to(embeds.device)
        if drop is not None:
            labels = torch.where(drop.to(labels.device), torch.full_like(labels, self.arch.num_classes),
                                 labels)
        x = torch.cat([embeds, self.class_emb(labels)[:, None, :].to(embeds.dtype)], dim=1)
        x = self.first_layer(x + self.pos_emb)
        hidden = []
        for i, (attention, mlp) in enumerate(self.transformer.layers):
            x = mlp(attention(x))
            if i in hidden_layers:
                hidden.append(x[:, :n])
        logits = self.prediction_layer(self.last_layer(x))
        logits = logits.view(b, n + 1, self.arch.groups, self.arch.classes)[:, :n]
        return NetworkOutput(logits, hidden)

    # Parameters Di[M]O keeps frozen (`fix_emb_layer`): the token embedding (here the input
    # projection), the position embedding and the output bias.
    def embedding_parameter_names(self) -> set[str]:
        return {"input_proj.weight", "input_proj.bias", "pos_emb", "prediction_layer.bias"}

