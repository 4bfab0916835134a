"""Typed configurations of the method's stages; grid keys `<stage>.<field>` map onto these fields.

Method choices default to the papers or the released Di[M]O code; budgets default to the mini scale
(digits teacher, 2 CPU cores), and a teacher overrides them for its own scale through its registry
entry. docs/fidelity.md gives the source of every value; "(mini)" marks values chosen by
measurement at mini scale.
"""
from __future__ import annotations

from dataclasses import dataclass

from softdimo.params import param
from softdimo.precision import PRECISIONS
from softdimo.teachers.base import MASK_SCHEDULES

OPTIMIZERS = ("adam", "adamw")
SIGMA_SCHEDULES = ("fixed", "warmup_linear", "warmup_cos", "warmup_exp")
COMBINES = ("sum", "zscore")       # how best-of-N's selection rewards combine (softdimo.refine.selection)

#----------------------------------------------------------------------------


# Di[M]O distillation (Algorithm 1 of arXiv 2503.15457 and the released Di[M]O code).
# Method choices default to the released code (docs/fidelity.md); budgets (steps, batch, learning
# rates, warm-up) default to the mini scale and paper-scale teachers set the released values.
@dataclass(frozen=True)
class DistillConfig:
    steps: int = param(200, lo=1, help="generator updates (mini); released 50k (MaskGIT), 20k (Meissonic)")
    batch_size: int = param(64, lo=1, help="conditions per step (the global batch)")
    lr_generator: float = param(2e-4, lo=0.0, help="lr of theta (mini); released 1e-5 (MaskGIT)")
    lr_aux: float = param(6e-4, lo=0.0, help="lr of psi (mini); released 1e-5 (MaskGIT)")
    optimizer: str = param("adam", choices=OPTIMIZERS, help="optimiser of theta and psi (released: adam; "
                                                            "the Soft-Di[M]O MaskBit longer run: adamw)")
    weight_decay: float = param(0.0, lo=0.0, help="decoupled weight decay of adamw (released 0; the MaskBit "
                                                  "longer run 0.01); adam takes none")
    adam_beta1: float = param(0.9, lo=0.0, hi=1.0, help="Adam beta1 (released 0.9)")
    adam_beta2: float = param(0.999, lo=0.0, hi=1.0, help="Adam beta2 (released 0.999)")
    adam_eps: float = param(1e-8, lo=0.0, help="Adam epsilon (released 1e-8 in fp32, 1e-6 under bf16; paper "
                                               "teachers set 1e-6 with precision bf16)")
    warmup_steps: int = param(10, lo=0, help="linear lr warm-up from 0, lr x min(1, step / warmup) (mini; "
                                             "released 100)")
    grad_clip: float = param(1.0, lo=0.0, help="max gradient norm of theta; 0 = off (released 1.0 under bf16)")
    aux_grad_clip: float = param(0.0, lo=0.0, help="max gradient norm of psi; 0 = off (released: psi unclipped)")
    dropout: float = param(0.1, lo=0.0, hi=0.99, help="theta and psi train in train mode with this rate in every "
                                                     "dropout layer (released: train mode, dropout 0.1); 0 = eval mode")
    teacher_dropout: float = param(0.1, lo=0.0, hi=0.99, help="phi computes the Di[M]O term in train mode with this "
                                                             "dropout rate (the released code never puts phi in eval "
                                                             "mode: dropout 0.1); 0 = eval mode")
    dimo_weight: float = param(1.0, lo=0.0, help="weight of the Di[M]O term; 0 = refinement only (GAN-only)")
    refine_grad_ratio: float = param(0.0, lo=0.0, help="0 = the refinement's own weight (the paper's); > 0 = a "
                                                       "variant: each step the refinement term is rescaled so that "
                                                       "its gradient on the logits is this multiple of the Di[M]O "
                                                       "term's")
    refine_start: int = param(0, lo=0, help="steps of plain Di[M]O (weight 1, refinement off) before the "
                                            "refinement and dimo_weight apply; cells that continue the same "
                                            "Di[M]O student share its state at this step")
    beta: float = param(0.0, help="generalised Jeffreys weight: 0 forward KL (released), 1 reverse KL")
    r_init: float = param(0.7, lo=0.0, hi=1.0, help="fraction of x_init masked (mini); released 0.6 / 0.5")
    r_init_range: tuple = param((), help="[a, b]: r_init ~ U[a, b] drawn once per training step (released "
                                         "random_a_b); empty = r_init fixed (released fix_r)")
    sigma_init: float = param(0.1, lo=0.0, hi=1.0, help="variance-preserving noise on x_init embeddings")
    sigma_init_schedule: str = param("fixed", choices=SIGMA_SCHEDULES,
                                     help="fixed = sigma_init (released fix_s); warmup_* = the released "
                                          "warm-up of sigma from 0 to 1 over sigma_init_warmup steps")
    sigma_init_warmup: int = param(0, lo=0, help="steps of the sigma_init warm-up (warmup_* schedules)")
    teacher_cfg: float = param(1.0, lo=0.0, help="CFG weight w of phi in the loss; 1 = none (released 2.0 "
                                                 "MaskGIT, 4.0 Meissonic)")
    gen_temperature: float = param(1.0, lo=1e-6, help="temperature of p_theta when drawing x_theta")
    mask_schedule: str = param("arccos", choices=MASK_SCHEDULES, help="re-masking schedule gamma(t)")
    aux_label_smoothing: float = param(0.1, lo=0.0, hi=1.0, help="psi cross-entropy label smoothing")
    aux_updates: int = param(1, lo=1, help="psi updates per theta update (fake_rounds)")
    teacher_input: str = param("sampled", choices=("sampled", "relaxed"),
                               help="what phi and psi read in the Di[M]O term: sampled = the re-masked hard "
                                    "sample x_theta (Di[M]O, Soft-Di[M]O); relaxed = the relaxation's q (a "
                                    "variant)")
    freeze_embeddings: bool = param(True, help="fix_emb_layer: token/position embeddings, output bias")
    ema_decay: float = param(0.9999, lo=0.0, hi=1.0, help="EMA of theta used for sampling (released 0.9999)")
    ema_ramp: bool = param(True, help="EMA rate min(ema_decay, (1 + s) / (10 + s)) at step s (released); "
                                      "False = the constant ema_decay")
    precision: str = param("fp32", choices=PRECISIONS,
                           help="numerics of the loop and the student's sampling (softdimo/precision.py): fp32; "
                                "bf16 = autocast, float32 master weights (released; paper teachers); tf32 = "
                                "TF32 matmuls where the GPU has them")
    checkpoint_every: int = param(50, lo=0, help="steps between resumable checkpoints; 0 = none")
    init_from: str = param("", help="continue another run's student: its run id, or a selector KEY=VALUE[,...] "
                                    "of one cell of the same grid (read by the harness); trains on from "
                                    "its last step to `steps`; empty = start from the teacher")
    init_optimizer: bool = param(False, help="with init_from: also continue the parent's optimiser states "
                                             "(Adam moments); False = fresh optimisers")
    eval_every: int = param(0, lo=0, help="steps between metric evaluations (curves); 0 = end only")


