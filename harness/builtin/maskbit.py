"""Registers the `maskbit` teacher and the released MaskBit weight files in the asset manifest.

Assets `maskbit_generator_{N}bit` and `maskbit_tokenizer_{N}bit` (N = 10, 12, 14, 16, 18) are the
released `torch.save` state dicts from the Hugging Face user `markweber` (docs/maskbit.md); their
sha256 is not published, so only presence is checked. A `teacher.*_weights` value may also be a
file path; it then becomes an asset of its own, so the pre-launch check names it when missing.
"""
from __future__ import annotations

from typing import Any

from harness.builtin.file_fields import FileFields
from harness.builtin.imagenet import register_teacher
from harness.contracts.entries import RunContext
from harness.store import assets
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


FILES = FileFields(tuple(WEIGHT_FIELDS), field_asset)


# Build the teacher on the job's device from the resolved asset paths.
def build(config: MaskBitConfig, ctx: RunContext) -> MaskBitTeacher:
    paths = FILES.paths(config)
    teacher = build_maskbit_teacher(config, paths["generator"], paths["tokenizer"], paths["real_tokens"],
                                    device=ctx.device)
    ctx.log(f"maskbit teacher: {config.bits}-bit {config.size}, generator {teacher.info['generator']}, "
            f"tokenizer {teacher.info['tokenizer']}")
    return teacher


#----------------------------------------------------------------------------
# Paper-scale defaults. Soft-Di[M]O does not publish its MaskBit distillation settings (base lr,
# batch, steps, r_init, sigma_init and teacher CFG; docs/paper.md, "What the papers leave open"), so
# they are Di[M]O's released ImageNet (MaskGIT) configuration (`imagenet.DIMO_IMAGENET`). On MaskBit,
# r_init masks that fraction of the 512 (position, group) slots, sigma_init is added after
# input_proj, the teacher CFG is the MaskGIT run's (MaskBit's is not published), arccos is also
# MaskBit's own training and sampling schedule, and fix_emb_layer freezes input_proj, pos_emb and
# prediction_layer.bias.

PAPER_DEFAULTS: dict[str, Any] = {
    # The teacher's own sampler: the released 14-bit, 64-step row (docs/maskbit.md); w = 1 + g.
    # Other bit widths need their row (`released_sampler(bits)`) set in the grid.
    "sample.steps": 64,
    "sample.cfg": 8.1,
    "sample.temperature": 1.0,
    "sample.choice_temperature": 7.8,
}

register_teacher("maskbit", MaskBitConfig, build, PAPER_DEFAULTS, FILES,
                 "MaskBit class-conditional ImageNet 256 (bit tokens, 2 groups of N/2 bits), released weights")
