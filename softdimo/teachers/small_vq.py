"""A small VQ tokenizer (VQ-VAE) for the mini-scale learned-codebook world, trained here on CPU.

Encoder: two stride-2 4x4 convolutions and a 3x3 one (images 32x32 -> an 8x8 grid of D-dim
latents, one token per 4x4-pixel patch); a codebook of K vectors (nearest neighbour,
straight-through gradients, commitment loss); decoder: two 3x3 convolutions on the 8x8 grid, then
two stride-2 4x4 transposed convolutions back to 32x32 and a sigmoid. The decoder sees a 3x3
neighbourhood of tokens at least, so a token's pixels depend on its neighbours, as in a VQGAN.

The codebook is learned by exponential moving averages of the assigned encoder outputs (van den
Oord et al. 2017, appendix; Razavi et al. 2019) with Laplace smoothing, initialised from encoder
outputs of the first batch; a code whose average use falls below `DEAD_CODE_USE` is restarted at
the encoder output of the current batch that its code represents worst (not at a random one: most
outputs are background, and random restarts split the background over many equivalent codes).
All random draws come from one generator: training is deterministic on one machine at a fixed
thread count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softdimo.teachers.small_mdm import warmup_cosine

DEAD_CODE_USE = 0.03          # a code's EMA count per batch below which it is restarted
EMA_EPSILON = 1e-5            # Laplace smoothing of the EMA counts

#----------------------------------------------------------------------------


# Architecture of a SmallVQ: width at full and half resolution is `channels` / 2 and `channels`
# (the 8x8 grid has 2 x `channels`), latent dimension D, codebook size K.
@dataclass(frozen=True)
class SmallVQArch:
    image_channels: int = 3
    channels: int = 32
    latent_dim: int = 16
    codebook_size: int = 128


class SmallVQ(nn.Module):
    def __init__(self, arch: SmallVQArch):
        super().__init__()
        self.arch = arch
        c, d = arch.channels, arch.latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(arch.image_channels, c, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * c, d, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(d, 2 * c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c // 2, arch.image_channels, 3, padding=1))
        self.register_buffer("codebook", torch.zeros(arch.codebook_size, d))
        self.register_buffer("ema_count", torch.zeros(arch.codebook_size))
        self.register_buffer("ema_sum", torch.zeros(arch.codebook_size, d))

    # Encoder outputs [B, D, h, w] of images [B, C, H, W] in [0, 1].
    def encode_latent(self, images: Tensor) -> Tensor:
        return self.encoder(images * 2.0 - 1.0)

    # Index of the nearest code of each latent vector: [B, D, h, w] -> [B, h, w].
    def nearest_codes(self, latent: Tensor) -> Tensor:
        z = latent.permute(0, 2, 3, 1)
        d2 = (z * z).sum(-1, keepdim=True) - 2.0 * z @ self.codebook.T + (self.codebook * self.codebook).sum(-1)
        return d2.argmin(-1)

    # Images [B, C, H, W] in [0, 1] -> codes [B, h, w].
    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        return self.nearest_codes(self.encode_latent(images))

    # Codes [B, h, w] -> their codebook vectors [B, D, h, w].
    def codes_to_latent(self, codes: Tensor) -> Tensor:
        return self.codebook[codes].permute(0, 3, 1, 2)

    # Code distributions [B, h, w, K] -> expected codebook vectors sum_j p_j c_j [B, D, h, w].
    def probs_to_latent(self, probs: Tensor) -> Tensor:
        return (probs @ self.codebook).permute(0, 3, 1, 2)

    # Latents [B, D, h, w] -> images [B, C, H, W] in [0, 1].
    def decode(self, latent: Tensor) -> Tensor:
        return self.decoder(latent)


#----------------------------------------------------------------------------
# Training.


# Optimisation settings of tokenizer training.
@dataclass(frozen=True)
class VQTrainSettings:
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    commitment: float = 0.25       # beta of the commitment loss
    ema_decay: float = 0.99        # codebook EMA rate


def _ema_update(vq: SmallVQ, flat: Tensor, codes: Tensor, decay: float, g: torch.Generator) -> None:
    # One EMA step of the codebook on encoder outputs flat [N, D] assigned to codes [N]; then
    # restart codes whose average use fell below DEAD_CODE_USE at the worst-quantised outputs.
    k = vq.arch.codebook_size
    onehot = F.one_hot(codes, k).to(flat.dtype)
    vq.ema_count.mul_(decay).add_(onehot.sum(0), alpha=1 - decay)
    vq.ema_sum.mul_(decay).add_(onehot.T @ flat, alpha=1 - decay)
    n = vq.ema_count.sum()
    count = (vq.ema_count + EMA_EPSILON) / (n + k * EMA_EPSILON) * n
    vq.codebook.copy_(vq.ema_sum / count[:, None])
    dead = vq.ema_count < DEAD_CODE_USE
    if dead.any():
        error = (flat - vq.codebook[codes]).pow(2).sum(-1)
        picks = error.topk(int(dead.sum())).indices
        vq.codebook[dead] = flat[picks]
        vq.ema_sum[dead] = flat[picks]
        vq.ema_count[dead] = 1.0


# Train a SmallVQ on images drawn by `batches(step, generator)` ([B, C, H, W] in [0, 1]) with the
# reconstruction loss MSE(x, Dec(sg-quantised Enc(x))) + beta * commitment. Returns the per-step log
# (loss, reconstruction MSE, codes in use in the batch, lr).
def train_vq(vq: SmallVQ, batches: Callable[[int, torch.Generator], Tensor], settings: VQTrainSettings,
             seed: int, log: Callable[[str], None] = lambda s: None) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for n, p in vq.named_parameters()], lr=settings.lr)
    history = []
    vq.train()
    for step in range(settings.steps):
        lr = settings.lr * warmup_cosine(step, settings.warmup_steps, settings.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        images = batches(step, g)
        latent = vq.encode_latent(images)
        flat = latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1])
        if step == 0:
            with torch.no_grad():
                vq.codebook.copy_(flat[torch.randint(flat.shape[0], (vq.arch.codebook_size,), generator=g)])
                vq.ema_count.fill_(2 * DEAD_CODE_USE)     # unused initial codes restart within ~70 steps
                vq.ema_sum.copy_(vq.codebook * vq.ema_count[:, None])
        codes = vq.nearest_codes(latent.detach())
        quantised = vq.codes_to_latent(codes)
        straight = latent + (quantised - latent).detach()
        recon = F.mse_loss(vq.decode(straight), images)
        commit = F.mse_loss(latent, quantised)
        loss = recon + settings.commitment * commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            _ema_update(vq, flat.detach(), codes.flatten(), settings.ema_decay, g)
        used = int(codes.unique().numel())
        history.append({"step": step, "loss": loss.item(), "recon_mse": recon.item(), "codes_used": used, "lr": lr})
        if step % 100 == 0 or step == settings.steps - 1:
            log(f"tokenizer step {step}/{settings.steps} recon mse {recon.item():.5f} codes in batch {used}")
    vq.eval()
    return history