# How generator logits reach the teacher and the decoder (relaxation-specific knobs).
@dataclass(frozen=True)
class RelaxConfig:
    gumbel_tau: float = param(1.0, lo=1e-6, help="Gumbel-softmax temperature (straight-through backward)")


# Sampling: the one-step student (x_init as in training) and the teacher's multi-step sampler.
@dataclass(frozen=True)
class SampleConfig:
    temperature: float = param(1.0, lo=1e-6, help="softmax temperature of the final token draw")
    steps: int = param(16, lo=1, help="K of the teacher's own sampler (teacher_sampler method)")
    cfg: float = param(1.0, lo=0.0, help="CFG weight of the teacher's sampler; 1 = none")
    choice_temperature: float = param(4.5, lo=0.0, help="MaskGIT Gumbel noise on confidences (annealed)")
    # Test-time scaling of the one-step student (arXiv 2509.22925; softdimo/refine/tteo.py).
    tteo_steps: int = param(0, lo=0, help="TTEO: SGD steps on the generator's input embedding; 0 = off "
                                          "(paper 2 and 4)")
    tteo_lr: float = param(0.2, lo=0.0, help="TTEO SGD learning rate per unit of the rewards' native score "
                                             "(paper 0.2, no clipping; the paper does not state the scale)")
    tteo_reward: tuple = param((), help="reward models TTEO ascends (registry.rewards), summed in native units "
                                        "(R / unit); needed when tteo_steps > 0 (paper: not stated)")
    tteo_proximity: float = param(0.0, lo=0.0, help="mu of -mu ||e - e_init||^2 in the TTEO objective (ours; "
                                                    "the paper names no regulariser)")
    tteo_batch: int = param(500, lo=1, help="images per TTEO batch (memory only; results do not depend on it)")
    best_of_n: int = param(1, lo=1, help="candidates per condition, the best by select_reward kept (paper 1-64)")
    select_reward: tuple = param((), help="reward models that score best-of-N candidates, combined by "
                                          "select_combine (paper: CLIP, ImageReward, HPS, PickScore composite); "
                                          "needed when best_of_n > 1")
    select_combine: str = param("sum", choices=COMBINES,
                                help="how select_reward's scores combine: sum = summed in native units (R / "
                                     "unit); zscore = each standardised over the N candidates of the same "
                                     "condition, then summed with equal weights (the paper's weighting is not "
                                     "published)")
