"""What the paper-scale class-conditional ImageNet-256 teachers (MaskGIT, MaskBit) share in their
registry entries: Di[M]O's released ImageNet distillation recipe (its MaskGIT run:
`configs/DIMO_MaskGit.yaml` and `scripts/launch_DIMO_MaskGit.sh` of yuanzhi-zhu/DiMO; docs/paper.md,
"Di[M]O"; its seed 3407, `global_seed`, is a grid axis here), the ADM evaluation protocol's sample
count and metrics, and ImageNet's class names.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from harness.builtin.file_fields import FileFields
from harness.contracts.entries import RunContext, TeacherEntry
from harness.contracts.registry import teachers
from harness.grid.conditions import imagenet_class_names

# Di[M]O's ImageNet recipe; each teacher adds its sampler (and may note how a value applies to it).
DIMO_IMAGENET: dict[str, Any] = {
    "distill.steps": 50_000,            # max_train_steps 50,001 (the eval script scores the 30k checkpoint)
    "distill.batch_size": 128,          # --train_batch_size 64 per GPU x 2 GPUs (run name "GPUS2"; inferred)
    "distill.lr_generator": 1e-5,       # generator_lr
    "distill.lr_aux": 1e-5,             # fake_lr
    "distill.adam_beta1": 0.9,
    "distill.adam_beta2": 0.999,        # Adam, weight decay 0
    "distill.warmup_steps": 100,        # constant_with_warmup
    "distill.grad_clip": 1.0,           # max_grad_norm (upstream applies it only under fp16/bf16)
    "distill.precision": "bf16",        # mixed_precision bf16: autocast, float32 master weights
    "distill.adam_eps": 1e-6,           # the released adam_epsilon under bf16 (1e-8 in fp32)
    "distill.beta": 0.0,                # Jeffreys_0.: forward KL
    "distill.r_init": 0.6,              # fixed_ratio fix_0.6
    "distill.sigma_init": 0.1,          # noise_emb_perturb fix_0.1
    "distill.teacher_cfg": 2.0,         # true_cfg
    "distill.gen_temperature": 1.0,     # gen_temp
    "distill.mask_schedule": "arccos",  # ratio_mode and ratio_mode_fake
    "distill.aux_label_smoothing": 0.1,
    "distill.aux_updates": 1,           # fake_rounds 1
    "distill.freeze_embeddings": True,  # fix_emb_layer
    "distill.ema_decay": 0.9999,
    "distill.checkpoint_every": 1000,   # checkpointing_steps
    # w_GAN: 200 is the only value the paper reports (its MaskBit longer-training run, with AdamW
    # lr 5e-7 and weight decay 0.01); the base run's weight and learning rate are not reported.
    "gan.weight": 200.0,
    "eval.samples": 50_000,             # the ADM protocol: 50 images per class
}
ADM_METRICS = ("fid", "inception_score", "prdc")

#----------------------------------------------------------------------------


# Register a paper-scale ImageNet-256 teacher: `defaults` over Di[M]O's recipe, the ADM metrics by
# default, ImageNet's class names, and the assets of its file fields.
def register_teacher(name: str, config_cls: type, build: Callable[[Any, RunContext], Any],
                     defaults: Mapping[str, Any], files: FileFields, description: str) -> None:
    teachers.register(name, TeacherEntry(
        name=name, config_cls=config_cls, build=build, scales=("paper",),
        default_params={**DIMO_IMAGENET, **defaults}, default_metrics=ADM_METRICS, assets=files.assets,
        class_names=imagenet_class_names, description=description))
