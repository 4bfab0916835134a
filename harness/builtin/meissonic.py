"""Registers the `meissonic` teacher (Meissonic 1024 px text-to-image, paper scale) and its assets.

Di[M]O defaults from its released Meissonic recipe (`configs/DIMO_Meissonic.yaml` and
`scripts/launch_DIMO_Meissonic.sh` of yuanzhi-zhu/DiMO at 24613741; the values MaskGen shares are
`harness.builtin.text_to_image.DIMO_TEXT_TO_IMAGE`):
- learning rates 1e-6 (generator and auxiliary), Adam (0.9, 0.999), 100 warm-up steps, clip 1.0,
  batch 16 (per-GPU 2 x grad-accum 8 on one GPU), 20k steps, EMA 0.9999, checkpoints every 1000;
- token initialisation r_init 0.5 (`fixed_ratio`), embedding noise sigma_init 0.3
  (`noise_emb_perturb: fix_0.3`); teacher CFG w = 4 (`true_cfg`) against the negative prompt
  (`distil_neg_prompt: True`); forward KL (`Jeffreys_0.`); label smoothing 0.1, one psi update per
  theta update; re-masking cos(u pi/2) clamped to [0.02, 0.98] (`ratio_mode: cosine`, the
  `get_mask_code` default clamp); Di[M]O's `fix_emb_layer` (Meissonic: the input embedding and the
  logit head frozen);
- Soft-Di[M]O: the Di[M]O term on hard sampled tokens (`distill.teacher_input: sampled`).
The teacher's own sampler: 64 steps, guidance 9 with the negative prompt, Gumbel temperature
2 -> 0 (Meissonic's inference script and Di[M]O's validation; the pipeline's signature default is
48 steps). The one-step student draws at temperature 1 (training value; Di[M]O's evaluation
scripts also try 0.5-1.2).
"""
from __future__ import annotations

from pathlib import Path

from harness.builtin.text_to_image import register_teacher
from harness.contracts.entries import RunContext
from harness.store import assets
from harness.store.assets import Asset
from softdimo.teachers.meissonic import MeissonicConfig, MeissonicTeacher, build_meissonic_teacher

_HF_SNAPSHOT = "{HF_HUB_CACHE}/models--MeissonFlow--Meissonic/snapshots/*/"
_SOURCE = "https://huggingface.co/MeissonFlow/Meissonic"

MEISSONIC_ASSETS = (
    Asset("meissonic_transformer", "meissonic/transformer/diffusion_pytorch_model.safetensors",
          f"{_SOURCE} (transformer/diffusion_pytorch_model.safetensors, 4.03 GB, float32)",
          sha256="a44b1775411bea393b930ad6524d536ef316910e6a898c9400394e21c7fe632f",
          env_var="SOFTDIMO_MEISSONIC_TRANSFORMER",
          search=(_HF_SNAPSHOT + "transformer/diffusion_pytorch_model.safetensors",),
          description="Meissonic transformer (1.0B parameters)"),
    Asset("meissonic_vqvae", "meissonic/vqvae/diffusion_pytorch_model.safetensors",
          f"{_SOURCE} (vqvae/diffusion_pytorch_model.safetensors, 585 MB, float32)",
          sha256="1241a5c88b635af4f8cfb268e388ccaa70f55a458a473d68943e5c28d7b7f762",
          env_var="SOFTDIMO_MEISSONIC_VQVAE",
          search=(_HF_SNAPSHOT + "vqvae/diffusion_pytorch_model.safetensors",),
          description="Meissonic VQ-VAE (decoder used; 8192 codes, 64x64 tokens)"),
    Asset("meissonic_text_encoder", "meissonic/text_encoder/model.safetensors",
          f"{_SOURCE} (text_encoder/model.safetensors, 1.42 GB, float32)",
          sha256="f32c52903fc74d29d0ea3f0ceea8080eec7ad4b2913e16555a4e546df0f37c7f",
          env_var="SOFTDIMO_MEISSONIC_TEXT_ENCODER",
          search=(_HF_SNAPSHOT + "text_encoder/model.safetensors",),
          description="Meissonic's CLIP ViT-H/14 text encoder (transformers CLIPTextModelWithProjection)"),
)
for _asset in MEISSONIC_ASSETS:
    assets.manifest.register(_asset.name, _asset)

_WEIGHT_ASSETS = {"transformer_weights": "meissonic_transformer", "vqvae_weights": "meissonic_vqvae",
                  "text_encoder_weights": "meissonic_text_encoder"}

#----------------------------------------------------------------------------


# The asset behind one weight field: the released default when empty (full size), else a
# registered asset or a file path (registered on first use, so the pre-launch check names it).
def field_asset(config: MeissonicConfig, field: str) -> str:
    value = getattr(config, field)
    if not value:
        if config.size != "full":
            raise ValueError(f"teacher.{field} must be set: no released weights fit teacher.size={config.size!r}")
        return _WEIGHT_ASSETS[field]
    return assets.field_asset(value, f"meissonic_{field}", f"teacher.{field}", f"Meissonic {field} given by path",
                              (".safetensors",))


# Asset names a configuration needs (checked before launch).
def required_assets(config: MeissonicConfig) -> list[str]:
    if config.size != "full" and not all(getattr(config, f) for f in _WEIGHT_ASSETS):
        return []   # refused at build time, with the field named
    return [field_asset(config, field) for field in _WEIGHT_ASSETS]


# Local paths of the three weight files (AssetError naming a missing or corrupt one).
def weight_paths(config: MeissonicConfig) -> dict[str, Path]:
    return {field: assets.resolve(field_asset(config, field)) for field in _WEIGHT_ASSETS}


# Build the teacher on the job's device from local weight files.
def build(config: MeissonicConfig, ctx: RunContext) -> MeissonicTeacher:
    return build_meissonic_teacher(config, **weight_paths(config), device=ctx.device)


PAPER_DEFAULTS = {
    "distill.steps": 20000,
    "distill.mask_schedule": "cosine_clamped",
    # The released Meissonic trainer puts phi in eval mode (teacher_model.eval()) and the
    # transformer's dropout layers are p = 0 in its configuration: no dropout in phi, theta or psi.
    "distill.dropout": 0.0,
    "distill.teacher_dropout": 0.0,
    "sample.steps": 64,
    "sample.cfg": 9.0,
}

register_teacher("meissonic", MeissonicConfig, build, PAPER_DEFAULTS, required_assets,
                 "Meissonic 1024 px text-to-image (1.0B MM-DiT, VQ 8192 x 64x64), CLIP ViT-H/14 text")
