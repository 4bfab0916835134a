"""The distillation loop (Algorithm 1 of Di[M]O, with Soft-Di[M]O's relaxations and refinements):
generator theta and auxiliary psi initialised from the teacher phi, EMA of theta, resumable
checkpoints holding every state (models, optimisers, EMA, all random generators).

One random generator (`Distiller.rng`) drives every draw of Di[M]O training and a second one
(`Distiller.refine_rng`) every draw of the refinement, so adding a refinement leaves the Di[M]O
draws unchanged (paired runs); evaluation and sampling use their own per-image streams
(`ImageNoise`), so they never disturb training. theta and psi run in train mode with
`distill.dropout` (the released code's setting); their dropout draws come from a third stream of
the run (`Distiller.dropout_stream`, softdimo/dropout.py: the same masks on every CPU; it also
seeds torch's global generator at every step, for torch's own dropout layers and CUDA tensors), so
the loop is deterministic and a resumed run ends bit-identical to an uninterrupted one. phi runs in
eval mode except in the Di[M]O term, where `distill.teacher_dropout` > 0 puts it in train mode at
that rate (the released MaskGIT trainer never calls its eval()); the EMA always runs in eval mode.
phi and psi each embed the re-masked sample with their own token table (the released code's
separate models; with `distill.freeze_embeddings` the two tables are equal).

Over several processes (`parallel`, softdimo/parallel.py) every process makes the Di[M]O draws for
the global batch and computes its own rows; dropout and the refinement draw from per-process streams.

Each step runs at `distill.precision` (softdimo/precision.py): under bf16 the networks' forwards
autocast and their logits are used in float32, while parameters, gradients, optimiser states and the
EMA stay float32; the random draws are the same at every precision.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softdimo.config import DistillConfig, RelaxConfig
from softdimo.dimo import (aux_loss, dimo_logit_gradient, dimo_surrogate_loss, jeffreys_divergence,
                           jeffreys_gradient, perturb_embeddings, token_init)
from softdimo.dropout import DropoutStream, drawing_from
from softdimo.files import atomic_write
from softdimo.parallel import DataParallel, GradientSync
from softdimo.precision import precision_region
from softdimo.relax import Relaxed
from softdimo.teachers.base import (Condition, ImageNoise, Teacher, derive_seed, gumbel_from_uniform,
                                    guided_logits, random_slot_masks)

RelaxFn = Callable[[Tensor, Tensor, RelaxConfig, float], Relaxed]

#----------------------------------------------------------------------------


# One generator forward pass of a training step, as refinements see it.
@dataclass
class GeneratorBatch:
    cond: Condition
    logits: Tensor                 # z_theta [B, L, G, C], with gradient
    relaxed: Relaxed               # q (differentiable for gumbel / soft) and x_theta
    step: int
    temperature: float = 1.0       # T of p_theta = softmax(z_theta / T) that x_theta was drawn from


# A refinement (GAN, reward, ...): extra generator loss terms and its own updates (docs/refinements.md).
class Refinement(Protocol):
    # Loss added to the generator objective (already weighted), and scalars to log. `rng` is the
    # refinement's own training stream (saved in checkpoints, so a resumed run draws the same).
    def generator_loss(self, batch: GeneratorBatch, rng: torch.Generator) -> tuple[Tensor, dict[str, float]]: ...

    # The refinement's own update after the generator step (e.g. the discriminator).
    def update(self, batch: GeneratorBatch, rng: torch.Generator) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # Optional: `optimizers()`, the optimisers of its trainable parts (GAN heads); with several
    # processes their gradients are averaged before each step.


#----------------------------------------------------------------------------


# Generate one-step samples: x_init per image (uniform tokens, exactly round(slots r_init) masked,
# embedding noise sigma_init), one forward pass at `precision` (softdimo/precision.py; the logits
# in float32), tokens drawn at `temperature` (docs/paper.md, "Di[M]O", step 7). Returns hard tokens
# [B, L, G] and the generator's probabilities [B, L, G, C].
@torch.no_grad()
def generate(network: nn.Module, cond: Condition, noise: ImageNoise, r_init: float, sigma_init: float,
             temperature: float = 1.0, precision: str = "fp32") -> tuple[Tensor, Tensor]:
    with precision_region(precision, noise.device):
        e = input_embeddings(network, noise, r_init, sigma_init)
        logits = network(e, cond).logits.float() / temperature
    return draw_tokens(logits, noise), F.softmax(logits, -1)


# The generator's input e_in per image: x_init (uniform tokens, exactly round(slots r_init)
# masked) embedded, plus variance-preserving noise sigma_init (docs/paper.md, "Di[M]O", step 1).
# TTEO optimises it.
@torch.no_grad()
def input_embeddings(network: nn.Module, noise: ImageNoise, r_init: float, sigma_init: float) -> Tensor:
    layout = network.layout
    tokens = noise.randint(layout.classes, layout.positions, layout.groups)
    n_mask = max(1, round(layout.slots * r_init))   # at least one, as the released code
    masked = (noise.randperm(layout.slots) < n_mask).view_as(tokens)
    x_init = torch.where(masked, torch.full_like(tokens, layout.mask_id), tokens)
    e = network.embed(x_init)
    return perturb_embeddings(e, sigma_init, noise.randn(*e.shape[1:]))


# The final token draw from (temperature-scaled) logits: Gumbel-max with each image's own noise.
@torch.no_grad()
def draw_tokens(logits: Tensor, noise: ImageNoise) -> Tensor:
    return (logits + noise.gumbel(*logits.shape[1:])).argmax(-1)


# lr multiplier: linear warm-up from 0, then constant (diffusers' constant_with_warmup, as the
# released Di[M]O code): min(1, step / warmup).
def warmup_constant(step: int, warmup: int) -> float:
    return min(1.0, step / warmup) if warmup > 0 else 1.0


# EMA rate at step s: min(decay, (1 + s) / (10 + s)) with the ramp (released Di[M]O code), else decay.
def ema_rate(decay: float, step: int, ramp: bool) -> float:
    return min(decay, (1.0 + step) / (10.0 + step)) if ramp else decay


# sigma_init at step s: fixed, or the released warm-up from 0 to 1 over `warmup` steps
# (linear min(1, s/W); cos 1 - (1 + cos(pi min(1, s/W))) / 2; exp 1 - exp(-s/W)).
def sigma_at(config: DistillConfig, step: int) -> float:
    schedule, w = config.sigma_init_schedule, max(config.sigma_init_warmup, 1)
    if schedule == "fixed":
        return config.sigma_init
    if schedule == "warmup_linear":
        return min(1.0, step / w)
    if schedule == "warmup_cos":
        return 1.0 - (1.0 + math.cos(math.pi * min(1.0, step / w))) / 2.0
    if schedule == "warmup_exp":
        return 1.0 - math.exp(-step / w)
    raise ValueError(f"distill.sigma_init_schedule: unknown {schedule!r}; allowed: fixed, warmup_linear, "
                     f"warmup_cos, warmup_exp")


# Set every dropout rate of a network: nn.Dropout modules and nn.MultiheadAttention's attention dropout.
def set_dropout(network: nn.Module, p: float) -> None:
    for module in network.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        elif isinstance(module, nn.MultiheadAttention):
            module.dropout = p


# Run a block with a network in train mode at dropout rate p (nothing changes for p = 0), then
# restore its mode and rates: the frozen teacher's dropout in the Di[M]O term.
@contextmanager
def dropout_active(network: nn.Module, p: float) -> Iterator[None]:
    if p <= 0:
        yield
        return
    modes = {m: m.training for m in network.modules()}
    rates = {m: (m.p if isinstance(m, nn.Dropout) else m.dropout) for m in network.modules()
             if isinstance(m, (nn.Dropout, nn.MultiheadAttention))}
    set_dropout(network, p)
    network.train()
    try:
        yield
    finally:
        for m, rate in rates.items():
            if isinstance(m, nn.Dropout):
                m.p = rate
            else:
                m.dropout = rate
        for m, training in modes.items():
            m.training = training


def _trainable(network: nn.Module, freeze_embeddings: bool) -> list[nn.Parameter]:
    frozen = network.embedding_parameter_names() if freeze_embeddings else set()
    params = []
    for name, p in network.named_parameters():
        p.requires_grad_(name not in frozen)
        if name not in frozen:
            params.append(p)
    return params


# The optimiser of theta or psi: Adam, or AdamW with decoupled weight decay (`distill.optimizer`).
def make_optimizer(params: list[nn.Parameter], lr: float, config: DistillConfig) -> torch.optim.Optimizer:
    betas = (config.adam_beta1, config.adam_beta2)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=config.adam_eps, weight_decay=config.weight_decay)
    if config.weight_decay:
        raise ValueError(f"distill.weight_decay = {config.weight_decay} needs distill.optimizer 'adamw' "
                         f"(the released code applies weight decay with adamw only)")
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=config.adam_eps)


# Mean max probability and entropy of the generator's p = softmax(z / T) over slots: how sharp it is.
@torch.no_grad()
def sharpness(logits: Tensor, temperature: float) -> dict[str, float]:
    logp = F.log_softmax(logits.detach() / temperature, -1)
    p = logp.exp()
    return {"p_max": p.amax(-1).mean().item(), "p_entropy": -(p * logp).sum(-1).mean().item()}


# Di[M]O distillation state and step (Algorithm 1).
class Distiller:
    def __init__(self, teacher: Teacher, relax: RelaxFn, relax_config: RelaxConfig,
                 config: DistillConfig, seed: int, refinement: Refinement | None = None,
                 device: torch.device | str = "cpu", parallel: DataParallel = DataParallel()):
        self.teacher, self.relax, self.relax_config = teacher, relax, relax_config
        self.config, self.refinement, self.parallel = config, refinement, parallel
        self.device = torch.device(device)
        parallel.local_batch(config.batch_size)
        self.generator = copy.deepcopy(teacher.network)            # theta <- phi
        self.aux = copy.deepcopy(teacher.network)                  # psi <- phi
        for network in (self.generator, self.aux):
            set_dropout(network, config.dropout)
            network.train(config.dropout > 0)
        self.ema = copy.deepcopy(teacher.network).eval().requires_grad_(False)
        self.opt_g = make_optimizer(_trainable(self.generator, config.freeze_embeddings), config.lr_generator, config)
        self.opt_a = make_optimizer(_trainable(self.aux, config.freeze_embeddings), config.lr_aux, config)
        # The Di[M]O draws, made for the whole global batch by every process (each keeps its rows).
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        # The refinement's own stream (GAN masks, real batches): the Di[M]O draws are the same with
        # and without a refinement, so runs that differ only in the refinement are paired. One
        # stream per process (rank 0's is the one-process stream), drawn for its own rows.
        self.refine_rng = torch.Generator(device=self.device).manual_seed(
            parallel.process_seed(derive_seed(seed, "refinement")))
        # Dropout's masks (softdimo/dropout.py), one stream per process like the refinement's; it
        # also seeds the global generator at every step (`_seeded_global_rng`).
        self.dropout_stream = DropoutStream(parallel.process_seed(derive_seed(seed, "dropout")))
        # Over several processes the gradients of theta, psi and the refinement's trainable parts
        # are averaged by bucketed all-reduces overlapping each backward pass (softdimo/parallel.py),
        # finished before clipping; the refinement's just before its optimisers step.
        self.sync_g = parallel.gradient_sync(_named_trainable(self.generator), "theta")
        self.sync_a = parallel.gradient_sync(_named_trainable(self.aux), "psi")
        for k, opt in enumerate(getattr(refinement, "optimizers", lambda: [])() if refinement is not None else []):
            sync = parallel.gradient_sync([(f"parameter {i} {tuple(p.shape)}", p) for i, p in enumerate(_params(opt))],
                                          f"refinement optimiser {k}")
            if sync is not None:
                opt.register_step_pre_hook(lambda o, args, kwargs, sync=sync: sync.finish())
        self.step = 0
        self.history: list[dict[str, float]] = []

    # r_init and sigma_init of this step (released: one r_init per step, shared by theta's and psi's passes).
    def _init_noise(self) -> tuple[float, float]:
        cfg = self.config
        r_init = cfg.r_init
        if cfg.r_init_range:
            lo, hi = cfg.r_init_range
            r_init = lo + (hi - lo) * torch.rand(1, generator=self.rng, device=self.device).item()
        return r_init, sigma_at(cfg, self.step)

    # Draw conditions, x_init and one generator forward pass (with gradient), relaxed: every draw
    # is made for the global batch of `batch` rows, the pass runs on this process's rows.
    def _generator_pass(self, batch: int, r_init: float, sigma_init: float) -> GeneratorBatch:
        cfg, layout, rows = self.config, self.teacher.layout, self.parallel.rows
        conditions = rows(self.teacher.sample_conditions(batch, self.rng))
        cond = self.teacher.encode_condition(conditions).to(self.device)
        x_init = rows(token_init(layout, batch, r_init, self.rng, self.device))
        e = self.generator.embed(x_init)
        noise = rows(torch.randn((batch, *e.shape[1:]), generator=self.rng, device=self.device))
        e = perturb_embeddings(e, sigma_init, noise)
        logits = self.generator(e, cond).logits.float()
        u = rows(torch.rand((batch, *logits.shape[1:]), generator=self.rng, device=self.device))
        relaxed = self.relax(logits, gumbel_from_uniform(u), self.relax_config, cfg.gen_temperature)
        return GeneratorBatch(cond, logits, relaxed, self.step, cfg.gen_temperature)

    # What phi and psi see: one-hot x_theta ("sampled", Di[M]O), or the relaxation's q ("relaxed").
    def _teacher_view(self, relaxed: Relaxed) -> Tensor:
        if self.config.teacher_input == "sampled":
            return F.one_hot(relaxed.tokens, self.teacher.layout.classes).float()
        return relaxed.q

    # One training step: generator update with the Jeffreys gradient (+ refinement terms from step
    # `refine_start` on), EMA, refinement update, then `aux_updates` psi updates on fresh re-masked
    # samples; at `distill.precision` (the networks' outputs are used in float32).
    def train_step(self) -> dict[str, float]:
        with drawing_from(self.dropout_stream), _seeded_global_rng(self.dropout_stream.next_seed(), self.device), \
                precision_region(self.config.precision, self.device):
            return self._train_step()

    def _train_step(self) -> dict[str, float]:
        cfg, layout, net_phi = self.config, self.teacher.layout, self.teacher.network
        lr_scale = warmup_constant(self.step, cfg.warmup_steps)
        for opt, lr in ((self.opt_g, cfg.lr_generator), (self.opt_a, cfg.lr_aux)):
            for group in opt.param_groups:
                group["lr"] = lr * lr_scale
        r_init, sigma_init = self._init_noise()
        batch = self._generator_pass(cfg.batch_size, r_init, sigma_init)
        mask = self.parallel.rows(random_slot_masks(layout, cfg.batch_size, cfg.mask_schedule, self.rng,
                                                    self.device))
        with torch.no_grad(), dropout_active(net_phi, cfg.teacher_dropout):
            view = self._teacher_view(batch.relaxed).detach()
            z_phi = guided_logits(net_phi, net_phi.embed_soft(view, mask), batch.cond, cfg.teacher_cfg).logits.float()
            z_psi = self.aux(self.aux.embed_soft(view, mask), batch.cond).logits.float()
            g = jeffreys_gradient(z_phi, z_psi, cfg.beta)
            divergence = jeffreys_divergence(z_phi, z_psi, cfg.beta)[mask].mean()
        refining = self.step >= cfg.refine_start and self.refinement is not None
        w_dimo = cfg.dimo_weight if self.step >= cfg.refine_start else 1.0
        loss = w_dimo * dimo_surrogate_loss(batch.logits, g, mask)
        log = {"step": float(self.step), "divergence": divergence.item(),
               **sharpness(batch.logits, batch.temperature)}
        if refining:
            extra, extra_log = self.refinement.generator_loss(batch, self.refine_rng)
            if cfg.refine_grad_ratio > 0:
                extra = extra * self._balance(extra, batch.logits, w_dimo * dimo_logit_gradient(g, mask))
            loss = loss + extra
            log.update(extra_log)
            batch.logits.retain_grad()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        if refining:
            log.update(gradient_norms(batch.logits.grad, w_dimo * dimo_logit_gradient(g, mask)))
        _finish(self.sync_g)
        log["grad_norm"] = _clip(self.opt_g, cfg.grad_clip)
        self.opt_g.step()
        self._update_ema()
        if refining:
            log.update(self.refinement.update(batch, self.refine_rng))
        for _ in range(cfg.aux_updates):
            log["aux_loss"] = self._aux_step(r_init, sigma_init)
        self.step += 1
        log = self.parallel.mean_scalars(log)
        self.history.append(log)
        return log

    # The factor that makes the refinement term's logit gradient `refine_grad_ratio` times the
    # Di[M]O term's (a variant; the paper weighs the refinement by its fixed weight).
    def _balance(self, extra: Tensor, logits: Tensor, dimo_grad: Tensor) -> float:
        (refine_grad,) = torch.autograd.grad(extra, logits, retain_graph=True)
        norm = torch.linalg.vector_norm(refine_grad).item()
        return self.config.refine_grad_ratio * torch.linalg.vector_norm(dimo_grad).item() / norm if norm > 0 else 0.0

    # One psi update. Its loss is a mean over the masked slots of the global batch: this process's
    # mean weighs by its share of them (exactly 1 alone), so averaging over processes gives that mean.
    def _aux_step(self, r_init: float, sigma_init: float) -> float:
        cfg, layout = self.config, self.teacher.layout
        with torch.no_grad():
            fresh = self._generator_pass(cfg.batch_size, r_init, sigma_init)
            global_mask = random_slot_masks(layout, cfg.batch_size, cfg.mask_schedule, self.rng, self.device)
            mask = self.parallel.rows(global_mask)
            view = self._teacher_view(fresh.relaxed)
        e_t = self.aux.embed_soft(view, mask)        # psi's own table: it learns unless frozen
        share = int(mask.sum()) * self.parallel.world_size / int(global_mask.sum())
        loss = aux_loss(self.aux(e_t, fresh.cond).logits.float(), fresh.relaxed.tokens, mask, cfg.aux_label_smoothing) * share
        self.opt_a.zero_grad(set_to_none=True)
        loss.backward()
        _finish(self.sync_a)
        _clip(self.opt_a, cfg.aux_grad_clip)
        self.opt_a.step()
        return loss.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        rate = ema_rate(self.config.ema_decay, self.step, self.config.ema_ramp)
        for p_ema, p in zip(self.ema.parameters(), self.generator.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - rate)

    # Everything needed to continue bit-identically. With several processes (every one calls it at
    # the same step) it adds each process's own streams and the world size.
    def state_dict(self) -> dict[str, Any]:
        state = {"step": self.step, "generator": self.generator.state_dict(), "aux": self.aux.state_dict(),
                 "ema": self.ema.state_dict(), "opt_g": self.opt_g.state_dict(),
                 "opt_a": self.opt_a.state_dict(), "rng": self.rng.get_state(),
                 "refine_rng": self.refine_rng.get_state(), "dropout_stream": self.dropout_stream.state_dict(),
                 "history": self.history,
                 "refinement": self.refinement.state_dict() if self.refinement is not None else None}
        if self.parallel.world_size > 1:
            state["world_size"] = self.parallel.world_size
            state["process_rngs"] = self.parallel.gather_objects(
                {"refine_rng": self.refine_rng.get_state(), "dropout_stream": self.dropout_stream.state_dict()})
        return state

    # Write a checkpoint of the state: every process calls it at the same step, rank 0 writes, and
    # all return once the file is in place.
    def save(self, path: Path) -> None:
        state = self.state_dict()
        if self.parallel.rank == 0:
            save_checkpoint(state, path)
        self.parallel.barrier()

    # Restore a state; `with_refinement=False` keeps the refinement as built (a shared Di[M]O prefix
    # saved before any refinement step, which the refinement never touched).
    def load_state_dict(self, state: dict[str, Any], with_refinement: bool = True) -> None:
        saved_by = state.get("world_size", 1)
        if saved_by != self.parallel.world_size:
            raise ValueError(f"the distillation state at step {state['step']} was saved by {saved_by} "
                             f"process(es) and this run has {self.parallel.world_size}: resume it with "
                             f"{saved_by}, or delete the run's checkpoints to start again")
        own = state["process_rngs"][self.parallel.rank] if saved_by > 1 else state
        self.step = state["step"]
        self.generator.load_state_dict(state["generator"])
        self.aux.load_state_dict(state["aux"])
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_a.load_state_dict(state["opt_a"])
        self.rng.set_state(state["rng"])
        self.dropout_stream.load_state_dict(own["dropout_stream"])
        self.history = state["history"]
        if with_refinement:
            self.refine_rng.set_state(own["refine_rng"])
            if self.refinement is not None:
                self.refinement.load_state_dict(state["refinement"])


    # Start from another run's final state (a continuation): its theta, psi, EMA, step and training
    # history, and its refinement's state with `with_refinement` (the same refinement). Optimiser
    # states (Adam moments, also the refinement's) continue only with `with_optimizers`; either way
    # the optimisers keep this run's settings (lr, betas, weight decay). The random streams stay
    # this run's own: a continuation does not replay its parent's draws.
    def continue_from(self, state: dict[str, Any], with_optimizers: bool, with_refinement: bool) -> None:
        self.step = state["step"]
        self.generator.load_state_dict(state["generator"])
        self.aux.load_state_dict(state["aux"])
        self.ema.load_state_dict(state["ema"])
        self.history = list(state["history"])
        if with_optimizers:
            _load_keeping_settings(self.opt_g, state["opt_g"])
            _load_keeping_settings(self.opt_a, state["opt_a"])
        if with_refinement and self.refinement is not None and state["refinement"] is not None:
            own = getattr(self.refinement, "optimizers", lambda: [])()
            settings = [_settings(opt) for opt in own]
            self.refinement.load_state_dict(state["refinement"])
            for opt, kept in zip(own, settings):
                _restore_settings(opt, kept)
                if not with_optimizers:
                    opt.state.clear()


# Load an optimiser's saved state (its moments) but keep its own hyper-parameters.
def _load_keeping_settings(opt: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    kept = _settings(opt)
    opt.load_state_dict(saved)
    _restore_settings(opt, kept)


def _settings(opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
    return [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]


def _restore_settings(opt: torch.optim.Optimizer, settings: list[dict[str, Any]]) -> None:
    for group, kept in zip(opt.param_groups, settings):
        group.update(kept)


# Norms of the Di[M]O and the refinement parts of the generator's logit gradient, and their ratio
# (the refinement part is the total minus the closed-form Di[M]O part); no ratio without a Di[M]O
# part (refinement only, `distill.dimo_weight` 0), where it would be infinite.
def gradient_norms(total: Tensor, dimo: Tensor) -> dict[str, float]:
    n_dimo = torch.linalg.vector_norm(dimo).item()
    n_refine = torch.linalg.vector_norm(total - dimo).item()
    ratio = {"grad_ratio": n_refine / n_dimo} if n_dimo > 0 else {}
    return {"grad_dimo": n_dimo, "grad_refine": n_refine, **ratio}


@contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    # Run a block with the global generator of `device` seeded with `seed` (torch's own dropout
    # draws from it), then restore the global state.
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        if cuda:
            torch.cuda.default_generators[device.index if device.index is not None
                                          else torch.cuda.current_device()].manual_seed(seed)
        else:
            torch.random.default_generator.manual_seed(seed)
        yield


# The (name, parameter) pairs of a network that its optimiser trains.
def _named_trainable(network: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in network.named_parameters() if p.requires_grad]


# Wait for a gradient synchronisation to end (over several processes); nothing alone.
def _finish(sync: GradientSync | None) -> None:
    if sync is not None:
        sync.finish()


def _params(opt: torch.optim.Optimizer) -> list[nn.Parameter]:
    return [p for group in opt.param_groups for p in group["params"]]


def _clip(opt: torch.optim.Optimizer, max_norm: float) -> float:
    params = [p for p in _params(opt) if p.grad is not None]
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))


#----------------------------------------------------------------------------


# Save a checkpoint atomically (temporary file, fsync, rename: softdimo.files).
def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


# Load `checkpoint` into the distiller if it exists; returns whether it did.
def resume_from(distiller: Distiller, checkpoint: Path | None, log: Callable[[str], None] = lambda s: None) -> bool:
    if checkpoint is None or not checkpoint.is_file():
        return False
    distiller.load_state_dict(torch.load(checkpoint, map_location=distiller.device, weights_only=True))
    log(f"resumed distillation at step {distiller.step} from {checkpoint}")
    return True


# Run (or, with `resume`, resume from `checkpoint`) distillation to `config.steps` (or `stop_after`):
# saves `checkpoint` every `checkpoint_every` steps, calls `on_eval(step, distiller)` every
# `eval_every` steps and `on_step(distiller)` after every step (a step boundary: the state is
# consistent there).
def run_distillation(distiller: Distiller, checkpoint: Path | None = None,
                     on_eval: Callable[[int, Distiller], None] | None = None,
                     log: Callable[[str], None] = lambda s: None,
                     stop_after: int | None = None,
                     on_step: Callable[[Distiller], None] | None = None, resume: bool = True) -> Distiller:
    cfg = distiller.config
    if resume:
        resume_from(distiller, checkpoint, log)
    while distiller.step < cfg.steps:
        if stop_after is not None and distiller.step >= stop_after:
            break
        entry = distiller.train_step()
        step = distiller.step
        if step % 25 == 0 or step == cfg.steps:
            log(f"distill step {step}/{cfg.steps} D={entry['divergence']:.4f} aux={entry['aux_loss']:.4f}")
        if on_eval is not None and cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            on_eval(step, distiller)
        if checkpoint is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            distiller.save(checkpoint)
        if on_step is not None:
            on_step(distiller)
    return distiller
