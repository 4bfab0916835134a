"""The MaskGIT teacher: parity with the upstream fixtures (transformer, VQGAN, sampler), strict
loading of the released layouts, Di[M]O and GAN steps on a tiny teacher, and its registration
(tiny sizes, CPU, seconds)."""
from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from harness.contracts.entries import RunContext
from harness.contracts.registry import refinements, teachers
from harness.grid.spec import STAGE_CONFIGS
from harness.run import main as run_main
from harness.store import assets
from softdimo.config import DistillConfig, RelaxConfig
from softdimo.dimo import perturb_embeddings
from softdimo.params import schema
from softdimo.refine.gan import GANConfig, GANRefinement
from softdimo.relax import RELAXATIONS
from softdimo.teachers.base import Condition, ImageNoise, MDMNetwork, Teacher, TokenLayout, guided_logits
from softdimo.teachers.class_conditioned import save_real_tokens
from softdimo.teachers.maskgit import (RELEASED_SAMPLERS, MaskGITConfig, build_maskgit_teacher, load_transformer,
                                       load_vqgan, maskgit_sample, transformer_arch, unmask_schedule, vqgan_arch)
from softdimo.teachers.maskgit_transformer import MaskGITTransformer
from softdimo.teachers.vqgan import VQGAN
from softdimo.teachers.weights import CheckpointError
from tests.float_tolerance import assert_parity, rounding_atol
from softdimo.train import Distiller

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "maskgit"
VIT_FILE = FIXTURES / "maskgit_tiny_state_dict.safetensors"
VQ_FILE = FIXTURES / "vqgan_tiny_state_dict.safetensors"
# Float32 tolerances (tests/float_tolerance.py) of the tiny networks of the fixtures (README), as
# (sequential reductions, longest reduction). Transformer: token and position embeddings, 2 blocks
# of 9 reductions (norm, q / k / v, scores over 8 head dimensions, softmax and attention over 17
# tokens, output projection, norm, MLP over 32 and 64 units) and the output layers: 24 reductions of
# at most 64 terms.
TRANSFORMER_NET = (24, 64)
# VQGAN decoder (64 channels at most: 3 x 3 x 64 = 576 terms): the input convolution, the mid ResNet
# blocks and attention, 2 levels of 2 ResNet blocks (2 group norms and 2 convolutions each), the
# up-sampling convolution, the output norm and convolution: 30 reductions.
VQGAN_DECODER = (30, 576)
SOFT_LATENT = (1, 16)               # p @ codebook over the 16 codes

TINY = MaskGITConfig(size="tiny")
C = 16                                # tiny codebook size = mask id

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tio() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "maskgit_tiny_io.safetensors"))


@pytest.fixture(scope="module")
def vio() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "vqgan_tiny_io.safetensors"))


@pytest.fixture(scope="module")
def sio() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "sampler_tiny_io.safetensors"))


@pytest.fixture(scope="module")
def teacher():
    return build_maskgit_teacher(TINY, VIT_FILE, VQ_FILE)


def labels_cond(labels: torch.Tensor) -> Condition:
    return Condition("class", {"labels": labels.clone()}, labels.tolist())


def full_logits(net: MaskGITTransformer, e: torch.Tensor, cond: Condition, drop=None) -> torch.Tensor:
    return net(e, cond, drop, with_mask_class=True).logits[:, :, 0]



# The configuration class of a parameter stage: a fixed stage's, or the refinement's that owns it.
def _stage_class(stage: str) -> type:
    return STAGE_CONFIGS.get(stage) or next(e.config_cls for _, e in refinements.items() if e.stage == stage)

#----------------------------------------------------------------------------
# Transformer parity.


