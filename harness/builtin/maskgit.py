"""Registers the `maskgit` teacher (Halton-MaskGIT v1.0, ImageNet 256) and its released weight files.

Assets (Hugging Face `llvictorll/Maskgit-pytorch`, the files Halton-MaskGIT v1.0's
`download_models.py` fetches; sha256 from the repository's Git LFS pointers):
- `maskgit_imagenet256`: `pretrained_maskgit/MaskGIT/MaskGIT_ImageNet_256.pth` (2.09 GB: iteration,
  epoch, `model_state_dict`, `optimizer_state_dict`);
- `maskgit_vqgan_f16_1024`: `pretrained_maskgit/VQGAN/last.ckpt` (958 MB Lightning checkpoint of the
  taming VQGAN ImageNet f16-1024; its `state_dict` also holds the training losses under `loss.`).
A `teacher.*_weights` or `teacher.real_tokens` value may also be a file path; it then becomes an
asset of its own, so the pre-launch check names it when it is missing.
"""
from __future__ import annotations

from typing import Any

from harness import assets
from harness.conditions import imagenet_class_names
from harness.entries import RunContext, TeacherEntry
from harness.registry import teachers
from softdimo.teachers.maskgit import RELEASED_SAMPLERS, MaskGITConfig, MaskGITTeacher, build_maskgit_teacher

HF_REPO = "https://huggingface.co/llvictorll/Maskgit-pytorch"
MASKGIT_ASSETS = (
    assets.Asset("maskgit_imagenet256", "maskgit/MaskGIT_ImageNet_256.pth",
                 f"{HF_REPO} (file pretrained_maskgit/MaskGIT/MaskGIT_ImageNet_256.pth, 2.09 GB)",
                 sha256="74b38fa16c92da3db79f9aac3c9d0d2ef5cb6ea283c48908213f10d786304462",
                 env_var="SOFTDIMO_MASKGIT_IMAGENET256",
                 description="Halton-MaskGIT v1.0 ImageNet-256 transformer (174M; model_state_dict)"),
    assets.Asset("maskgit_vqgan_f16_1024", "maskgit/VQGAN/last.ckpt",
                 f"{HF_REPO} (file pretrained_maskgit/VQGAN/last.ckpt, 958 MB)",
                 sha256="e38a3aed8c86e8d47436f611325b3a23888cab70a0cc56c13cd84e8d4aab6e71",
                 env_var="SOFTDIMO_MASKGIT_VQGAN",
                 description="taming VQGAN ImageNet f16, 1024 codes (72M; Lightning state_dict)"),
)
for _asset in MASKGIT_ASSETS:
    assets.manifest.register(_asset.name, _asset)

# Each file field of MaskGITConfig and its released asset (None: no default file).
FILE_FIELDS = {"transformer_weights": "maskgit_imagenet256", "vqgan_weights": "maskgit_vqgan_f16_1024",
               "real_tokens": None}
FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")

#----------------------------------------------------------------------------


# The asset behind one `teacher.*` file field: the released default (full size), a registered
# asset, or a file path (absolute, or relative to the asset root) registered on first use.
def field_asset(config: MaskGITConfig, field: str) -> str | None:
    value: str = getattr(config, field)
    if not value:
        return FILE_FIELDS[field] if config.size == "full" else None
    return assets.field_asset(value, f"maskgit_{field}", f"teacher.{field}", f"MaskGIT {field} given by path",
                              FILE_SUFFIXES)


# Every asset a configuration needs (checked before launch).
def maskgit_assets(config: MaskGITConfig) -> list[str]:
    return [name for field in FILE_FIELDS if (name := field_asset(config, field)) is not None]


# Build the teacher on the job's device from the resolved asset paths.
def build(config: MaskGITConfig, ctx: RunContext) -> MaskGITTeacher:
    paths = {field: assets.resolve(name) if (name := field_asset(config, field)) else None
             for field in FILE_FIELDS}
    teacher = build_maskgit_teacher(config, paths["transformer_weights"], paths["vqgan_weights"],
                                    paths["real_tokens"], device=ctx.device)
    ctx.log(f"maskgit teacher: {config.size}, transformer {teacher.info['transformer']}, "
            f"VQGAN {teacher.info['vqgan']}")
    return teacher


#----------------------------------------------------------------------------
# Paper-scale defaults: Di[M]O's released MaskGIT run (yuanzhi-zhu/DiMO configs/DIMO_MaskGit.yaml
# and scripts/launch_DIMO_MaskGit.sh); its seed is 3407 (`global_seed`; seeds here are grid axes).

_SAMPLER = RELEASED_SAMPLERS["dimo_teacher"]
PAPER_DEFAULTS: dict[str, Any] = {
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
    "distill.freeze_embeddings": True,  # fix_emb_layer: tok_emb (tied head, class rows), pos_emb, bias
    "distill.ema_decay": 0.9999,
    "distill.checkpoint_every": 1000,   # checkpointing_steps
    # w_GAN: 200 is the only value the paper reports (its MaskBit longer-training run, with AdamW
    # lr 5e-7 and weight decay 0.01); the base run's weight and learning rate are not reported.
    "gan.weight": 200.0,
    "sample.temperature": 1.0,          # the student's final draw (evaluate.sh: gen_temp 1.0)
    # The teacher's own sampler: Di[M]O's teacher script defaults (RELEASED_SAMPLERS["dimo_teacher"]).
    "sample.steps": _SAMPLER.steps,
    "sample.cfg": _SAMPLER.cfg,
    "sample.choice_temperature": _SAMPLER.gumbel_temperature,
    "teacher.softmax_temperature": _SAMPLER.softmax_temperature,
    "eval.samples": 50_000,             # 50 per class (generate mode)
}

teachers.register("maskgit", TeacherEntry(
    name="maskgit", config_cls=MaskGITConfig, build=build, scales=("paper",),
    default_params=PAPER_DEFAULTS, default_metrics=("fid", "inception_score", "prdc"),
    assets=maskgit_assets,
    class_names=imagenet_class_names,
    description="Halton-MaskGIT v1.0 class-conditional ImageNet 256 (VQGAN f16-1024 tokens), released "
                "weights; Di[M]O's ImageNet teacher"))
