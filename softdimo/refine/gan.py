"""GAN refinement (Soft-Di[M]O, docs/paper.md): light discriminator heads on hidden states of the
frozen teacher phi, real = teacher embeddings of real tokens, fake = soft embeddings of the
generator's relaxed output, both randomly masked with a ratio r that the heads also see.

  L_D = E[softplus(-D(Emb(x_real)_r, r))] + E[softplus(D(sg(Emb(q_theta))_r, r))]
  L_GAN(theta) = E[softplus(-D(Emb(q_theta)_r, r))]        (non-saturating)

The generator objective is `distill.dimo_weight * L_DiMO + gan.weight * L_GAN
+ gan.feature_matching * L_FM`. Only the heads train (their own Adam); phi stays frozen. Choices
the paper leaves open are parameters of `GANConfig`, each saying what was chosen and why; the
discriminator's inputs (`real_input`, `hard_fakes`, `paired_masks`) and feature matching are the
constructions the paper's public description allows (docs/refinements.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softdimo.params import param
from softdimo.teachers.base import Condition, Teacher, TokenLayout

REAL_INPUTS = ("one_hot", "matched", "teacher_mix")
SOFTNESS_PROBE_EVERY = 10   # refinement steps between softness probes (each costs one pass of phi)

#----------------------------------------------------------------------------


# Stage `gan`: every choice of the GAN refinement.
@dataclass(frozen=True)
class GANConfig:
    weight: float = param(100.0, lo=0.0, help="w_GAN (mini, measured); paper 200 for the MaskBit 'longer training' run")
    layers: tuple = param((), help="teacher blocks (0-based; negative = from the end) whose hidden states "
                                   "feed one head each; empty = three evenly spaced blocks ending at the last "
                                   "(the poster draws three; placement NOT FOUND)")
    head_width: int = param(128, lo=1, help="width of each head's per-token MLP (architecture NOT FOUND)")
    mask_min: float = param(0.0, lo=0.0, hi=1.0, help="r_GAN ~ U[mask_min, mask_max] per sample (paper [0, 0.95]; "
                                                       "uniform is inferred)")
    mask_max: float = param(0.95, lo=0.0, hi=1.0, help="upper end of r_GAN; 0 = no masking")
    conditional: bool = param(True, help="phi computes D's features under the sample's condition "
                                         "(real: its label; fake: the generator's); False = null condition")
    lr: float = param(1e-3, lo=0.0, help="Adam lr of the heads (mini: at 1e-4 D stays at chance for 150 steps; "
                                         "paper: NOT FOUND)")
    adam_beta1: float = param(0.0, lo=0.0, hi=1.0, help="Adam beta1 of the heads (GAN practice: 0)")
    adam_beta2: float = param(0.99, lo=0.0, hi=1.0, help="Adam beta2 of the heads")
    d_updates: int = param(1, lo=1, help="discriminator updates per generator update")
    d_warmup: int = param(0, lo=0, help="refinement steps at the start in which only D trains (the generator's GAN "
                                        "and feature-matching terms weigh 0), so that D is informative when its "
                                        "gradient starts (the paper does not say; 0 = off)")
    real_input: str = param("one_hot", choices=REAL_INPUTS,
                            help="what D's real branch embeds: one_hot = the real tokens (the paper's); matched = "
                                 "a variant removing the softness cue: each real slot puts the fake batch's mean "
                                 "max probability on its token and the rest uniformly on the others; "
                                 "teacher_mix = (1 - real_mix) one_hot + real_mix p_phi, p_phi the teacher's "
                                 "prediction of each real slot with half of the image masked (no dependence on "
                                 "the fake batch)")
    real_mix: float = param(0.5, lo=0.0, hi=1.0, help="lambda of real_input teacher_mix: the weight of the "
                                                       "teacher's prediction in D's real slots")
    hard_fakes: bool = param(False, help="D's fake batch also holds one_hot(x_theta) of the same step (detached, "
                                         "the same masks), so softness alone does not separate real from fake")
    paired_masks: bool = param(False, help="real and fake row i share one mask draw (the same r and slots); "
                                           "False = independent draws (the paper's wording allows both)")
    feature_matching: float = param(0.0, lo=0.0, help="w_FM of L_FM: squared distance between the batch means "
                                                      "of phi's features at the head layers (per position) on "
                                                      "masked real and fake inputs; added to w_GAN L_GAN "
                                                      "(gan.weight 0 = feature matching alone); 0 = off")


# Blocks that carry a head: `layers` resolved against the teacher's depth, sorted, unique.
def head_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    if not layers:
        k = min(3, num_layers)
        return sorted({round(num_layers * (i + 1) / k) - 1 for i in range(k)})
    out = set()
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int) or not -num_layers <= i < num_layers:
            raise ValueError(f"gan.layers: {i!r} is not a block of this teacher; allowed integers in "
                             f"[{-num_layers}, {num_layers - 1}]")
        out.add(i % num_layers)
    return sorted(out)


# Random masking for D: r ~ U[lo, hi] per sample, exactly round(slots * r) slots masked. Returns the
# mask [B, L, G] and the realised ratio r [B] that is given to the heads.
def gan_masks(layout: TokenLayout, batch: int, lo: float, hi: float, rng: torch.Generator,
              device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    r = lo + (hi - lo) * torch.rand(batch, generator=rng, device=device)
    counts = (r * layout.slots).round()
    ranks = torch.rand(batch, layout.slots, generator=rng, device=device).argsort(1).argsort(1)
    mask = (ranks < counts[:, None]).view(batch, layout.positions, layout.groups)
    return mask, counts / layout.slots


# D's real input q [B, L, G, C] for real tokens [B, L, G]: their one-hot (the paper's), or
# "matched": the mean max probability m of the fake distributions on the real token and (1 - m) / (C - 1)
# on every other class, so that real and fake slots are equally sharp on average. ("teacher_mix"
# needs the teacher: `teacher_mixed_input`.)
def real_input(tokens: Tensor, classes: int, fake_q: Tensor, mode: str) -> Tensor:
    one_hot = F.one_hot(tokens, classes).to(fake_q.dtype)
    if mode == "one_hot":
        return one_hot
    if mode == "matched":
        m = fake_q.amax(-1).mean()
        return one_hot * m + (1.0 - one_hot) * (1.0 - m) / (classes - 1)
    raise ValueError(f"gan.real_input: unknown {mode!r}; allowed: {', '.join(REAL_INPUTS)}")


# The teacher's prediction p_phi of every slot of real tokens [B, L, G]: the slots are split into two
# random halves, and each half is predicted by a pass of phi with that half masked (the other half
# visible), under the real condition. Returns [B, L, G, C].
@torch.no_grad()
def teacher_predictions(network: nn.Module, layout: TokenLayout, tokens: Tensor, cond: Condition,
                        rng: torch.Generator) -> Tensor:
    batch = tokens.shape[0]
    ranks = torch.rand(batch, layout.slots, generator=rng, device=tokens.device).argsort(1).argsort(1)
    half = (ranks < layout.slots // 2).view_as(tokens)
    one_hot = F.one_hot(tokens, layout.classes).float()
    out = torch.zeros_like(one_hot)
    for masked in (half, ~half):
        p = F.softmax(network(network.embed_soft(one_hot, masked), cond).logits.float(), -1)
        out = torch.where(masked[..., None], p, out)
    return out


# "teacher_mix": real slots (1 - lambda) one_hot(x_real) + lambda p_phi(x_real), a fixed mixture
# that does not depend on the fake batch.
def teacher_mixed_input(network: nn.Module, layout: TokenLayout, tokens: Tensor, cond: Condition, mix: float,
                        rng: torch.Generator) -> Tensor:
    one_hot = F.one_hot(tokens, layout.classes).float()
    return (1.0 - mix) * one_hot + mix * teacher_predictions(network, layout, tokens, cond, rng)


# L_FM: mean over head layers of the squared distance between the batch means (per position and
# feature) of phi's hidden states on real and on fake inputs.
def feature_matching_loss(real: Sequence[Tensor], fake: Sequence[Tensor]) -> Tensor:
    return torch.stack([(f.mean(0) - r.mean(0)).pow(2).mean() for r, f in zip(real, fake)]).mean()


#----------------------------------------------------------------------------


# One head: per-token MLP on LayerNorm(h) with the mask ratio r added after the first layer,
# mean-pooled over positions, then a linear map to one logit.
class DiscriminatorHead(nn.Module):
    def __init__(self, d_model: int, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.inp = nn.Linear(d_model, width)
        self.ratio = nn.Linear(1, width)
        self.mid = nn.Linear(width, width)
        self.out = nn.Linear(width, 1)

    # Hidden states [B, L, D] and ratios r [B] -> logits [B].
    def forward(self, h: Tensor, r: Tensor) -> Tensor:
        x = F.gelu(self.inp(self.norm(h)) + self.ratio(r[:, None, None].to(h.dtype)))
        x = F.gelu(self.mid(x))
        return self.out(x.mean(1))[:, 0]


# The discriminator D_eta: frozen teacher features at `layers`, one head per layer.
class TeacherDiscriminator(nn.Module):
    def __init__(self, teacher: Teacher, layers: Sequence[int], width: int, conditional: bool, seed: int):
        super().__init__()
        self.teacher_network = [teacher.network]         # a list: not a submodule, never trained
        self.layers = list(layers)
        self.conditional = conditional
        d_model = _hidden_width(teacher)
        with torch.random.fork_rng(devices=[]):           # PyTorch's default init, seeded by the run
            torch.manual_seed(seed)
            self.heads = nn.ModuleList([DiscriminatorHead(d_model, width) for _ in self.layers])

    # Hidden states of phi at the head layers for (relaxed) token distributions q under `mask`.
    def features(self, q: Tensor, cond: Condition, mask: Tensor) -> list[Tensor]:
        net = self.teacher_network[0]
        e = net.embed_soft(q, mask)
        drop = None if self.conditional else torch.ones(e.shape[0], dtype=torch.bool, device=e.device)
        return net(e, cond, drop=drop, hidden_layers=self.layers).hidden

    # Logits [B, heads] from hidden states and ratios.
    def logits(self, hidden: list[Tensor], r: Tensor) -> Tensor:
        return torch.stack([head(h, r) for head, h in zip(self.heads, hidden)], 1)


def _hidden_width(teacher: Teacher) -> int:
    # D of the teacher's hidden states: one probe forward pass on a single all-mask input.
    layout, net = teacher.layout, teacher.network
    tokens = torch.full((1, layout.positions, layout.groups), layout.mask_id, dtype=torch.long)
    device = next(net.parameters()).device
    raw = teacher.eval_conditions(1)
    with torch.no_grad():
        out = net(net.embed(tokens.to(device)), teacher.encode_condition(raw).to(device), hidden_layers=[0])
    return out.hidden[0].shape[-1]


#----------------------------------------------------------------------------


# The GAN refinement (implements softdimo.train.Refinement).
class GANRefinement:
    def __init__(self, config: GANConfig, teacher: Teacher, seed: int, device: torch.device | str = "cpu"):
        if config.mask_min > config.mask_max:
            raise ValueError(f"gan.mask_min ({config.mask_min}) must not exceed gan.mask_max ({config.mask_max})")
        real = teacher.real_tokens()
        if real is None:
            raise ValueError(f"the GAN refinement needs real data, but teacher {teacher.name!r} is data-free "
                             f"(real_tokens() is None); give it tokenised real images")
        self.config, self.teacher = config, teacher
        self.device = torch.device(device)
        self.real_tokens = real[0].to(self.device)
        self.real_conditions = list(real[1])
        layers = head_layers(config.layers, teacher.network.num_layers)
        self.disc = TeacherDiscriminator(teacher, layers, config.head_width, config.conditional, seed).to(self.device)
        self.opt = torch.optim.Adam(self.disc.heads.parameters(), lr=config.lr,
                                    betas=(config.adam_beta1, config.adam_beta2))
        self.steps = 0                      # refinement steps taken (D's update calls)

    # A real batch of n rows (uniform over the real set): its tokens and encoded conditions.
    def real_batch(self, n: int, rng: torch.Generator) -> tuple[Tensor, Condition]:
        idx = torch.randint(self.real_tokens.shape[0], (n,), generator=rng, device=self.device)
        cond = self.teacher.encode_condition([self.real_conditions[i] for i in idx.tolist()]).to(self.device)
        return self.real_tokens[idx], cond

    # D's real input q for real tokens (`gan.real_input`; `fake_q` only for "matched").
    def real_q(self, tokens: Tensor, cond: Condition, fake_q: Tensor, rng: torch.Generator) -> Tensor:
        cfg, layout = self.config, self.teacher.layout
        if cfg.real_input == "teacher_mix":
            return teacher_mixed_input(self.teacher.network, layout, tokens, cond, cfg.real_mix, rng)
        return real_input(tokens, layout.classes, fake_q, cfg.real_input)

    # Masks and ratios for a real and a fake batch of n rows: one shared draw (`gan.paired_masks`)
    # or two independent ones.
    def masks(self, n: int, rng: torch.Generator) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        cfg, layout = self.config, self.teacher.layout
        real = gan_masks(layout, n, cfg.mask_min, cfg.mask_max, rng, self.device)
        fake = real if cfg.paired_masks else gan_masks(layout, n, cfg.mask_min, cfg.mask_max, rng, self.device)
        return real, fake

    # w_GAN * L_GAN(theta) (non-saturating loss of the fake batch; the heads get no gradient), plus
    # w_FM * L_FM against a fresh real batch when feature matching is on; both weigh 0 during the
    # first `d_warmup` refinement steps.
    def generator_loss(self, batch: Any, rng: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        cfg = self.config
        scale = 0.0 if self.steps < cfg.d_warmup else 1.0
        n = batch.logits.shape[0]
        if cfg.feature_matching > 0:
            (mask_r, _), (mask, r) = self.masks(n, rng)
        else:
            mask, r = gan_masks(self.teacher.layout, n, cfg.mask_min, cfg.mask_max, rng, self.device)
        hidden = self.disc.features(batch.relaxed.q, batch.cond, mask)
        self.disc.heads.requires_grad_(False)
        try:
            logits = self.disc.logits(hidden, r)
        finally:
            self.disc.heads.requires_grad_(True)
        adversarial = F.softplus(-logits).mean()
        loss, log = scale * cfg.weight * adversarial, {"gan_g_loss": adversarial.item()}
        if cfg.feature_matching > 0:
            tokens, cond = self.real_batch(n, rng)
            with torch.no_grad():
                real = self.disc.features(self.real_q(tokens, cond, batch.relaxed.q.detach(), rng), cond, mask_r)
            fm = feature_matching_loss(real, hidden)
            loss = loss + scale * cfg.feature_matching * fm
            log["gan_fm_loss"] = fm.item()
        return loss, log

    # `d_updates` discriminator steps: a real batch (uniform over the real set) against the
    # generator's relaxed samples of this step (detached; with `hard_fakes` also their one-hot
    # x_theta under the same masks, the fake term averaging both). Logs D's losses and the
    # diagnostics of `discriminator_diagnostics` on the last update (the softness probe on every
    # SOFTNESS_PROBE_EVERY-th refinement step, from the first).
    def update(self, batch: Any, rng: torch.Generator) -> dict[str, float]:
        cfg, layout = self.config, self.teacher.layout
        n = batch.logits.shape[0]
        fake_q = batch.relaxed.q.detach()
        hard_q = F.one_hot(batch.relaxed.tokens, layout.classes).to(fake_q.dtype) if cfg.hard_fakes else None
        for _ in range(cfg.d_updates):
            tokens, real_cond = self.real_batch(n, rng)
            real_q = self.real_q(tokens, real_cond, fake_q, rng)
            (mask_r, r_r), (mask_f, r_f) = self.masks(n, rng)
            with torch.no_grad():
                h_real = self.disc.features(real_q, real_cond, mask_r)
                h_fake = self.disc.features(fake_q, batch.cond, mask_f)
                h_hard = None if hard_q is None else self.disc.features(hard_q, batch.cond, mask_f)
            d_real, d_fake = self.disc.logits(h_real, r_r), self.disc.logits(h_fake, r_f)
            fake_loss = F.softplus(d_fake).mean()
            if h_hard is not None:
                fake_loss = 0.5 * (fake_loss + F.softplus(self.disc.logits(h_hard, r_f)).mean())
            loss = F.softplus(-d_real).mean() + fake_loss
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        self.steps += 1
        log = {"gan_d_loss": loss.item(), "gan_d_real": d_real.mean().item(), "gan_d_fake": d_fake.mean().item(),
               "gan_real_p_max": real_q.amax(-1).mean().item()}
        with torch.no_grad():
            log.update(self.discriminator_diagnostics(fake_q, h_fake, batch.cond, mask_f, r_f, d_real, d_fake,
                                                      probe=(self.steps - 1) % SOFTNESS_PROBE_EVERY == 0))
        return log

    # What D keys on: its accuracy on real (D > 0) and fake (D < 0) inputs of this update, and (with
    # `probe`) the softness probe: the fraction of (q, one_hot(argmax q)) pairs, same mask and ratio, that D
    # (after this update) scores the one-hot above the soft one, ties counting half (0.5: D ignores
    # softness, or the fake input is already one-hot as with gumbel; 1: D separates them by
    # softness). `h_fake`: phi's features of `fake_q` under `mask` (phi is frozen and in eval mode,
    # so the update's own features serve). MaskBit-style teachers add how many soft groups look
    # masked (`soft_diagnostics`).
    def discriminator_diagnostics(self, fake_q: Tensor, h_fake: list[Tensor], cond: Condition, mask: Tensor,
                                  r: Tensor, d_real: Tensor, d_fake: Tensor, probe: bool = True) -> dict[str, float]:
        out = {"gan_d_acc_real": (d_real > 0).float().mean().item(),
               "gan_d_acc_fake": (d_fake < 0).float().mean().item()}
        if probe:
            hard_q = F.one_hot(fake_q.argmax(-1), fake_q.shape[-1]).to(fake_q.dtype)
            d_hard = self.disc.logits(self.disc.features(hard_q, cond, mask), r)
            d_soft = self.disc.logits(h_fake, r)
            out["gan_softness_probe"] = ((d_hard > d_soft).float() + 0.5 * (d_hard == d_soft).float()).mean().item()
        if hasattr(self.teacher, "soft_diagnostics"):
            out.update({f"gan_{k}": v for k, v in self.teacher.soft_diagnostics(fake_q).items()})
        return out

    # The optimiser of the heads (data-parallel runs average their gradients).
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt]

    def state_dict(self) -> dict[str, Any]:
        return {"heads": self.disc.heads.state_dict(), "opt": self.opt.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.disc.heads.load_state_dict(state["heads"])
        self.opt.load_state_dict(state["opt"])
        self.steps = state.get("steps", 0)