def test_transformer_logits_match_upstream(teacher, tio):
    net = teacher.network
    cond = labels_cond(tio["labels"])
    with torch.no_grad():
        e = net.embed(tio["tokens"][..., None])
        assert_parity(full_logits(net, e, cond, tio["drop_none"]), tio["logits_cond"], TRANSFORMER_NET)
        assert_parity(full_logits(net, e, cond, tio["drop_all"]), tio["logits_uncond"], TRANSFORMER_NET)
        assert_parity(full_logits(net, e, cond, tio["drop_mixed"]), tio["logits_mixed_drop"], TRANSFORMER_NET)
        null = labels_cond(tio["labels_with_null"])
        assert_parity(full_logits(net, e, null, tio["drop_none"]), tio["logits_null_label"], TRANSFORMER_NET)
        # the protocol's logits are the C codebook columns; the mask class is column C
        z = net(e, cond, tio["drop_none"]).logits
        assert z.shape == (4, 16, 1, C)
        assert_parity(z[:, :, 0], tio["logits_cond"][..., :C], TRANSFORMER_NET)
        # CFG: upstream's (1 + s) z_c - s z_u is guided_logits with w = 1 + s
        s = float(tio["cfg_scale"])
        guided = guided_logits(net, e, cond, 1.0 + s).logits[:, :, 0]
        # z_u + w (z_c - z_u) carries z_c's error times w and z_u's times |1 - w|: (2w - 1) = (1 + 2s)
        # times the logits' tolerance at their magnitude
        logits = torch.maximum(tio["logits_cond"].abs(), tio["logits_uncond"].abs())[..., :C]
        torch.testing.assert_close(guided, tio["logits_cfg"][..., :C],
                                   atol=(1 + 2 * s) * rounding_atol(logits, *TRANSFORMER_NET), rtol=0.0)


def test_no_drop_by_default_unlike_upstream_v1(teacher, tio):
    # v1.0's forward with drop_label=None drops every label (cls_token[None] = null); DiMO's copy
    # treats None as no drop, and so do we. The label tensor is never written.
    assert torch.equal(tio["logits_v1_drop_label_none"], tio["logits_uncond"])
    net = teacher.network
    cond = labels_cond(tio["labels"])
    before = cond.tensors["labels"].clone()
    with torch.no_grad():
        e = net.embed(tio["tokens"][..., None])
        assert_parity(full_logits(net, e, cond), tio["logits_dimo_drop_label_none"], TRANSFORMER_NET)
        net(e, cond, tio["drop_all"])
    assert torch.equal(cond.tensors["labels"], before)


def test_masked_rows_hidden_states_and_intermediates(teacher, tio):
    net = teacher.network
    assert torch.all(tio["tokens"][2] == C) and (tio["tokens"][1] == C).sum() == 6    # fully / partly masked
    seen: dict[str, torch.Tensor] = {}
    hooks = [net.first_layer.register_forward_hook(lambda m, i, o: seen.__setitem__("first", o)),
             net.last_layer.register_forward_hook(lambda m, i, o: seen.__setitem__("last", o))]
    try:
        with torch.no_grad():
            out = net(net.embed(tio["tokens"][1:2, :, None]), labels_cond(tio["labels"][1:2]),
                      hidden_layers=(0, 1))
    finally:
        for h in hooks:
            h.remove()
    assert_parity(seen["first"], tio["inter_first_layer_out"], TRANSFORMER_NET)
    assert_parity(out.hidden[0], tio["inter_layer0_out"][:, :16], TRANSFORMER_NET)
    assert_parity(out.hidden[1], tio["inter_transformer_out"][:, :16], TRANSFORMER_NET)
    assert_parity(seen["last"], tio["inter_last_layer_out"][:, :16], TRANSFORMER_NET)   # class token dropped
    assert_parity(out.logits[:, :, 0], tio["logits_cond"][1:2, :, :C], TRANSFORMER_NET)
    with pytest.raises(ValueError, match="hidden_layers"):
        net(net.embed(tio["tokens"][:1, :, None]), labels_cond(tio["labels"][:1]), hidden_layers=(2,))


def test_embedding_noise_path_matches_dimo(teacher, tio):
    # DiMO's forward(noise_emb_perturb=sigma) perturbs the visual-token embeddings before the
    # positions: e <- sigma n + sqrt(1 - sigma^2) e; here the Distiller does it between embed and forward.
    net = teacher.network
    with torch.no_grad():
        e = perturb_embeddings(net.embed(tio["tokens"][..., None]), float(tio["sigma_init"]), tio["emb_noise"])
        assert_parity(full_logits(net, e, labels_cond(tio["labels"])), tio["logits_emb_noise"], TRANSFORMER_NET)


def test_soft_input_matches_upstream(teacher, tio):
    net = teacher.network
    cond = labels_cond(tio["labels"])
    with torch.no_grad():
        e = net.embed_soft(tio["soft_probs"][:, :, None], tio["soft_mask"][..., None])
        assert_parity(full_logits(net, e, cond, tio["drop_none"]), tio["logits_soft_cond"], TRANSFORMER_NET)
        assert_parity(full_logits(net, e, cond, tio["drop_all"]), tio["logits_soft_uncond"], TRANSFORMER_NET)


