"""The `Teacher` protocol: everything Di[M]O and Soft-Di[M]O need from a masked diffusion model.

A teacher is a frozen masked diffusion model (MDM) phi together with its tokenizer decoder. The
generator theta and the auxiliary model psi of Di[M]O are deep copies of `teacher.network`
(Algorithm 1, line 1), so the network is a separate `nn.Module` with a small, fixed interface.

Tokens are LongTensors of shape [B, L, G]: L positions, G independent categorical slots per
position ("groups"; 1 for VQ teachers, 2 for MaskBit's bit groups), each slot in [0, C) or equal
to `layout.mask_id`. Distributions over tokens are float tensors [B, L, G, C].
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn

#----------------------------------------------------------------------------


# The discrete layout of one image: L positions x G groups x C classes, plus the mask value.
@dataclass(frozen=True)
class TokenLayout:
    positions: int                  # L: token positions per image
    groups: int                     # G: categorical slots per position (MaskBit: 2 bit groups)
    classes: int                    # C: classes per slot (levels, codebook size, 2^(bits/2))
    mask_id: int                    # value of a masked slot in a token tensor (usually C)
    image_shape: tuple[int, int, int]  # (channels, height, width) of decoded images

    @property
    def slots(self) -> int:
        return self.positions * self.groups


# A batch of conditions after encoding: class labels or text features, plus the null condition.
@dataclass
class Condition:
    kind: str                                   # "class" or "text"
    tensors: dict[str, Tensor]                  # e.g. {"labels": [B]} or {"tokens": [B,T], ...}
    raw: list[Any] = field(default_factory=list)  # labels or prompts as given, for records

    @property
    def batch_size(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def to(self, device: torch.device | str) -> "Condition":
        return Condition(self.kind, {k: v.to(device) for k, v in self.tensors.items()}, self.raw)

    def index(self, idx: Tensor | slice) -> "Condition":
        raw = self.raw
        if raw:
            ids = range(len(raw))[idx] if isinstance(idx, slice) else idx.tolist()
            raw = [self.raw[i] for i in ids]
        return Condition(self.kind, {k: v[idx] for k, v in self.tensors.items()}, raw)

    def repeat(self, n: int) -> "Condition":
        return Condition(self.kind, {k: v.repeat_interleave(n, 0) for k, v in self.tensors.items()},
                         [r for r in self.raw for _ in range(n)])


# What one forward pass of an MDM network returns.
@dataclass
class NetworkOutput:
    logits: Tensor                              # [B, L, G, C]
    hidden: list[Tensor] = field(default_factory=list)  # requested layers, each [B, L, D]


#----------------------------------------------------------------------------


# The trainable network of an MDM; theta and psi are deep copies of the teacher's instance.
@runtime_checkable
class MDMNetwork(Protocol):
    layout: TokenLayout
    num_layers: int

    # Input embeddings of hard tokens [B, L, G] (mask_id allowed) -> [B, L, D] (no positions).
    def embed(self, tokens: Tensor) -> Tensor: ...

    # Soft embedding (Soft-Di[M]O Eq. 3): sum_j p_j E_j per slot, the mask embedding where mask is True.
    def embed_soft(self, probs: Tensor, mask: Tensor | None = None) -> Tensor: ...

    # Logits (and hidden states of the requested layers) from input embeddings and a condition.
    # `drop` [B] bool replaces the condition by the null condition (label dropout / CFG).
    def forward(self, embeds: Tensor, cond: Condition, drop: Tensor | None = None,
                hidden_layers: Sequence[int] = ()) -> NetworkOutput: ...

    # Names of parameters Di[M]O keeps frozen in theta and psi (`fix_emb_layer`: token embedding,
    # positional embedding, output bias).
    def embedding_parameter_names(self) -> set[str]: ...

    def parameters(self) -> Any: ...


# Refuse hidden-layer indices a network of `num_layers` layers does not have (`MDMNetwork.forward`).
def check_hidden_layers(hidden_layers: Sequence[int], num_layers: int) -> None:
    bad = [i for i in hidden_layers if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"hidden_layers {bad} out of range; allowed 0..{num_layers - 1}")


# A frozen MDM teacher phi with its decoder, condition encoder and multi-step sampler.
@runtime_checkable
class Teacher(Protocol):
    name: str
    layout: TokenLayout
    network: nn.Module                  # an MDMNetwork, frozen, eval mode
    condition_kind: str                 # "class" or "text"

    # Encode raw conditions (class ids or prompts) into a `Condition` on the teacher's device.
    def encode_condition(self, raw: Sequence[Any]) -> Condition: ...

    # Draw n raw training conditions for distillation (uniform labels, prompts from a list) from
    # `generator`, on its own device (the distiller's: a CUDA generator draws on the GPU).
    def sample_conditions(self, n: int, generator: torch.Generator) -> list[Any]: ...

    # The n raw conditions used for evaluation, balanced and deterministic (label = i mod classes).
    def eval_conditions(self, n: int) -> list[Any]: ...

    # Decode hard tokens [B, L, G] to images [B, C, H, W] in [0, 1]. `cond` is the images'
    # Condition; text-conditioned decoders (MaskGen's TA-TiTok) need it, others ignore it.
    def decode(self, tokens: Tensor, cond: Condition | None = None) -> Tensor: ...

    # Decode token distributions [B, L, G, C] to images (the soft path: expected decoder input).
    def decode_soft(self, probs: Tensor, cond: Condition | None = None) -> Tensor: ...

    # The teacher's own K-step sampler (MaskGIT family); noise is drawn per image.
    def sample(self, cond: Condition, steps: int, cfg: float, noise: "ImageNoise",
               temperature: float = 1.0, choice_temperature: float = 0.0) -> Tensor: ...

    # Hard tokens of real training images [N, L, G] and their raw conditions (GAN real branch),
    # or None for data-free teachers.
    def real_tokens(self) -> tuple[Tensor, list[Any]] | None: ...


#----------------------------------------------------------------------------
# Shared helpers every teacher uses.


# Classifier-free guidance in logit space: z = z_u + w (z_c - z_u) (docs/paper.md, "Di[M]O",
# step 4); w = 1 is plain conditional, w = 0 unconditional. Runs one doubled batch when w != 1 and
# combines its halves in float32 (under bf16 autocast the network returns bf16 logits).
def guided_logits(network: nn.Module, embeds: Tensor, cond: Condition, w: float,
                  hidden_layers: Sequence[int] = ()) -> NetworkOutput:
    batch = embeds.shape[0]
    if w == 1.0:
        no_drop = torch.zeros(batch, dtype=torch.bool, device=embeds.device)
        return network(embeds, cond, drop=no_drop, hidden_layers=hidden_layers)
    both = Condition(cond.kind, {k: torch.cat([v, v]) for k, v in cond.tensors.items()}, cond.raw * 2)
    drop = torch.cat([torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)])
    out = network(torch.cat([embeds, embeds]), both, drop=drop.to(embeds.device),
                  hidden_layers=hidden_layers)
    z_c, z_u = out.logits[:batch].float(), out.logits[batch:].float()
    return NetworkOutput(z_u + w * (z_c - z_u), [h[:batch] for h in out.hidden])


# Per-image random streams: image i of a run draws from its own generator seeded by (seed, i), so
# samples do not depend on the batch size, the batch order or the number of GPUs.
class ImageNoise:
    def __init__(self, seed: int, indices: Sequence[int], device: torch.device | str = "cpu"):
        self.seed, self.indices = seed, [int(i) for i in indices]
        self.generators = []
        for i in self.indices:
            g = torch.Generator(device=device)
            g.manual_seed(_mix_seed(seed, i))
            self.generators.append(g)
        self.device = torch.device(device)

    # Fresh streams for the same images, unrelated to these (e.g. candidate j of best-of-N).
    def fork(self, purpose: str) -> "ImageNoise":
        return ImageNoise(derive_seed(self.seed, purpose), self.indices, self.device)

    def __len__(self) -> int:
        return len(self.generators)

    # Uniform [0, 1) noise of shape [B, *shape], one row per image from its own stream.
    def rand(self, *shape: int) -> Tensor:
        return torch.stack([torch.rand(shape, generator=g, device=self.device) for g in self.generators])

    # Standard normal noise of shape [B, *shape].
    def randn(self, *shape: int) -> Tensor:
        return torch.stack([torch.randn(shape, generator=g, device=self.device) for g in self.generators])

    # Gumbel(0, 1) noise of shape [B, *shape].
    def gumbel(self, *shape: int) -> Tensor:
        return gumbel_from_uniform(self.rand(*shape))

    # Uniform integers in [0, high) of shape [B, *shape].
    def randint(self, high: int, *shape: int) -> Tensor:
        return torch.stack([torch.randint(high, shape, generator=g, device=self.device)
                            for g in self.generators])

    # A random permutation of n per image, shape [B, n].
    def randperm(self, n: int) -> Tensor:
        return torch.stack([torch.randperm(n, generator=g, device=self.device) for g in self.generators])


# A seed for one purpose of a run ("distill", "sample", ...), unrelated to the seeds of other purposes.
def derive_seed(seed: int, purpose: str) -> int:
    tag = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "little")
    return _mix_seed(seed, tag)


def _mix_seed(seed: int, index: int) -> int:
    # SplitMix64-style mixing so that (seed, i) and (seed + 1, i - 1) give unrelated streams.
    z = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) & (2**63 - 1)


# Gumbel(0, 1) from uniforms, clamped away from 0 and 1.
def gumbel_from_uniform(u: Tensor) -> Tensor:
    eps = torch.finfo(u.dtype).tiny
    return -torch.log(-torch.log(u.clamp(eps, 1.0 - 1e-7)))


# Mask schedules gamma(u) for u ~ U[0, 1]: the fraction of slots that are masked (docs/paper.md, symbols).
def mask_ratio(u: Tensor, schedule: str) -> Tensor:
    if schedule == "arccos":
        return torch.arccos(u) / (math.pi / 2)
    if schedule == "cosine":
        return torch.cos(u * math.pi / 2)
    if schedule == "cosine_clamped":        # Di[M]O's Meissonic runs: cosine clamped to [0.02, 0.98]
        return torch.cos(u * math.pi / 2).clamp(0.02, 0.98)
    if schedule == "linear":
        return 1.0 - u
    raise ValueError(f"unknown mask schedule {schedule!r}; allowed: {', '.join(MASK_SCHEDULES)}")


MASK_SCHEDULES = ("arccos", "cosine", "cosine_clamped", "linear")


# The MDM forward process q_{t|0} on slots: t ~ U[0, 1] per sample, exactly
# round(slots * gamma(t)) slots masked (at least 1). Returns a bool mask [B, L, G].
def random_slot_masks(layout: TokenLayout, batch: int, schedule: str, generator: torch.Generator,
                      device: torch.device | str = "cpu") -> Tensor:
    slots = layout.slots
    gamma = mask_ratio(torch.rand(batch, generator=generator, device=device), schedule)
    counts = (gamma * slots).round().clamp(1, slots)
    ranks = torch.rand(batch, slots, generator=generator, device=device).argsort(1).argsort(1)
    return (ranks < counts[:, None]).view(batch, layout.positions, layout.groups)
