"""MaskGIT's bidirectional transformer (Halton-MaskGIT v1.0 `MaskTransformer`), reimplemented.

A pre-norm ViT over 16x16 VQGAN tokens plus one class token (appended last). One embedding table
`tok_emb` holds C codebook rows, the mask row C, K class rows (C + 1 + k) and the null-class row
C + 1 + K; the output head is tied to it: logits = h tok_emb^T + bias, of which the image
positions and the first C + 1 columns (codebook and mask class) are the released model's output.
Parameter names equal the released `model_state_dict`, so it loads strictly.

Layer order (eps of the LayerNorms as released): tok_emb + pos_emb -> first_layer [LN(1e-12),
Dropout, Linear, GELU, LN(1e-12), Dropout, Linear] -> depth x (x + MHA(LN(x)), x + MLP(LN(x)))
with LayerNorm eps 1e-5 and MLP [Linear, GELU, Dropout, Linear, Dropout] -> last_layer
[LN(1e-12), Dropout, Linear, GELU, LN(1e-12)]. Every dropout (and MHA's attention dropout) has
p = `dropout` (0.1 released) and acts only in train mode.

Here `forward` takes input embeddings (hard lookups from `embed`, Di[M]O's noisy embeddings, or
Soft-Di[M]O's expected embeddings from `embed_soft`) and returns the C codebook logits; the mask
class column is available with `with_mask_class=True` (the released sampler draws from all C + 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from softdimo.teachers.base import Condition, NetworkOutput, TokenLayout, check_hidden_layers

#----------------------------------------------------------------------------


# Architecture of a MaskTransformer; the released ImageNet-256 model is `MaskGITArch()`.
@dataclass(frozen=True)
class MaskGITArch:
    codebook_size: int = 1024      # C: VQGAN codes; C is also the mask id
    num_classes: int = 1000        # K: class rows C + 1 .. C + K; row C + 1 + K is the null class
    grid: int = 16                 # token positions per side (image_size / VQGAN downsampling)
    image_size: int = 256          # pixels per side of the decoded image
    hidden: int = 768              # D
    depth: int = 24
    heads: int = 16
    mlp: int = 3072
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")

    @property
    def positions(self) -> int:    # L
        return self.grid * self.grid

    @property
    def vocab_rows(self) -> int:   # rows of tok_emb and columns of bias
        return self.codebook_size + 1 + self.num_classes + 1


# x -> fn(LayerNorm(x)) with PyTorch's default eps 1e-5 (`transformer.layers.{i}.{0,1}`).
class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.norm(x))


# Multi-head self-attention with attention-weight dropout (key `mha`).
class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


# MLP [Linear, exact GELU, Dropout, Linear, Dropout] (key `net`).
class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# The layer stack; `layers.{i}.0` is attention and `layers.{i}.1` the MLP, each pre-norm residual.
class TransformerEncoder(nn.Module):
    def __init__(self, arch: MaskGITArch):
        super().__init__()
        d = arch.hidden
        self.layers = nn.ModuleList([
            nn.ModuleList([PreNorm(d, SelfAttention(d, arch.heads, arch.dropout)),
                           PreNorm(d, FeedForward(d, arch.mlp, arch.dropout))])
            for _ in range(arch.depth)])


# MaskGIT's transformer (implements `MDMNetwork`); groups G = 1, classes C, mask id C.
class MaskGITTransformer(nn.Module):
    def __init__(self, arch: MaskGITArch):
        super().__init__()
        self.arch = arch
        self.num_layers = arch.depth
        c = arch.codebook_size
        self.layout = TokenLayout(positions=arch.positions, groups=1, classes=c, mask_id=c,
                                  image_shape=(3, arch.image_size, arch.image_size))
        d = arch.hidden
        self.tok_emb = nn.Embedding(arch.vocab_rows, d)
        self.pos_emb = nn.Parameter(torch.zeros(1, arch.positions + 1, d))
        self.first_layer = nn.Sequential(
            nn.LayerNorm(d, eps=1e-12), nn.Dropout(arch.dropout), nn.Linear(d, d), nn.GELU(),
            nn.LayerNorm(d, eps=1e-12), nn.Dropout(arch.dropout), nn.Linear(d, d))
        self.transformer = TransformerEncoder(arch)
        self.last_layer = nn.Sequential(
            nn.LayerNorm(d, eps=1e-12), nn.Dropout(arch.dropout), nn.Linear(d, d), nn.GELU(),
            nn.LayerNorm(d, eps=1e-12))
        self.bias = nn.Parameter(torch.zeros(arch.positions + 1, arch.vocab_rows))

    # Embeddings of hard tokens [B, L, 1] (mask id C allowed) -> [B, L, D] (no positions).
    def embed(self, tokens: Tensor) -> Tensor:
        return self.tok_emb(tokens[..., 0])

    # Soft embedding (Soft-Di[M]O Eq. 3): p [B, L, 1, C] -> sum_j p_j E_j over the codebook rows;
    # positions where `mask` [B, L, 1] is True get the mask row E_C.
    def embed_soft(self, probs: Tensor, mask: Tensor | None = None) -> Tensor:
        table = self.tok_emb.weight
        c = self.arch.codebook_size
        e = probs[..., 0, :].to(table.dtype) @ table[:c]
        if mask is not None:
            e = torch.where(mask[..., 0, None], table[c].expand_as(e), e)
        return e

    # Class-token embeddings [B, 1, D]: row C + 1 + label, or the null row where `drop` is True
    # (label K also selects the null row). Never writes into the condition's label tensor.
    def class_embedding(self, cond: Condition, drop: Tensor | None = None) -> Tensor:
        labels = cond.tensors["labels"].to(self.tok_emb.weight.device)
        if drop is not None:
            labels = torch.where(drop.to(labels.device), torch.full_like(labels, self.arch.num_classes), labels)
        return self.tok_emb(labels + self.arch.codebook_size + 1)[:, None, :]

    # Logits [B, L, 1, C] (C + 1 with the mask class) from input embeddings [B, L, D] and a
    # condition; `drop` [B] selects the null class; hidden states [B, L, D] after the requested
    # layers (image positions only).
    def forward(self, embeds: Tensor, cond: Condition, drop: Tensor | None = None,
                hidden_layers: Sequence[int] = (), with_mask_class: bool = False) -> NetworkOutput:
        b, n = embeds.shape[:2]
        if n != self.arch.positions:
            raise ValueError(f"expected {self.arch.positions} token positions, got {n}")
        check_hidden_layers(hidden_layers, self.num_layers)
        x = torch.cat([embeds, self.class_embedding(cond, drop).to(embeds.dtype)], dim=1)
        x = self.first_layer(x + self.pos_emb)
        hidden = []
        for i, (attention, mlp) in enumerate(self.transformer.layers):
            x = x + attention(x)
            x = x + mlp(x)
            if i in hidden_layers:
                hidden.append(x[:, :n])
        x = self.last_layer(x[:, :n])
        classes = self.arch.codebook_size + (1 if with_mask_class else 0)
        logits = x @ self.tok_emb.weight[:classes].T + self.bias[:n, :classes]
        return NetworkOutput(logits[:, :, None, :], hidden)

    # Parameters Di[M]O keeps frozen (`fix_emb_layer`): the token table (also the tied output
    # head and the class rows), the position embedding and the output bias.
    def embedding_parameter_names(self) -> set[str]:
        return {"tok_emb.weight", "pos_emb", "bias"}