def test_embed_soft_of_one_hot_equals_embed_exactly(teacher, tio):
    net = teacher.network
    tokens = tio["tokens"][..., None]
    mask = tokens == C
    one_hot = F.one_hot(tokens.masked_fill(mask, 0), C).float()
    with torch.no_grad():
        assert torch.equal(net.embed_soft(one_hot, mask), net.embed(tokens))


#----------------------------------------------------------------------------
# VQGAN parity.


def test_decoder_matches_upstream(teacher, vio):
    vq = teacher.vqgan
    seen: dict[str, torch.Tensor] = {}
    modules = {"conv_in": vq.decoder.conv_in, "mid": vq.decoder.mid, "up1": vq.decoder.up[1], "up0": vq.decoder.up[0]}
    with torch.no_grad():
        latent = vq.codes_to_latent(vio["dec_codes"])
        torch.testing.assert_close(latent, vio["latent_codes"], atol=0, rtol=0)
        assert_parity(vq.decode(latent), vio["images_from_codes"], VQGAN_DECODER)
        hooks = [m.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o)) for k, m in modules.items()]
        try:
            vq.decode(latent[:1])
        finally:
            for h in hooks:
                h.remove()
        for key in modules:
            assert_parity(seen[key], vio[f"inter_dec_{key}"], VQGAN_DECODER)
        soft = vq.probs_to_latent(vio["soft_probs"])
        assert_parity(soft, vio["soft_latent"], SOFT_LATENT)
        assert_parity(vq.decode(soft), vio["images_from_soft"], VQGAN_DECODER)


def test_teacher_decodes_to_unit_range(teacher, vio):
    with torch.no_grad():
        images = teacher.decode(vio["dec_codes"][..., None])
        assert_parity(images, ((vio["images_from_codes"] + 1) / 2).clamp(0, 1), VQGAN_DECODER)
        soft = teacher.decode_soft(vio["soft_probs"][:, :, None])
        assert_parity(soft, ((vio["images_from_soft"] + 1) / 2).clamp(0, 1), VQGAN_DECODER)
        one_hot = F.one_hot(vio["dec_codes"][..., None], C).float()
        assert_parity(teacher.decode_soft(one_hot), images, VQGAN_DECODER)
        # a mask id decodes as code C - 1 (upstream clamps before decoding)
        masked = vio["dec_codes"][:1, :, None].clone()
        masked[0, 3] = C
        clamped = masked.clamp(max=C - 1)
        assert torch.equal(teacher.decode(masked), teacher.decode(clamped))


def test_encoder_round_trip_matches_upstream(teacher, vio):
    vq = teacher.vqgan
    with torch.no_grad():
        x = vio["enc_image"] * 2 - 1
        assert_parity(vq.quant_conv(vq.encoder(x)), vio["enc_pre_quant"], VQGAN_DECODER)
        z, codes = vq.encode(x)
        assert torch.equal(codes.flatten(1), vio["enc_codes"])
        assert_parity(z, vio["enc_quant"], VQGAN_DECODER)
        assert_parity(vq.decode(z), vio["enc_recon"], VQGAN_DECODER)
        assert torch.equal(teacher.encode(vio["enc_image"]), vio["enc_codes"][..., None])


def test_decode_soft_is_differentiable(teacher):
    logits = torch.randn(1, 16, 1, C, requires_grad=True)
    teacher.decode_soft(logits.softmax(-1)).mean().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


#----------------------------------------------------------------------------
# Sampler.


# Replays the Gumbel noise upstream drew (per step: the categorical draw over C + 1 classes, then
# the confidence noise), so our sampler sees exactly upstream's randomness.
class ReplayNoise:
    def __init__(self, draws: torch.Tensor, confs: torch.Tensor):
        self.queue = [t for pair in zip(draws, confs) for t in pair]
        self.batch, self.device = draws.shape[1], torch.device("cpu")

    def __len__(self) -> int:
        return self.batch

    def gumbel(self, *shape: int) -> torch.Tensor:
        t = self.queue.pop(0)
        assert tuple(t.shape[1:]) == shape
        return t


