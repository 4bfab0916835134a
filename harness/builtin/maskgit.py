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

from harness.builtin.file_fields import FileFields
from harness.builtin.imagenet import register_teacher
from harness.contracts.entries import RunContext
from harness.store import assets
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


FILES = FileFields(tuple(FILE_FIELDS), field_asset)


# Build the teacher on the job's device from the resolved asset paths.
def build(config: MaskGITConfig, ctx: RunContext) -> MaskGITTeacher:
    paths = FILES.paths(config)
    teacher = build_maskgit_teacher(config, paths["transformer_weights"], paths["vqgan_weights"],
                                    paths["real_tokens"], device=ctx.device)
    ctx.log(f"maskgit teacher: {config.size}, transformer {teacher.info['transformer']}, "
            f"VQGAN {teacher.info['vqgan']}")
    return teacher


#----------------------------------------------------------------------------
# Paper-scale defaults: Di[M]O's released MaskGIT run (`imagenet.DIMO_IMAGENET`, yuanzhi-zhu/DiMO
# configs/DIMO_MaskGit.yaml and scripts/launch_DIMO_MaskGit.sh; fix_emb_layer freezes tok_emb, the
# tied head with the class rows, pos_emb and the bias), with Di[M]O's teacher script's sampler.

_SAMPLER = RELEASED_SAMPLERS["dimo_teacher"]
PAPER_DEFAULTS: dict[str, Any] = {
    "sample.temperature": 1.0,          # the student's final draw (evaluate.sh: gen_temp 1.0)
    # The teacher's own sampler: Di[M]O's teacher script defaults (RELEASED_SAMPLERS["dimo_teacher"]).
    "sample.steps": _SAMPLER.steps,
    "sample.cfg": _SAMPLER.cfg,
    "sample.choice_temperature": _SAMPLER.gumbel_temperature,
    "teacher.softmax_temperature": _SAMPLER.softmax_temperature,
}

register_teacher("maskgit", MaskGITConfig, build, PAPER_DEFAULTS, FILES,
                 "Halton-MaskGIT v1.0 class-conditional ImageNet 256 (VQGAN f16-1024 tokens), released weights; "
                 "Di[M]O's ImageNet teacher")
