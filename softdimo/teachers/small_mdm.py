"""A small bidirectional-transformer MDM (MaskGIT family) for the mini-scale teachers.

The condition enters as prefix tokens (one class token, or the words of a prompt); a `drop` flag
replaces it by the null condition (label dropout, CFG). Pre-LayerNorm blocks on
`scaled_dot_product_attention`; a linear head predicts each slot's C classes. Training is MaskGIT's
(masked cross-entropy, cosine schedule), sampling is MaskGIT's K-step confidence-ordered unmasking.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softdimo.dropout import StreamDropout, attention
from softdimo.params import param
from softdimo.teachers.base import (Condition, ImageNoise, NetworkOutput, TokenLayout, guided_logits,
                                    random_slot_masks)

#----------------------------------------------------------------------------


# Architecture of a SmallMDM.
@dataclass(frozen=True)
class SmallMDMArch:
    d_model: int = 64
    layers: int = 3
    heads: int = 4
    mlp_ratio: int = 4
    grid: tuple[int, int] = (8, 8)     # 2-D arrangement of the L positions (sin-cos init)


# Class labels as one prefix token; label `num_classes` is the null condition.
class ClassPrefix(nn.Module):
    def __init__(self, num_classes: int, d: int):
        super().__init__()
        self.num_classes = num_classes
        self.emb = nn.Embedding(num_classes + 1, d)

    def forward(self, cond: Condition, drop: Tensor) -> Tensor:
        labels = torch.where(drop, torch.full_like(cond.tensors["labels"], self.num_classes),
                             cond.tensors["labels"])
        return self.emb(labels)[:, None, :]


# Prompt word ids [B, T] as T prefix tokens; the null prompt is all `null_id`.
class TextPrefix(nn.Module):
    def __init__(self, vocab_size: int, max_len: int, d: int, null_id: int):
        super().__init__()
        self.null_id = null_id
        self.emb = nn.Embedding(vocab_size, d)
        self.pos = nn.Parameter(torch.randn(1, max_len, d))

    def forward(self, cond: Condition, drop: Tensor) -> Tensor:
        ids = cond.tensors["tokens"]
        ids = torch.where(drop[:, None], torch.full_like(ids, self.null_id), ids)
        return self.emb(ids) + self.pos[:, : ids.shape[1]]


# One pre-LN transformer block with full (bidirectional) attention. Dropout (attention weights,
# attention output, MLP hidden and output) is 0 as built; Di[M]O's theta and psi set it
# (`softdimo.train.set_dropout`) and train in train mode, as the released code trains MaskGIT's.
# Its masks come from the run's dropout stream (`softdimo.dropout`).
class Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))
        self.attn_drop, self.attn_out_drop = StreamDropout(0.0), StreamDropout(0.0)
        self.mlp_drop, self.mlp_out_drop = StreamDropout(0.0), StreamDropout(0.0)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        p_attn = self.attn_drop.p if self.training else 0.0
        a = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), p_attn)
        x = x + self.attn_out_drop(self.proj(a.transpose(1, 2).reshape(b, n, d)))
        hidden = self.mlp_drop(self.mlp[1](self.mlp[0](self.norm2(x))))
        return x + self.mlp_out_drop(self.mlp[2](hidden))


def _sincos_2d(h: int, w: int, d: int) -> Tensor:
    # Fixed 2-D sin-cos position code (half the channels for rows, half for columns).
    quarter = d // 4
    freq = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    parts = [torch.sin(ys.flatten()[:, None] * freq), torch.cos(ys.flatten()[:, None] * freq),
             torch.sin(xs.flatten()[:, None] * freq), torch.cos(xs.flatten()[:, None] * freq)]
    pe = torch.cat(parts, dim=1)
    return F.pad(pe, (0, d - pe.shape[1]))


# The mini-scale MDM network (implements `MDMNetwork`): token table with a mask row, learned
# positions initialised from a 2-D sin-cos code, condition prefix, transformer, linear head.
# Embeddings start at unit scale, as the variance-preserving x_init noise of Di[M]O assumes.
class SmallMDM(nn.Module):
    def __init__(self, layout: TokenLayout, arch: SmallMDMArch, prefix: nn.Module):
        super().__init__()
        if layout.groups != 1:
            raise ValueError("SmallMDM has one group per position")
        if layout.mask_id != layout.classes:
            raise ValueError("SmallMDM expects mask_id == classes")
        self.layout = layout
        self.arch = arch
        self.num_layers = arch.layers
        d = arch.d_model
        self.tok_emb = nn.Embedding(layout.classes + 1, d)      # N(0, 1): unit-scale embeddings, so
        self.pos_emb = nn.Parameter(_sincos_2d(*arch.grid, d)[None, : layout.positions])  # sigma_init is relative
        self.prefix = prefix
        self.blocks = nn.ModuleList([Block(d, arch.heads, arch.mlp_ratio) for _ in range(arch.layers)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, layout.classes)

    # Embeddings of hard tokens [B, L, 1] (mask id allowed) -> [B, L, D].
    def embed(self, tokens: Tensor) -> Tensor:
        return self.tok_emb(tokens[..., 0])

    # Soft embedding sum_j p_j E_j (Soft-Di[M]O Eq. 3) with the mask row where `mask` is True.
    def embed_soft(self, probs: Tensor, mask: Tensor | None = None) -> Tensor:
        table = self.tok_emb.weight
        e = probs[..., 0, :] @ table[: self.layout.classes]
        if mask is not None:
            e = torch.where(mask[..., 0, None], table[self.layout.mask_id].expand_as(e), e)
        return e

    def forward(self, embeds: Tensor, cond: Condition, drop: Tensor | None = None,
                hidden_layers: Sequence[int] = ()) -> NetworkOutput:
        b = embeds.shape[0]
        if drop is None:
            drop = torch.zeros(b, dtype=torch.bool, device=embeds.device)
        prefix = self.prefix(cond, drop)
        p = prefix.shape[1]
        x = torch.cat([prefix, embeds + self.pos_emb], dim=1)
        hidden = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in hidden_layers:
                hidden.append(x[:, p:])
        logits = self.head(self.norm(x[:, p:]))
        return NetworkOutput(logits[:, :, None, :], hidden)

    def embedding_parameter_names(self) -> set[str]:
        return {"tok_emb.weight", "pos_emb", "head.bias"}


#----------------------------------------------------------------------------
# MaskGIT training of a SmallMDM (the teacher phi).


# Optimisation settings of teacher training.
@dataclass(frozen=True)
class MDMTrainSettings:
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    weight_decay: float
    label_dropout: float
    grad_clip: float
    schedule: str = "cosine"
    loss_positions: str = "masked"     # "masked" (MaskGIT paper) or "all" (MaskGIT-PyTorch, Di[M]O's teacher)


# What every mini teacher trained here configures (grid keys `teacher.*`): the SmallMDM's size and
# its MaskGIT training; a world's teacher adds its own fields and may change a default.
@dataclass(frozen=True)
class SmallMDMConfig:
    d_model: int = param(64, lo=8, help="transformer width")
    layers: int = param(3, lo=1, help="transformer blocks")
    heads: int = param(4, lo=1, help="attention heads")
    train_steps: int = param(1600, lo=1, help="MaskGIT training steps")
    batch_size: int = param(64, lo=1, help="training batch size")
    lr: float = param(2e-3, lo=0.0, help="AdamW peak learning rate")
    warmup_steps: int = param(100, lo=0, help="linear warm-up steps")
    weight_decay: float = param(0.01, lo=0.0, help="AdamW weight decay")
    label_dropout: float = param(0.1, lo=0.0, hi=1.0, help="probability of the null condition (CFG)")
    seed: int = param(0, lo=0, help="teacher training seed (independent of the run seed)")

    # The network's architecture on a token grid (rows, columns).
    def arch(self, grid: tuple[int, int]) -> SmallMDMArch:
        return SmallMDMArch(d_model=self.d_model, layers=self.layers, heads=self.heads, grid=grid)

    # Its training settings: AdamW with warm-up and cosine decay, gradients clipped at 1.
    def train_settings(self, loss_positions: str = "masked") -> MDMTrainSettings:
        return MDMTrainSettings(steps=self.train_steps, batch_size=self.batch_size, lr=self.lr,
                                warmup_steps=self.warmup_steps, weight_decay=self.weight_decay,
                                label_dropout=self.label_dropout, grad_clip=1.0, schedule="cosine",
                                loss_positions=loss_positions)


# Class labels as a `Condition` (the class-conditional mini teachers' conditions).
def encode_labels(raw: Sequence[Any]) -> Condition:
    labels = [int(r) for r in raw]
    return Condition("class", {"labels": torch.as_tensor(labels, dtype=torch.long)}, labels)


# lr multiplier: linear warm-up, then cosine decay to 10% of the peak.
def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


# Train an MDM by masked cross-entropy; `batches(step, generator)` yields (tokens [B,L,G], raw conds).
# With `loss_positions="all"` the visible slots are predicted too (identity), as in the MaskGIT-PyTorch
# trainer behind Di[M]O's teacher. Returns the per-step log (loss, lr).
def train_mdm(network: SmallMDM, batches: Callable[[int, torch.Generator], tuple[Tensor, list]],
              encode: Callable[[list], Condition], settings: MDMTrainSettings, seed: int,
              log: Callable[[str], None] = lambda s: None) -> list[dict]:
    if settings.loss_positions not in ("masked", "all"):
        raise ValueError(f"loss_positions must be 'masked' or 'all', got {settings.loss_positions!r}")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # parameter init was done by the caller; this only guards stray ops
    opt = torch.optim.AdamW(network.parameters(), lr=settings.lr, betas=(0.9, 0.99),
                            weight_decay=settings.weight_decay)
    history = []
    network.train()
    layout = network.layout
    for step in range(settings.steps):
        lr = settings.lr * warmup_cosine(step, settings.warmup_steps, settings.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        tokens, raw = batches(step, g)
        cond = encode(raw)
        mask = random_slot_masks(layout, tokens.shape[0], settings.schedule, g)
        drop = torch.rand(tokens.shape[0], generator=g) < settings.label_dropout
        inputs = torch.where(mask, torch.full_like(tokens, layout.mask_id), tokens)
        logits = network(network.embed(inputs), cond, drop=drop).logits
        if settings.loss_positions == "all":
            loss = F.cross_entropy(logits.flatten(0, 2), tokens.flatten())
        else:
            loss = F.cross_entropy(logits[mask], tokens[mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(network.parameters(), settings.grad_clip)
        opt.step()
        history.append({"step": step, "loss": loss.item(), "lr": lr})
        if step % 100 == 0 or step == settings.steps - 1:
            log(f"teacher step {step}/{settings.steps} loss {loss.item():.4f}")
    network.eval()
    return history


#----------------------------------------------------------------------------
# MaskGIT sampling.


# Number of slots still masked after step k of K: floor(slots * cos(pi/2 * (k+1)/K)) (MaskGIT).
def masked_after_step(k: int, steps: int, slots: int) -> int:
    if k >= steps - 1:
        return 0
    return int(math.floor(slots * math.cos(math.pi / 2 * (k + 1) / steps)))


# K-step MaskGIT sampling: at each step draw every masked slot (Gumbel-max at `temperature`), keep
# the most confident draws and re-mask the rest; confidences get Gumbel noise of scale
# `choice_temperature * (1 - (k+1)/K)`. CFG in logit space with weight `cfg`.
@torch.no_grad()
def maskgit_sample(network: nn.Module, cond: Condition, steps: int, cfg: float, noise: ImageNoise,
                   temperature: float = 1.0, choice_temperature: float = 0.0) -> Tensor:
    layout: TokenLayout = network.layout
    b, slots = len(noise), layout.slots
    device = noise.device
    tokens = torch.full((b, layout.positions, layout.groups), layout.mask_id, dtype=torch.long, device=device)
    for k in range(steps):
        masked = tokens == layout.mask_id
        logits = guided_logits(network, network.embed(tokens), cond, cfg).logits / temperature
        logp = F.log_softmax(logits, dim=-1)
        draw = (logp + noise.gumbel(layout.positions, layout.groups, layout.classes)).argmax(-1)
        draw = torch.where(masked, draw, tokens)
        conf = logp.gather(-1, draw[..., None])[..., 0]
        anneal = choice_temperature * (1.0 - (k + 1) / steps)
        conf = conf + anneal * noise.gumbel(layout.positions, layout.groups)
        conf = torch.where(masked, conf, torch.full_like(conf, math.inf)).view(b, slots)
        n_mask = masked_after_step(k, steps, slots)
        order = conf.argsort(dim=1)  # lowest confidence first
        remask = torch.zeros(b, slots, dtype=torch.bool, device=device)
        remask.scatter_(1, order[:, :n_mask], True)
        tokens = torch.where(remask.view_as(draw), torch.full_like(draw, layout.mask_id), draw)
    return tokens