def test_sampler_matches_upstream_with_fixed_noise(sio):
    config = MaskGITConfig(size="tiny", softmax_temperature=float(sio["softmax_temperature"]))
    teacher = build_maskgit_teacher(config, VIT_FILE, VQ_FILE)
    steps = int(sio["steps"])
    noise = ReplayNoise(sio["draw_noise"], sio["conf_noise"])
    trace: list[torch.Tensor] = []
    cond = teacher.encode_condition(sio["labels"].tolist())
    tokens = maskgit_sample(teacher.network, cond, steps, 1.0 + float(sio["guidance"]), noise,
                            1.0 / config.softmax_temperature, float(sio["gumbel_temperature"]), trace=trace)
    assert not noise.queue and len(trace) == steps
    was_masked = torch.ones(3, 16, dtype=torch.bool)
    for i, state in enumerate(trace):
        masked, draws = sio["masks"][i], sio["draws"][i]
        new = was_masked & ~masked
        assert torch.equal(state[..., 0][new], draws[new]), f"step {i}"
        assert torch.all(state[..., 0][masked] == C), f"step {i}"
        was_masked = masked
    # the mask class was drawn and kept once: it decodes as code C - 1
    assert ((sio["draws"] == C) & ~sio["masks"]).any()
    assert torch.equal(tokens[..., 0], sio["codes"])
    with torch.no_grad():
        assert_parity(teacher.decode(tokens), ((sio["images"] + 1) / 2).clamp(0, 1), VQGAN_DECODER)


def test_unmask_schedule():
    assert unmask_schedule(5, "arccos", 16) == [1, 2, 4, 5, 4]          # the fixture run's schedule
    assert unmask_schedule(8, "arccos", 256) == [1, 18, 26, 32, 38, 43, 48, 50]
    assert unmask_schedule(1, "arccos", 256) == [256]
    for mode in ("arccos", "cosine", "linear", "square", "root"):
        for steps in (2, 4, 16, 64):
            counts = unmask_schedule(steps, mode, 256)
            assert len(counts) == steps and min(counts) >= 1
    with pytest.raises(ValueError, match="allowed"):
        unmask_schedule(4, "cubic", 16)


def test_sampler_runs_and_is_seeded_per_image(teacher):
    noise = ImageNoise(7, [0, 1, 2])
    batch = teacher.sample(teacher.encode_condition([4, 5, 6]), 4, 3.0, noise, 1.0, 4.5)
    alone = teacher.sample(teacher.encode_condition([5]), 4, 3.0, ImageNoise(7, [1]), 1.0, 4.5)
    assert torch.equal(batch[1:2], alone)
    assert batch.shape == (3, 16, 1) and batch.min() >= 0 and batch.max() < C
    one_step = teacher.sample(teacher.encode_condition([1]), 1, 2.0, ImageNoise(0, [0]), 1.0, 4.5)
    assert one_step.shape == (1, 16, 1)
    images = teacher.decode(batch)
    assert images.shape == (3, 3, 8, 8) and images.min() >= 0 and images.max() <= 1


#----------------------------------------------------------------------------
# Strict loading of the released layouts.


