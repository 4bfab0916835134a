"""Registers the `maskgen` teacher (MaskGen-VQ text-to-image, paper scale) and its weight assets.

Di[M]O defaults at paper scale. Neither paper gives MaskGen's distillation settings (docs/paper.md,
"What the papers leave open"); every value below says where it comes from (docs/maskgen.md):
- Di[M]O's released text-to-image (Meissonic) config, the closest published recipe
  (`harness.builtin.text_to_image.DIMO_TEXT_TO_IMAGE`): learning rates 1e-6, r_init 0.5,
  sigma_init 0.3, teacher CFG w = 4 (`true_cfg 4`), batch 16 (per-GPU 2 x grad-accum 8, 1 GPU),
  Adam (0.9, 0.999), 100 warm-up steps, clip 1.0, beta 0 (forward KL), EMA 0.9999, label
  smoothing 0.1, one psi update per theta update (docs/paper.md, "Di[M]O").
- MaskGen itself: re-masking schedule arccos (its training schedule, bytedance/1d-tokenizer;
  Meissonic's cosine belongs to Meissonic).
- Soft-Di[M]O: the Di[M]O term on hard sampled tokens (the poster's "red path", docs/paper.md);
  50k steps (the T2I GenEval-vs-steps ablation curve of Soft-Di[M]O runs to 50k, docs/paper.md).
- The teacher's own sampler: the released defaults (16 steps, MaskGen guidance 12 with cosine
  decay, randomize temperature 2.0, softmax annealing, aesthetic score 6.5; configs/infer/MaskGen
  of bytedance/1d-tokenizer, docs/maskgen.md "Sampler").
  `sample.cfg` is MaskGen's guidance scale g (z_c + s (z_c - z_u)), not the w of `guided_logits`.
- Checkpoints every 1000 steps (a resume point every few minutes at this size; a choice).
The evaluation sample count is left to the metrics (GenEval: 553 prompts x 4; HPS v2: 3200).
"""
from __future__ import annotations

from pathlib import Path

from harness.builtin.text_to_image import register_teacher
from harness.contracts.entries import RunContext
from harness.store import assets
from harness.store.assets import Asset
from softdimo.teachers.maskgen import MaskGenConfig, MaskGenTeacher, build_maskgen_teacher

DEFAULT_TEXT_ENCODER = "ViT-L-14-336"

MASKGEN_ASSETS = (
    Asset("maskgen_vq_l", "maskgen/maskgen_vq_l.bin",
          "https://huggingface.co/fun-research/MaskGen (maskgen_vq_l.bin, 2.42 GB); the same "
          "weights are model.safetensors in https://huggingface.co/turkeyju/generator_maskgen_vq_l",
          env_var="SOFTDIMO_MASKGEN_VQ_L", description="MaskGen-VQ-L generator (604M)"),
    Asset("maskgen_vq_xl", "maskgen/maskgen_vq_xl.bin",
          "https://huggingface.co/fun-research/MaskGen (maskgen_vq_xl.bin, 4.71 GB); the same "
          "weights are model.safetensors in https://huggingface.co/turkeyju/generator_maskgen_vq_xl",
          env_var="SOFTDIMO_MASKGEN_VQ_XL", description="MaskGen-VQ-XL generator (1177M)"),
    Asset("tatitok_bl128_vq", "maskgen/tatitok_bl128_vq.bin",
          "https://huggingface.co/fun-research/TA-TiTok (tatitok_bl128_vq.bin); the same weights "
          "are model.safetensors in https://huggingface.co/turkeyju/tokenizer_tatitok_bl128_vq",
          env_var="SOFTDIMO_TATITOK_BL128_VQ", description="TA-TiTok VQ tokenizer, 128 tokens"),
    Asset("openai_clip_vit_l_14_336", "clip/vit_large_patch14_clip_336.openai/open_clip_model.safetensors",
          "https://huggingface.co/timm/vit_large_patch14_clip_336.openai (open_clip_model.safetensors "
          "or open_clip_pytorch_model.bin): open_clip's 'openai' ViT-L-14-336; the OpenAI "
          "TorchScript file ViT-L-14-336px.pt cannot be read weights-only",
          env_var="SOFTDIMO_CLIP_VIT_L_14_336", description="OpenAI CLIP ViT-L/14@336 (text tower used)"),
)
for _asset in MASKGEN_ASSETS:
    assets.manifest.register(_asset.name, _asset)

GENERATOR_ASSET = {"L": "maskgen_vq_l", "XL": "maskgen_vq_xl"}
TOKENIZER_ASSET = {"L": "tatitok_bl128_vq", "XL": "tatitok_bl128_vq"}

#----------------------------------------------------------------------------


# For each weight field: (explicit path, asset used when the path is empty, or None if none fits).
def _weight_sources(config: MaskGenConfig) -> dict[str, tuple[str, str | None]]:
    text_asset = "openai_clip_vit_l_14_336" if config.text_encoder == DEFAULT_TEXT_ENCODER else None
    return {
        "generator_weights": (config.generator_weights, GENERATOR_ASSET.get(config.size)),
        "tokenizer_weights": (config.tokenizer_weights, TOKENIZER_ASSET.get(config.size)),
        "text_encoder_weights": (config.text_encoder_weights, text_asset),
    }


# Asset names a configuration needs (checked before launch); explicit paths need none.
def required_assets(config: MaskGenConfig) -> list[str]:
    return [name for path, name in _weight_sources(config).values() if not path and name]


# Local paths of the three weight files: explicit paths as given, otherwise the resolved assets
# (AssetError naming the asset when missing or corrupt).
def weight_paths(config: MaskGenConfig) -> dict[str, Path]:
    out = {}
    for field, (path, asset) in _weight_sources(config).items():
        if path:
            out[field] = Path(path).expanduser()
        elif asset:
            out[field] = assets.resolve(asset)
        else:
            raise ValueError(f"teacher.{field} must be set: no released weights fit "
                             f"teacher.size={config.size!r}, teacher.text_encoder={config.text_encoder!r}")
    return out


# Build the teacher on the job's device from local weight files.
def build(config: MaskGenConfig, ctx: RunContext) -> MaskGenTeacher:
    return build_maskgen_teacher(config, **weight_paths(config), device=ctx.device)


PAPER_DEFAULTS = {
    "distill.steps": 50000,
    "distill.mask_schedule": "arccos",
    "sample.steps": 16,
    "sample.cfg": 12.0,
}

register_teacher("maskgen", MaskGenConfig, build, PAPER_DEFAULTS, required_assets,
                 "MaskGen-VQ text-to-image (L default, XL), TA-TiTok decoder, OpenAI CLIP ViT-L-14-336 text")
