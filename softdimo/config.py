"""Typed configurations of the method's stages; grid keys `<stage>.<field>` map onto these fields.

Field defaults are the mini-scale defaults (digits teacher, 2 CPU cores); a teacher overrides
them for its own scale through its registry entry. PAPER.md section numbers name the source of
each value; "(mini)" marks values chosen by measurement at mini scale.
"""
from __future__ import annotations

from dataclasses import dataclass

from softdimo.params import param
from softdimo.teachers.base import MASK_SCHEDULES

#----------------------------------------------------------------------------


# Di[M]O distillation (PAPER.md 1.3-1.6, Algorithm 1).
@dataclass(frozen=True)
class DistillConfig:
    steps: int = param(200, lo=1, help="generator updates (mini); paper 30k-50k")
    batch_size: int = param(64, lo=1, help="conditions per step")
    lr_generator: float = param(2e-4, lo=0.0, help="Adam lr of theta (mini); paper 1e-5")
    lr_aux: float = param(6e-4, lo=0.0, help="Adam lr of psi (mini); paper 1e-5")
    adam_beta1: float = param(0.9, lo=0.0, hi=1.0, help="Adam beta1 (paper 0.9)")
    adam_beta2: float = param(0.999, lo=0.0, hi=1.0, help="Adam beta2 (paper 0.999)")
    warmup_steps: int = param(10, lo=0, help="linear lr warm-up steps (paper 100)")
    grad_clip: float = param(1.0, lo=0.0, help="max gradient norm; 0 = off")
    dimo_weight: float = param(1.0, lo=0.0, help="weight of the Di[M]O term; 0 = refinement only (GAN-only)")
    refine_start: int = param(0, lo=0, help="steps of plain Di[M]O (weight 1, refinement off) before the "
                                            "refinement and dimo_weight apply; Soft-Di[M]O refines a distilled "
                                            "Di[M]O student (PAPER.md 2.5, 2.8)")
    beta: float = param(0.0, help="generalised Jeffreys weight: 0 forward KL, 1 reverse KL")
    r_init: float = param(0.7, lo=0.0, hi=1.0, help="fraction of x_init masked (mini); paper 0.6 / 0.5")
    sigma_init: float = param(0.1, lo=0.0, hi=1.0, help="variance-preserving noise on x_init embeddings")
    teacher_cfg: float = param(1.0, lo=0.0, help="CFG weight w of phi in the loss; 1 = none")
    gen_temperature: float = param(1.0, lo=1e-6, help="temperature of p_theta when drawing x_theta")
    mask_schedule: str = param("arccos", choices=MASK_SCHEDULES, help="re-masking schedule gamma(t)")
    aux_label_smoothing: float = param(0.1, lo=0.0, hi=1.0, help="psi cross-entropy label smoothing")
    aux_updates: int = param(1, lo=1, help="psi updates per theta update (fake_rounds)")
    teacher_input: str = param("relaxed", choices=("relaxed", "sampled"),
                               help="what phi and psi see in the Di[M]O term")
    freeze_embeddings: bool = param(True, help="fix_emb_layer: token/position embeddings, output bias")
    ema_decay: float = param(0.9, lo=0.0, hi=1.0, help="EMA of theta used for sampling; paper 0.9999")
    checkpoint_every: int = param(50, lo=0, help="steps between resumable checkpoints; 0 = none")
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
    # Test-time scaling of the one-step student (PAPER.md 2.7; softdimo/refine/tteo.py).
    tteo_steps: int = param(0, lo=0, help="TTEO: SGD steps on the generator's input embedding; 0 = off "
                                          "(paper 2 and 4)")
    tteo_lr: float = param(0.2, lo=0.0, help="TTEO SGD learning rate (paper 0.2, no clipping)")
    tteo_reward: tuple = param((), help="reward models TTEO ascends (registry.rewards), summed; needed when "
                                        "tteo_steps > 0 (paper: NOT FOUND)")
    tteo_proximity: float = param(0.0, lo=0.0, help="mu of -mu ||e - e_init||^2 in the TTEO objective (ours; "
                                                    "the paper names no regulariser)")
    tteo_batch: int = param(500, lo=1, help="images per TTEO batch (memory only; results do not depend on it)")
    best_of_n: int = param(1, lo=1, help="candidates per condition, the best by select_reward kept (paper 1-64)")
    select_reward: tuple = param((), help="reward models whose sum scores best-of-N candidates (paper: CLIP, "
                                          "ImageReward, HPS, PickScore composite); needed when best_of_n > 1")