def _released_files(tmp_path: Path) -> tuple[Path, Path]:
    # MaskGIT_ImageNet_256.pth: {'iter', 'global_epoch', 'model_state_dict', 'optimizer_state_dict'};
    # VQGAN last.ckpt: a Lightning checkpoint whose state_dict also holds the training losses.
    state = OrderedDict(load_file(str(VIT_FILE)))
    vit = tmp_path / "MaskGIT_ImageNet_256.pth"
    torch.save({"iter": 10, "global_epoch": 1, "model_state_dict": state,
                "optimizer_state_dict": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": []}}, vit)
    vstate = OrderedDict(load_file(str(VQ_FILE)))
    vstate["loss.discriminator.main.0.weight"] = torch.zeros(2, 3, 4, 4)
    vstate["loss.perceptual_loss.scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "global_step": 100, "pytorch-lightning_version": "1.0.8", "state_dict": vstate,
                "optimizer_states": [{"state": {}, "param_groups": []}], "lr_schedulers": []}, ckpt)
    return vit, ckpt


def test_released_layouts_load(tmp_path, tio, vio):
    vit, ckpt = _released_files(tmp_path)
    net = load_transformer(vit, transformer_arch("tiny")).eval()
    vq = load_vqgan(ckpt, vqgan_arch("tiny")).eval()
    with torch.no_grad():
        e = net.embed(tio["tokens"][..., None])
        assert_parity(full_logits(net, e, labels_cond(tio["labels"]), tio["drop_none"]),
                                   tio["logits_cond"], TRANSFORMER_NET)
        assert_parity(vq.decode(vq.codes_to_latent(vio["dec_codes"])), vio["images_from_codes"], VQGAN_DECODER)


def test_strict_load_names_the_mismatching_key(tmp_path):
    state = load_file(str(VIT_FILE))
    renamed = {("token_emb.weight" if k == "tok_emb.weight" else k): v for k, v in state.items()}
    torch.save({"model_state_dict": renamed}, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): tok_emb.weight.*unexpected keys \(1\): "
                                              r"token_emb.weight"):
        load_transformer(tmp_path / "renamed.pth", transformer_arch("tiny"))
    wrong = {**state, "pos_emb": torch.zeros(1, 18, 32)}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(CheckpointError, match=r"shape mismatches \(1\): pos_emb: file \(1, 18, 32\) vs model "
                                              r"\(1, 17, 32\)"):
        load_transformer(tmp_path / "wrong.safetensors", transformer_arch("tiny"))
    vstate = load_file(str(VQ_FILE))
    vstate["decoder.up.0.block.0.nin_shortcut.bias"] = torch.zeros(3)
    torch.save({"state_dict": vstate}, tmp_path / "vq.ckpt")
    with pytest.raises(CheckpointError, match=r"decoder.up.0.block.0.nin_shortcut.bias: file \(3,\)"):
        load_vqgan(tmp_path / "vq.ckpt", vqgan_arch("tiny"))
    torch.save({"epoch": 1, "weights": state}, tmp_path / "nested.pth")
    with pytest.raises(CheckpointError, match=r"under 'model_state_dict'.*\['epoch', 'weights'\]"):
        load_transformer(tmp_path / "nested.pth", transformer_arch("tiny"))


class _NotATensor:
    pass


def test_checkpoints_are_read_weights_only(tmp_path):
    torch.save({"model_state_dict": {"pos_emb": torch.zeros(1)}, "payload": _NotATensor()}, tmp_path / "pickle.pth")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_transformer(tmp_path / "pickle.pth", transformer_arch("tiny"))
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_transformer(tmp_path / "nowhere.pth", transformer_arch("tiny"))


