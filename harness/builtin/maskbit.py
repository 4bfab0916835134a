"""Registers the `maskbit` teacher and the released MaskBit weight files in the asset manifest.

Assets `maskbit_generator_{N}bit` and `maskbit_tokenizer_{N}bit` (N = 10, 12, 14, 16, 18) are the
released `torch.save` state dicts from the Hugging Face user `markweber` (docs/maskbit.md); their
sha256 is not published, so only presence is checked. A `teacher.*_weights` value may also be a
file path; it then becomes an asset of its own, so the pre-launch check names it when missing.
"""
from __future__ import annotations

from typing import Any

from harness import assets
from harness.conditions import imagenet_class_names
from harness.entries import RunContext, TeacherEntry
from harness.registry import teachers
from softdimo.teachers.maskbit import MASKBIT_BITS, MaskBitConfig, MaskBitTeacher, build_maskbit_teacher

HF_USER = "https://huggingface.co/markweber"
WEIGHT_FILE_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")
WEIGHT_FIELDS = {"generator": "generator_weights", "tokenizer": "tokenizer_weights",
                 "real_tokens": "real_tokens"}

#----------------------------------------------------------------------------
# Assets.


# The manifest entry of a released MaskBit file (`kind` is "generator" or "tokenizer").
def released_asset(kind: str, bits: int) -> assets.Asset:
    name = f"maskbit_{kind}_{bits}bit"
    return assets.Asset(
        name=name, filename=f"maskbit/{name}.bin",
        source=f"{HF_USER}/{name} (file {name}.bin)", sha256=None,
        env_var=f"SOFTDIMO_MASKBIT_{kind.upper()}_{bits}BIT",
        description=f"MaskBit {bits}-bit {kind} state dict (markweberdev/maskbit release)")


for _bits in MASKBIT_BITS:
    for _kind in ("generator", "tokenizer"):
        assets.manifest.register(f"maskbit_{_kind}_{_bits}bit", released_asset(_kind, _bits))


# The asset behind one `teacher.*` file field: the released default, a registered asset, or a file
# path (absolute, or relative to the asset root) registered on first use; None when none is needed.
def field_asset(config: MaskBitConfig, kind: str) -> str | None:
    field = WEIGHT_FIELDS[kind]
    value: str = getattr(config, field)
    if not value:
        if kind == "real_tokens" or config.size == "tiny":
            return None
        return f"maskbit_{kind}_{config.bits}bit"
    return assets.field_asset(value, f"maskbit_{kind}", f"teacher.{field}", f"MaskBit {kind} file given by path",
                              WEIGHT_FILE_SUFFIXES)


# Every asset a configuration needs (checked before launch).
def maskbit_assets(config: MaskBitConfig) -> list[str]:
    return [name for kind in WEIGHT_FIELDS if (name := field_asset(config, kind)) is not None]


# Build the teacher on the job's device from the resolved asset paths.
def build(config: MaskBitConfig, ctx: RunContext) -> MaskBitTeacher:
    paths = {kind: assets.resolve(name) if (name := field_asset(config, kind)) else None
             for kind in WEIGHT_FIELDS}
    teacher = build_maskbit_teacher(config, paths["generator"], paths["tokenizer"], paths["real_tokens"],
                                    device=ctx.device)
    ctx.log(f"maskbit teacher: {config.bits}-bit {config.size}, generator {teacher.info['generator']}, "
            f"tokenizer {teacher.info['tokenizer']}")
    return teacher


#----------------------------------------------------------------------------
# Paper-scale defaults. Soft-Di[M]O does not publish its MaskBit distillation settings (base lr,
# batch, steps, r_init, sigma_init and teacher CFG; docs/paper.md, "What the papers leave open"), so
# these follow Di[M]O's released ImageNet (MaskGIT) configuration (docs/paper.md, "Di[M]O") unless a
# comment says otherwise.
# On MaskBit, r_init masks that fraction of the 512 (position, group) slots.

PAPER_DEFAULTS: dict[str, Any] = {
    "distill.steps": 50_000,            # config max_train_steps 50,001 (the eval script used 30k)
    "distill.batch_size": 128,          # 64 per GPU x 2 GPUs (run name "GPUS2"; inferred)
    "distill.lr_generator": 1e-5,
    "distill.lr_aux": 1e-5,
    "distill.adam_beta1": 0.9,
    "distill.adam_beta2": 0.999,
    "distill.warmup_steps": 100,
    "distill.grad_clip": 1.0,
    "distill.precision": "bf16",        # mixed_precision bf16: autocast, float32 master weights
    "distill.adam_eps": 1e-6,           # the released adam_epsilon under bf16 (1e-8 in fp32)
    "distill.beta": 0.0,                # Jeffreys_0: forward KL (released default)
    "distill.r_init": 0.6,              # fix_0.6
    "distill.sigma_init": 0.1,          # noise_emb_perturb fix_0.1, added after input_proj here
    "distill.teacher_cfg": 2.0,         # true_cfg of the MaskGIT run; MaskBit's is not published
    "distill.gen_temperature": 1.0,
    "distill.mask_schedule": "arccos",  # also MaskBit's own training and sampling schedule
    "distill.aux_label_smoothing": 0.1,
    "distill.aux_updates": 1,           # fake_rounds 1
    "distill.freeze_embeddings": True,  # fix_emb_layer: input_proj, pos_emb, prediction_layer.bias
    "distill.ema_decay": 0.9999,
    "distill.checkpoint_every": 1000,   # ours: resumable checkpoints; not a paper setting
    # w_GAN: 200 is the only value the paper reports (its MaskBit longer-training run, with AdamW
    # lr 5e-7 and weight decay 0.01); the base run's weight and learning rate are not reported.
    "gan.weight": 200.0,
    # The teacher's own sampler: the released 14-bit, 64-step row (docs/maskbit.md); w = 1 + g.
    # Other bit widths need their row (`released_sampler(bits)`) set in the grid.
    "sample.steps": 64,
    "sample.cfg": 8.1,
    "sample.temperature": 1.0,
    "sample.choice_temperature": 7.8,
    "eval.samples": 50_000,             # ADM protocol: 50 images per class
}

teachers.register("maskbit", TeacherEntry(
    name="maskbit", config_cls=MaskBitConfig, build=build, scales=("paper",),
    default_params=PAPER_DEFAULTS, default_metrics=("fid", "inception_score", "prdc"),
    assets=maskbit_assets,
    class_names=imagenet_class_names,
    description="MaskBit class-conditional ImageNet 256 (bit tokens, 2 groups of N/2 bits), "
                "released weights"))
