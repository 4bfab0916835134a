"""What the paper-scale text-to-image teachers (MaskGen, Meissonic) share in their registry entries:
Di[M]O's released text-to-image distillation recipe, the one it published (its Meissonic run:
`configs/DIMO_Meissonic.yaml` and `scripts/launch_DIMO_Meissonic.sh` of yuanzhi-zhu/DiMO at
24613741; docs/paper.md, "Di[M]O"), and the metrics such a teacher's runs report by default.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from harness.contracts.entries import RunContext, TeacherEntry
from harness.contracts.registry import teachers

# Di[M]O's text-to-image recipe; each teacher adds its steps, re-masking schedule and sampler.
DIMO_TEXT_TO_IMAGE: dict[str, Any] = {
    "distill.batch_size": 16,            # per-GPU 2 x grad-accum 8 on one GPU
    "distill.lr_generator": 1e-6,
    "distill.lr_aux": 1e-6,
    "distill.adam_beta1": 0.9,
    "distill.adam_beta2": 0.999,
    "distill.warmup_steps": 100,
    "distill.grad_clip": 1.0,
    "distill.precision": "bf16",         # mixed_precision bf16: autocast, float32 master weights
    "distill.adam_eps": 1e-6,            # the released adam_epsilon under bf16 (1e-8 in fp32)
    "distill.beta": 0.0,                 # Jeffreys_0.: forward KL
    "distill.r_init": 0.5,               # fixed_ratio
    "distill.sigma_init": 0.3,           # noise_emb_perturb: fix_0.3
    "distill.teacher_cfg": 4.0,          # true_cfg
    "distill.gen_temperature": 1.0,
    "distill.aux_label_smoothing": 0.1,
    "distill.aux_updates": 1,            # one psi update per theta update
    "distill.teacher_input": "sampled",  # Soft-Di[M]O: the Di[M]O term on hard sampled tokens
    "distill.freeze_embeddings": True,   # fix_emb_layer
    "distill.ema_decay": 0.9999,
    "distill.checkpoint_every": 1000,    # checkpointing_steps
    "sample.choice_temperature": 2.0,    # the teachers' own samplers (Gumbel / randomize temperature)
    "sample.temperature": 1.0,
}
DEFAULT_METRICS = ("geneval", "hps", "clip_score")

#----------------------------------------------------------------------------


# Register a paper-scale text-to-image teacher: `defaults` over Di[M]O's recipe, GenEval, HPS v2 and
# CLIP score as its default metrics.
def register_teacher(name: str, config_cls: type, build: Callable[[Any, RunContext], Any],
                     defaults: Mapping[str, Any], assets: Callable[[Any], list[str]], description: str) -> None:
    teachers.register(name, TeacherEntry(
        name=name, config_cls=config_cls, build=build, scales=("paper",),
        default_params={**DIMO_TEXT_TO_IMAGE, **defaults}, default_metrics=DEFAULT_METRICS, assets=assets,
        description=description))