def test_full_size_modules_have_the_released_layout():
    with torch.device("meta"):
        net = MaskGITTransformer(transformer_arch("full"))
        vq = VQGAN(vqgan_arch("full"))
    assert net.layout == TokenLayout(positions=256, groups=1, classes=1024, mask_id=1024, image_shape=(3, 256, 256))
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["tok_emb.weight"] == (2026, 768) and shapes["bias"] == (257, 2026)
    assert shapes["pos_emb"] == (1, 257, 768)
    assert shapes["transformer.layers.23.0.fn.mha.in_proj_weight"] == (2304, 768)
    assert shapes["transformer.layers.23.1.fn.net.3.weight"] == (768, 3072)
    assert len(shapes) == 305
    assert sum(p.numel() for p in net.parameters()) == 174_160_874       # README: 174.161M
    vshapes = {k: tuple(v.shape) for k, v in vq.state_dict().items()}
    assert vshapes["quantize.embedding.weight"] == (1024, 256)
    assert vshapes["encoder.down.4.attn.1.q.weight"] == (512, 512, 1, 1)
    assert vshapes["decoder.up.4.attn.2.proj_out.weight"] == (512, 512, 1, 1)
    assert vshapes["decoder.up.1.block.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert "encoder.down.4.downsample.conv.weight" not in vshapes and "decoder.up.0.upsample.conv.weight" not in vshapes
    assert len(vshapes) == 343
    assert sum(p.numel() for p in vq.parameters()) == 72_141_699          # README: 72.142M


def test_full_size_teacher_with_released_weights():
    names = ("maskgit_imagenet256", "maskgit_vqgan_f16_1024")
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU: the full-size teacher is 246M parameters (the same code paths run at the tiny size)")
    if assets.check_before_launch(list(names), verify_hash=False):
        pytest.skip(f"needs the released weights ({', '.join(names)}); see docs/teachers.md")
    teacher = teachers.get("maskgit").build(MaskGITConfig(), RunContext(Path("."), Path("."), device="cuda"))
    cond = teacher.encode_condition([1, 7])
    tokens = teacher.sample(cond, 8, 5.5, ImageNoise(0, [0, 1], "cuda"), 1.0, 7.0)
    images = teacher.decode(tokens)
    assert images.shape == (2, 3, 256, 256) and 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert teacher.encode(images).shape == tokens.shape


#----------------------------------------------------------------------------
# Di[M]O and the GAN on a tiny teacher.


@pytest.mark.parametrize("relaxation", ["hard", "gumbel", "soft"])
# teacher_cfg 2 (the released value): at initialisation theta = psi = phi, so without CFG the
# Di[M]O gradient of the first step is exactly zero.
def test_dimo_step_with_each_relaxation(teacher, relaxation):
    before = {k: v.clone() for k, v in teacher.network.state_dict().items()}
    fn, _ = RELAXATIONS[relaxation]
    d = Distiller(teacher, fn, RelaxConfig(), DistillConfig(steps=1, batch_size=2, warmup_steps=0, teacher_cfg=2.0), seed=0)
    log = d.train_step()
    assert all(torch.isfinite(torch.tensor(log[k])) for k in ("divergence", "aux_loss", "grad_norm"))
    for k, v in teacher.network.state_dict().items():
        assert torch.equal(v, before[k]), k                          # the teacher stays frozen
    generator = dict(d.generator.named_parameters())
    assert not torch.equal(generator["transformer.layers.0.1.fn.net.0.weight"],
                           before["transformer.layers.0.1.fn.net.0.weight"])
    for name in d.generator.embedding_parameter_names():             # fix_emb_layer
        assert torch.equal(generator[name], before[name]), name


def test_gan_step_with_real_tokens(tmp_path, vio):
    real = tmp_path / "real.safetensors"
    teacher = build_maskgit_teacher(TINY, VIT_FILE, VQ_FILE)
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    save_real_tokens(real, teacher.encode(images), [0, 1, 2, 3, 4, 5])
    teacher = build_maskgit_teacher(TINY, VIT_FILE, VQ_FILE, real_tokens_path=real)
    tokens, labels = teacher.real_tokens()
    assert tokens.shape == (6, 16, 1) and labels == [0, 1, 2, 3, 4, 5]
    gan = GANRefinement(GANConfig(head_width=8), teacher, seed=0)
    fn, _ = RELAXATIONS["soft"]
    d = Distiller(teacher, fn, RelaxConfig(), DistillConfig(steps=1, batch_size=2, warmup_steps=0, teacher_cfg=2.0), seed=0,
                  refinement=gan)
    log = d.train_step()
    assert all(torch.isfinite(torch.tensor(log[k])) for k in ("gan_g_loss", "gan_d_loss", "divergence"))


#----------------------------------------------------------------------------
# Teacher protocol, registration, planning and the pre-launch asset check.


def test_teacher_protocol_and_conditions(teacher):
    assert isinstance(teacher, Teacher) and isinstance(teacher.network, MDMNetwork)
    assert not any(p.requires_grad for p in teacher.network.parameters())
    assert teacher.network.embedding_parameter_names() <= set(dict(teacher.network.named_parameters()))
    assert teacher.eval_conditions(12) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert teacher.encode_condition([3, 10]).tensors["labels"].tolist() == [3, 10]   # 10 = null
    with pytest.raises(ValueError, match=r"maskgit class labels must be in \[0, 10\]"):
        teacher.encode_condition([11])
    assert teacher.real_tokens() is None


def test_train_mode_dropout_only(teacher, tio):
    # Dropout (p = 0.1, released) acts in train mode only; eval mode is deterministic.
    net = teacher.network
    e = net.embed(tio["tokens"][..., None])
    cond = labels_cond(tio["labels"])
    with torch.no_grad():
        net.train()
        try:
            torch.manual_seed(0)
            train = full_logits(net, e, cond)
        finally:
            net.eval()
        assert (train - tio["logits_dimo_drop_label_none"]).abs().max() > 1e-3
        assert_parity(full_logits(net, e, cond), tio["logits_dimo_drop_label_none"], TRANSFORMER_NET)


def test_registration_defaults_and_assets():
    entry = teachers.get("maskgit")
    assert entry.config_cls is MaskGITConfig and entry.scales == ("paper",)
    assert entry.default_metrics == ("fid", "inception_score", "prdc")
    for key, value in entry.default_params.items():
        stage, _, name = key.partition(".")
        cls = MaskGITConfig if stage == "teacher" else _stage_class(stage)
        assert schema(cls)[name].check(value) == value, key
    params = entry.default_params
    assert (params["distill.r_init"], params["distill.sigma_init"], params["distill.teacher_cfg"]) == (0.6, 0.1, 2.0)
    assert (params["distill.lr_generator"], params["distill.lr_aux"], params["distill.ema_decay"]) == (1e-5, 1e-5, 0.9999)
    dimo = RELEASED_SAMPLERS["dimo_teacher"]
    assert params["sample.cfg"] == dimo.cfg == 5.5 and params["teacher.softmax_temperature"] == 1.3
    assert entry.assets(MaskGITConfig()) == ["maskgit_imagenet256", "maskgit_vqgan_f16_1024"]
    assert entry.assets(TINY) == []
    for name in ("maskgit_imagenet256", "maskgit_vqgan_f16_1024"):
        asset = assets.manifest.get(name)
        assert asset.source.startswith("https://huggingface.co/llvictorll/Maskgit-pytorch") and len(asset.sha256) == 64
    with pytest.raises(ValueError, match="neither a registered asset"):
        entry.assets(MaskGITConfig(vqgan_weights="no_such_asset"))


def test_list_and_paper_dry_run(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert run_main(["--list", "teachers"], out=out, err=err) == 0
    assert "maskgit " in out.getvalue()
    out = io.StringIO()
    grid = str(REPO / "ablations" / "soft_vs_hard.yaml")
    assert run_main(["--grid", grid, "--scale", "paper", "--dry-run", "--results", str(tmp_path)],
                    out=out, err=io.StringIO()) == 0
    planned = out.getvalue()
    assert all(f"maskgit dimo hard s{s}" in planned for s in range(3))
    assert all(f"maskgit dimo {r} +gan s{s}" in planned for r in ("gumbel", "soft") for s in range(3))


def test_paper_run_without_weights_stops_naming_each_asset(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTDIMO_ASSETS", str(tmp_path / "assets"))
    for var in ("SOFTDIMO_MASKGIT_IMAGENET256", "SOFTDIMO_MASKGIT_VQGAN"):
        monkeypatch.delenv(var, raising=False)
    out, err = io.StringIO(), io.StringIO()
    grid = str(REPO / "ablations" / "soft_vs_hard.yaml")
    assert run_main(["--grid", grid, "--scale", "paper", "--results", str(tmp_path / "results")],
                    out=out, err=err) == 2
    message = err.getvalue()
    for name, file in (("maskgit_imagenet256", "pretrained_maskgit/MaskGIT/MaskGIT_ImageNet_256.pth"),
                       ("maskgit_vqgan_f16_1024", "pretrained_maskgit/VQGAN/last.ckpt")):
        line = next(x for x in message.splitlines() if f"'{name}'" in x)
        assert "missing" in line and "huggingface.co/llvictorll/Maskgit-pytorch" in line and file in line
    assert "nothing was submitted" in message


def test_entry_builds_from_file_paths(tmp_path, monkeypatch, tio):
    monkeypatch.setenv("SOFTDIMO_ASSETS", str(tmp_path / "assets"))
    vit, ckpt = _released_files(tmp_path)
    config = MaskGITConfig(size="tiny", transformer_weights=str(vit), vqgan_weights=str(ckpt))
    entry = teachers.get("maskgit")
    assert len(entry.assets(config)) == 2
    built = entry.build(config, RunContext(tmp_path, tmp_path, log=lambda s: None))
    with torch.no_grad():
        e = built.network.embed(tio["tokens"][..., None])
        assert_parity(full_logits(built.network, e, labels_cond(tio["labels"]), tio["drop_none"]),
                                   tio["logits_cond"], TRANSFORMER_NET)
    missing = MaskGITConfig(size="tiny", transformer_weights=str(tmp_path / "absent.pth"))
    with pytest.raises(assets.AssetError, match="absent.pth"):
        entry.build(missing, RunContext(tmp_path, tmp_path))


def test_tiny_random_teacher_is_seeded():
    a = build_maskgit_teacher(MaskGITConfig(size="tiny", init_seed=3), None, None)
    b = build_maskgit_teacher(MaskGITConfig(size="tiny", init_seed=3), None, None)
    for (n, p), (_, q) in zip([*a.network.state_dict().items(), *a.vqgan.state_dict().items()],
                              [*b.network.state_dict().items(), *b.vqgan.state_dict().items()]):
        assert torch.equal(p, q), n
    with pytest.raises(ValueError, match="needs transformer and VQGAN weight files"):
        build_maskgit_teacher(MaskGITConfig(), None, None)
