"""Meissonic teacher: released key layouts, parity with the upstream fixtures (transformer, VQ
decoder, CLIP text encoder, one sampler step), the soft and noised input paths, Di[M]O and reward
steps on the tiny teacher, the sampler, registration and assets."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from harness.builtin import meissonic as meissonic_entry
from harness.contracts.entries import RunContext
from harness.contracts.registry import teachers
from harness.grid.spec import STAGE_CONFIGS
from harness.store import assets
from harness.store.assets import AssetError
from softdimo.dimo import perturb_embeddings
from softdimo.params import schema
from softdimo.teachers.base import Condition, ImageNoise, MDMNetwork, Teacher, guided_logits, mask_ratio
from softdimo.teachers.clip_text import build_clip_text_encoder
from softdimo.teachers.meissonic import (MeissonicConfig, draw_categorical, load_meissonic_network, remask,
                                         remask_count)
from softdimo.teachers.meissonic_transformer import MEISSONIC_ARCHS, MeissonicArch, MeissonicNetwork
from softdimo.teachers.vq_decoder import VQ_DECODER_ARCHS, VQDecoder, VQDecoderArch, load_vq_decoder
from softdimo.teachers.weights import CheckpointError
from tests.float_tolerance import assert_parity
from tests.meissonic_tiny import (CLIP_FILE, FIXTURES, PROMPTS, TRANSFORMER_FILE, VQVAE_FILE, clip_config,
                                  tiny_meissonic_config)

# Float32 tolerances (tests/float_tolerance.py) of the tiny networks of the fixtures (README), as
# (sequential reductions, longest reduction). Transformer: 4 blocks (2 double-stream, 2 single)
# of 9 reductions (norm, q / k / v, scores over 16 head dimensions, softmax and attention over 7 + 16
# tokens, output projection, norm, MLP over 32 and 128 units) plus the embedding, context, time and
# pooled projections, the down- and up-sampling and the head: 42 reductions of at most 128 terms.
TRANSFORMER = (42, 128)
# VQ decoder: input convolution, 3 levels of 2 ResNet blocks (group norm and 3x3 convolution twice,
# at most 16 channels: 144 terms), 2 up-sampling convolutions, the output norm and convolution.
DECODER = (30, 144)
# CLIP text encoder: 2 layers of 9 reductions over at most 96 terms (MLP 4 x 24), final norm, projection.
TEXT = (21, 96)
SOFT_EMBEDDING = (1, 32)            # p @ E over the 32 codes

B, C, MASK = 3, 32, 39
TINY = MEISSONIC_ARCHS["tiny"]


@pytest.fixture(scope="module")
def io():
    return load_file(str(FIXTURES / "meissonic_transformer_tiny_io.safetensors"))


@pytest.fixture()
def net(io):
    network = load_meissonic_network(TRANSFORMER_FILE, TINY, (3, 32, 32))
    network.set_null_condition(io["neg_text_seq"][0], io["neg_text_pooled"][0])
    return network


# Upstream logits [B, C, H, W] -> ours [B, L, C] (raster order).
def tokens_last(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def fixture_cond(io, timestep: float = 0.0) -> Condition:
    return Condition("text", {"seq": io["text_seq"], "pooled": io["text_pooled"], "micro": io["micro_conds"],
                              "timestep": torch.full((B,), timestep)})


def logits(out) -> torch.Tensor:
    return out.logits[:, :, 0]


#----------------------------------------------------------------------------
# Architecture and strict loading.


def test_presets_match_the_fixture_config_and_the_release():
    config = json.loads((FIXTURES / "tiny_config.json").read_text())
    assert MeissonicArch.from_upstream(config["transformer"], grid=8) == TINY
    assert VQDecoderArch.from_upstream(config["vqvae"]) == VQ_DECODER_ARCHS["tiny"]
    released = {"attention_head_dim": 128, "axes_dims_rope": [16, 56, 56], "codebook_size": 8192,
                "downsample": True, "guidance_embeds": False, "in_channels": 64, "joint_attention_dim": 1024,
                "num_attention_heads": 8, "num_layers": 14, "num_single_layers": 28, "patch_size": 1,
                "pooled_projection_dim": 1024, "upsample": True, "vocab_size": 8256}
    assert MeissonicArch.from_upstream(released, grid=64) == MEISSONIC_ARCHS["full"]
    with pytest.raises(ValueError, match="downsample and upsample"):
        MeissonicArch.from_upstream({**released, "downsample": False}, grid=64)
    with pytest.raises(ValueError, match="unsupported VQModel settings.*mid_block_add_attention"):
        VQDecoderArch.from_upstream({**config["vqvae"], "mid_block_add_attention": True})


def test_released_sizes_match_the_published_file_sizes():
    from open_clip.model import _build_text_tower

    from softdimo.teachers.clip_text import open_clip_text_config

    with torch.device("meta"):
        net = MeissonicNetwork(MEISSONIC_ARCHS["full"])
        decoder = VQDecoder(VQ_DECODER_ARCHS["full"])
        embed_dim, text_cfg, quick = open_clip_text_config("ViT-H-14")
        text = _build_text_tower(embed_dim, text_cfg, quick_gelu=quick)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # float32 files on the model page: transformer 4.03 GB, text encoder 1.42 GB (to 10 MB); the
    # VQ-VAE's 585 MB include the encoder, which is not built here.
    assert abs(4 * count(net) - 4.03e9) < 0.005e9
    assert abs(4 * count(text) - 1.42e9) < 0.005e9
    assert 0 < 4 * count(decoder) < 585e6
    assert net.layout.positions == 4096 and net.layout.mask_id == 8255 and net.layout.classes == 8192
    assert net.num_layers == 42 and VQ_DECODER_ARCHS["full"].scale_factor * 64 == 1024


def test_strict_load_uses_released_key_names(net):
    released = load_file(str(TRANSFORMER_FILE))
    assert set(net.state_dict()) == set(released) and isinstance(net, MDMNetwork)
    for key, value in released.items():
        assert torch.equal(net.state_dict()[key], value), key
    assert net.embedding_parameter_names() == {k for k in released if k.startswith(("embed.", "mlm_layer."))}


@pytest.mark.parametrize("component", ["transformer", "vqvae", "text_encoder"])
def test_strict_load_refuses_a_renamed_key_and_a_wrong_shape(component, tmp_path):
    file, renamed, reshaped = {
        "transformer": (TRANSFORMER_FILE, "transformer_blocks.1.attn.norm_added_k.weight", "mlm_layer.conv2.weight"),
        "vqvae": (VQVAE_FILE, "decoder.up_blocks.2.resnets.0.conv_shortcut.weight", "quantize.embedding.weight"),
        "text_encoder": (CLIP_FILE, "text_model.final_layer_norm.weight", "text_projection.weight"),
    }[component]
    state = load_file(str(file))
    target = {"transformer": "mlm_layer.conv2.weight", "vqvae": "quantize.embedding.weight",
              "text_encoder": "text_projection"}[component]

    def load(path):
        if component == "transformer":
            return load_meissonic_network(path, TINY)
        if component == "vqvae":
            return load_vq_decoder(path, VQ_DECODER_ARCHS["tiny"])
        config = tmp_path / "clip.json"
        config.write_text(json.dumps(clip_config(64)))
        return build_clip_text_encoder(str(config), path, quick_gelu=False)

    bad = dict(state)
    bad[renamed.replace("weight", "wieght")] = bad.pop(renamed)
    save_file(bad, str(tmp_path / "renamed.safetensors"))
    with pytest.raises(CheckpointError, match=r"renamed.safetensors.*missing keys \(1\).*unexpected keys \(1\)"):
        load(tmp_path / "renamed.safetensors")
    bad = dict(state)
    bad[reshaped] = torch.zeros(*bad[reshaped].shape[:-1], bad[reshaped].shape[-1] + 1)
    save_file(bad, str(tmp_path / "reshaped.safetensors"))
    with pytest.raises(CheckpointError, match=rf"shape mismatches \(1\): {target}"):
        load(tmp_path / "reshaped.safetensors")
    load(file)  # the untouched file loads


#----------------------------------------------------------------------------
# Transformer parity with the upstream `Transformer2DModel`.


def test_parity_conditional_negative_and_cfg_logits(net, io):
    cond = fixture_cond(io)
    ids = io["input_ids"].reshape(B, -1, 1)
    assert (ids[1, 1::2] == MASK).all() and (ids[2] == MASK).all() and (ids[0] < C).all()
    e = net.embed(ids)
    assert_parity(e, tokens_last(io["inter_embed_out"]), TRANSFORMER)
    ctx, c = net.condition(cond)
    assert_parity(ctx, io["inter_context"], TRANSFORMER)
    assert_parity(c, io["inter_temb"], TRANSFORMER)
    out = net(e, cond, hidden_layers=[0, 1, 2, 3])
    assert out.logits.shape == (B, 64, 1, C)
    assert_parity(logits(out), tokens_last(io["logits_cond"]), TRANSFORMER)
    assert_parity(out.hidden[0], io["inter_double0_image"], TRANSFORMER)
    assert_parity(out.hidden[1], io["inter_double1_image"], TRANSFORMER)
    assert_parity(out.hidden[2], io["inter_single0_joint"][:, 7:], TRANSFORMER)
    assert_parity(out.hidden[3], io["inter_single1_joint"][:, 7:], TRANSFORMER)
    drop = torch.ones(B, dtype=torch.bool)
    assert_parity(logits(net(e, cond, drop=drop)), tokens_last(io["logits_neg"]), TRANSFORMER)
    # Di[M]O's teacher CFG z_neg + w (z_c - z_neg), w = 4: guided_logits (one doubled batch).
    assert_parity(logits(guided_logits(net, e, cond, io["cfg_scale"].item())), tokens_last(io["logits_cfg"]), TRANSFORMER)
    mixed = logits(net(e, cond, drop=torch.tensor([True, False, True])))
    assert_parity(mixed[1], tokens_last(io["logits_cond"])[1], TRANSFORMER)
    assert_parity(mixed[[0, 2]], tokens_last(io["logits_neg"])[[0, 2]], TRANSFORMER)


def test_parity_sampler_timestep(net, io):
    e = net.embed(io["input_ids"].reshape(B, -1, 1))
    cond = fixture_cond(io, timestep=2.0)
    assert_parity(logits(net(e, cond)), tokens_last(io["logits_cond_t2"]), TRANSFORMER)
    assert_parity(logits(net(e, cond, drop=torch.ones(B, dtype=torch.bool))), tokens_last(io["logits_neg_t2"]), TRANSFORMER)
    assert not torch.allclose(io["logits_cond_t2"], io["logits_cond"], atol=1e-3)


def test_parity_soft_input(net, io):
    probs = io["soft_probs"][:, :, None, :]
    table = net.token_embedding.embeddings.weight
    assert_parity(io["soft_probs"] @ table[:C], io["soft_emb"], SOFT_EMBEDDING)
    soft = net.embed_soft(probs)
    cond = fixture_cond(io)
    assert_parity(logits(net(soft, cond)), tokens_last(io["logits_soft_cond"]), TRANSFORMER)
    drop = torch.ones(B, dtype=torch.bool)
    assert_parity(logits(net(soft, cond, drop=drop)), tokens_last(io["logits_soft_neg"]), TRANSFORMER)


def test_parity_embedding_noise_as_dimo_applies_it(net, io):
    e = net.embed(io["input_ids"].reshape(B, -1, 1))
    noised = perturb_embeddings(e, io["noise_sigma"].item(), tokens_last(io["noise_emb"]))
    assert_parity(logits(net(noised, fixture_cond(io))), tokens_last(io["logits_noise_cond"]), TRANSFORMER)


def test_embed_soft_of_one_hot_equals_embed(net):
    tokens = torch.randint(0, C, (2, 64, 1), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 64, 1, dtype=torch.bool)
    mask[:, ::3] = True
    one_hot = torch.nn.functional.one_hot(tokens, C).float()
    assert_parity(net.embed_soft(one_hot), net.embed(tokens), SOFT_EMBEDDING)
    masked = torch.where(mask, torch.full_like(tokens, MASK), tokens)
    assert_parity(net.embed_soft(one_hot, mask), net.embed(masked), SOFT_EMBEDDING)
    for bad in (C, MASK + 1, -1):  # unused table rows and out-of-range ids are refused
        with pytest.raises(ValueError, match="mask id 39"):
            net.embed(torch.full((1, 64, 1), bad))


def test_train_mode_is_deterministic_with_released_dropout(net, io):
    e = net.embed(io["input_ids"].reshape(B, -1, 1))
    reference = logits(net.eval()(e, fixture_cond(io)))
    assert any(isinstance(m, torch.nn.Dropout) for m in net.modules())
    net.train()
    torch.manual_seed(0)
    assert torch.equal(logits(net(e, fixture_cond(io))), reference)  # p = 0 as released


#----------------------------------------------------------------------------
# The sampler: one upstream `Scheduler.step` with its recorded noise.


def test_parity_one_sampler_step(io):
    ids = io["step_input_ids"].reshape(B, -1)
    step, steps = io["step_index"].item(), io["step_count"].item()
    assert_close(torch.linspace(2.0, 0.0, steps), io["step_temperatures"], atol=0, rtol=0)
    probs = torch.softmax(tokens_last(io["step_logits"]), dim=-1)
    drawn = io["step_drawn"].reshape(B, -1)
    unknown = ids == MASK
    assert torch.equal(drawn[~unknown], ids[~unknown])  # known tokens are kept
    count = remask_count(64, step, steps, unknown.sum(dim=1))
    assert torch.equal(count, torch.clamp(torch.minimum(unknown.sum(1) - 1, torch.tensor(45)), min=1))
    out = remask(probs, drawn, ids, MASK, count, io["step_temperatures"][step], io["step_gumbel"])
    assert torch.equal(out, io["step_output_ids"].reshape(B, -1))
    assert torch.equal((out == MASK).sum(1), count)
    assert torch.equal(io["last_step_output_ids"], io["last_step_drawn"])  # the last step keeps every draw


def test_draw_categorical_follows_the_distribution():
    probs = torch.zeros(1, 4000, 8)
    probs[..., 3], probs[..., 6] = 0.25, 0.75
    u = torch.rand(1, 4000, generator=torch.Generator().manual_seed(0))
    drawn = draw_categorical(probs, u)
    assert set(drawn.unique().tolist()) == {3, 6}
    assert abs((drawn == 6).float().mean().item() - 0.75) < 0.03
    assert torch.equal(draw_categorical(probs, torch.zeros(1, 4000)), torch.full((1, 4000), 3))


#----------------------------------------------------------------------------
# VQ decoder and CLIP text encoder parity.


def test_vq_decoder_parity_hard_and_soft():
    vio = load_file(str(FIXTURES / "meissonic_vqvae_tiny_io.safetensors"))
    decoder = load_vq_decoder(VQVAE_FILE, VQ_DECODER_ARCHS["tiny"])
    released = set(load_file(str(VQVAE_FILE)))
    assert set(decoder.state_dict()) == {k for k in released if not k.startswith(("encoder.", "quant_conv."))}
    with torch.no_grad():
        assert_parity(decoder.decode_tokens(vio["dec_tokens"].flatten(1)), vio["images_from_tokens"], DECODER)
        assert_parity(decoder.decode_probs(vio["soft_probs"]), vio["images_from_soft"], DECODER)
        one_hot = torch.nn.functional.one_hot(vio["dec_tokens"].flatten(1), C).float()
        assert_parity(decoder.decode_probs(one_hot), vio["images_from_tokens"], DECODER)


def test_clip_text_parity_transformers_layout(tmp_path):
    cio = load_file(str(FIXTURES / "meissonic_clip_text_tiny_io.safetensors"))
    config = tmp_path / "clip.json"
    config.write_text(json.dumps(clip_config(64)))
    encoder = build_clip_text_encoder(str(config), CLIP_FILE, quick_gelu=False)
    with torch.no_grad():
        f = encoder(cio["token_ids"])
    assert_parity(f.seq, cio["hidden_penultimate"], TEXT)            # hidden_states[-2]
    assert_parity(f.pooled, cio["text_embeds"], TEXT)                # projected first-EOT feature
    assert_parity(f.final, cio["last_hidden_state"], TEXT)
    state = load_file(str(CLIP_FILE))                                # older files keep position_ids
    save_file(dict(state, **{"text_model.embeddings.position_ids": torch.arange(7)[None]}),
              str(tmp_path / "old.safetensors"))
    build_clip_text_encoder(str(config), tmp_path / "old.safetensors", quick_gelu=False)
    del state["text_model.encoder.layers.1.self_attn.k_proj.bias"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError, match="resblocks.1.attn.in_proj_bias needs q_proj, k_proj and v_proj"):
        build_clip_text_encoder(str(config), tmp_path / "broken.safetensors", quick_gelu=False)


#----------------------------------------------------------------------------
# The tiny teacher, built through the registry entry, end to end.


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    torch.set_num_threads(1)          # as its tests run: module fixtures are built before theirs
    directory = tmp_path_factory.mktemp("meissonic")
    ctx = RunContext(run_dir=directory / "run", cache_dir=directory / "cache")
    return teachers.get("meissonic").build(tiny_meissonic_config(directory), ctx)


def test_tiny_teacher_conditions_samples_and_decodes(tiny_teacher):
    teacher = tiny_teacher
    assert isinstance(teacher, Teacher) and teacher.layout.image_shape == (3, 32, 32)
    cond = teacher.encode_condition(list(PROMPTS[:2]))
    assert set(cond.tensors) == {"seq", "pooled", "micro", "timestep"}
    assert cond.tensors["seq"].shape == (2, 7, 24) and cond.tensors["pooled"].shape == (2, 32)
    assert torch.equal(cond.tensors["micro"], torch.tensor([[32.0, 32.0, 0.0, 0.0, 6.0]] * 2))
    assert torch.equal(cond.tensors["timestep"], torch.zeros(2))
    null = teacher.text_encoder.encode([teacher.config.negative_prompt])
    assert_parity(teacher.network.null_text_seq[0], null.seq[0], TEXT)   # the negative prompt, encoded again
    tokens = teacher.sample(cond, steps=4, noise=ImageNoise(7, [0, 1]))
    assert tokens.shape == (2, 64, 1) and ((tokens >= 0) & (tokens < C)).all()
    alone = teacher.sample(cond.index(slice(1, 2)), steps=4, noise=ImageNoise(7, [1]))
    assert torch.equal(alone[0], tokens[1])                          # per-image noise streams
    others = [teacher.sample(cond, steps=4, noise=ImageNoise(s, [0, 1])) for s in range(8, 11)]
    assert any(not torch.equal(o, tokens) for o in others)
    images = teacher.decode(tokens)
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    one_hot = torch.nn.functional.one_hot(tokens, C).float().requires_grad_(True)
    soft_images = teacher.decode_soft(one_hot)
    assert_parity(soft_images, images, DECODER)
    soft_images.sum().backward()
    assert one_hot.grad is not None and one_hot.grad.abs().sum() > 0
    with pytest.raises(TypeError, match="prompts"):
        teacher.encode_condition([3])
    with pytest.raises(ValueError, match="steps must be at least 1"):
        teacher.sample(cond, steps=0, noise=ImageNoise(7, [0, 1]))


def test_sampler_follows_the_released_schedule(tiny_teacher, monkeypatch):
    import softdimo.teachers.meissonic as m

    network = tiny_teacher.network
    seen = []
    original = m.guided_logits
    mask_embedding = network.embed(torch.full((1, 64, 1), MASK))[0, 0]
    monkeypatch.setattr(m, "guided_logits", lambda n, e, c, w: seen.append(
        (c.tensors["timestep"][0].item(), w, int((e == mask_embedding).all(-1).sum()))) or original(n, e, c, w))
    cond = tiny_teacher.encode_condition([PROMPTS[0]])
    tiny_teacher.sample(cond, steps=4, noise=ImageNoise(0, [0]))
    expected, masked = [64], 64
    for i in range(3):  # floor(64 cos(pi/2 (i+1)/4)), clamped to [1, masked - 1]
        masked = min(masked - 1, math.floor(64 * math.cos(math.pi / 2 * (i + 1) / 4)))
        expected.append(masked)
    assert [s[0] for s in seen] == [3.0, 2.0, 1.0, 0.0] and {s[1] for s in seen} == {9.0}
    assert [s[2] for s in seen] == expected == [64, 59, 45, 24]


def test_prompt_files_and_cosine_clamped_schedule(tiny_teacher):
    assert tiny_teacher.eval_conditions(4) == [PROMPTS[i % 3] for i in range(4)]
    draws = tiny_teacher.sample_conditions(5, torch.Generator().manual_seed(1))
    assert set(draws) <= set(PROMPTS)
    u = torch.tensor([0.0, 0.1, 0.5, 0.999, 1.0])
    assert_close(mask_ratio(u, "cosine_clamped"), torch.cos(u * math.pi / 2).clamp(0.02, 0.98), atol=0, rtol=0)
    assert mask_ratio(u, "cosine_clamped").min() == pytest.approx(0.02)


@pytest.mark.parametrize("relaxation", ["hard", "gumbel", "soft"])
def test_one_dimo_step_per_relaxation(tiny_teacher, relaxation):
    from softdimo.config import DistillConfig, RelaxConfig
    from softdimo.relax import RELAXATIONS
    from softdimo.train import Distiller

    teacher = tiny_teacher
    before = {k: v.clone() for k, v in teacher.network.state_dict().items()}
    config = DistillConfig(steps=1, batch_size=2, r_init=0.5, sigma_init=0.3, teacher_cfg=4.0,
                           mask_schedule="cosine_clamped", lr_generator=1e-3, lr_aux=1e-3, warmup_steps=0)
    distiller = Distiller(teacher, RELAXATIONS[relaxation][0], RelaxConfig(), config, seed=0)
    log = distiller.train_step()
    assert all(math.isfinite(log[k]) for k in ("divergence", "aux_loss", "grad_norm"))
    for k, v in teacher.network.state_dict().items():
        assert torch.equal(v, before[k]), k                           # the teacher stays frozen
    frozen = teacher.network.embedding_parameter_names()
    moved = {n for n, p in distiller.generator.named_parameters() if not torch.equal(p, before[n])}
    assert moved and not moved & frozen                               # embed / mlm_layer fixed


def test_reward_step_reaches_the_generator(tiny_teacher):
    from softdimo.config import DistillConfig, RelaxConfig
    from softdimo.refine.reward import RewardConfig, RewardRefinement
    from softdimo.relax import RELAXATIONS
    from softdimo.train import Distiller, run_distillation

    def redness(images, cond):  # a tiny differentiable reward: mean red minus mean blue
        return images[:, 0].mean((1, 2)) - images[:, 2].mean((1, 2))

    def distil(refinement):
        config = DistillConfig(steps=1, batch_size=2, r_init=0.5, sigma_init=0.3, teacher_cfg=4.0,
                               mask_schedule="cosine_clamped", warmup_steps=0)
        return run_distillation(Distiller(tiny_teacher, RELAXATIONS["soft"][0], RelaxConfig(), config, seed=0,
                                          refinement=refinement))

    refined = distil(RewardRefinement(RewardConfig(models=("red",), weight=10.0), tiny_teacher, {"red": redness}))
    plain = distil(None)
    assert math.isfinite(refined.history[0]["reward_red"])
    assert refined.history[0]["divergence"] == plain.history[0]["divergence"]   # same draws
    assert any(not torch.equal(a, b) for a, b in zip(refined.generator.parameters(), plain.generator.parameters()))


#----------------------------------------------------------------------------
# Registration and assets.


def test_registration_defaults_are_valid_parameters():
    entry = teachers.get("meissonic")
    assert entry.scales == ("paper",) and entry.config_cls is MeissonicConfig
    assert entry.default_metrics == ("geneval", "hps", "clip_score")
    for key, value in entry.default_params.items():
        stage, _, name = key.partition(".")
        assert schema(STAGE_CONFIGS[stage])[name].check(value) == value, key
    p = entry.default_params
    assert (p["distill.r_init"], p["distill.sigma_init"], p["distill.teacher_cfg"], p["distill.lr_generator"]) == \
        (0.5, 0.3, 4.0, 1e-6)
    assert p["distill.mask_schedule"] == "cosine_clamped" and (p["sample.steps"], p["sample.cfg"]) == (64, 9.0)
    for name in ("meissonic_transformer", "meissonic_vqvae", "meissonic_text_encoder"):
        assert len(assets.manifest.get(name).sha256) == 64


def test_missing_weights_name_each_asset(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTDIMO_ASSETS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    for var in ("SOFTDIMO_MEISSONIC_TRANSFORMER", "SOFTDIMO_MEISSONIC_VQVAE", "SOFTDIMO_MEISSONIC_TEXT_ENCODER"):
        monkeypatch.delenv(var, raising=False)
    entry = teachers.get("meissonic")
    assert entry.assets(MeissonicConfig()) == ["meissonic_transformer", "meissonic_vqvae", "meissonic_text_encoder"]
    # A file path is an asset of its own, so the pre-launch check names a missing file too.
    by_path = entry.assets(MeissonicConfig(vqvae_weights="/x.safetensors"))
    assert by_path[0::2] == ["meissonic_transformer", "meissonic_text_encoder"]
    assert by_path[1].startswith("meissonic_vqvae_weights_file_")
    assert str(assets.manifest.get(by_path[1]).filename) == "/x.safetensors"
    tiny = entry.assets(MeissonicConfig(size="tiny", transformer_weights="meissonic_transformer",
                                        vqvae_weights="/v", text_encoder_weights="/t"))
    assert tiny[0] == "meissonic_transformer" and len(tiny) == 3
    ctx = RunContext(run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    with pytest.raises(AssetError, match="'meissonic_transformer' is missing.*huggingface.co/MeissonFlow/Meissonic"):
        entry.build(MeissonicConfig(), ctx)
    with pytest.raises(ValueError, match="teacher.transformer_weights must be set"):
        meissonic_entry.weight_paths(MeissonicConfig(size="tiny"))


def test_paper_grid_plans_meissonic_and_stops_before_launch_without_weights(tmp_path, monkeypatch):
    import io as text_io

    from harness import run

    monkeypatch.setenv("SOFTDIMO_ASSETS", str(tmp_path / "assets"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    for var in ("SOFTDIMO_MEISSONIC_TRANSFORMER", "SOFTDIMO_MEISSONIC_VQVAE", "SOFTDIMO_MEISSONIC_TEXT_ENCODER"):
        monkeypatch.delenv(var, raising=False)
    common = ["--grid", "ablations/soft_vs_hard.yaml", "--scale", "paper", "--results", str(tmp_path / "r")]
    out, err = text_io.StringIO(), text_io.StringIO()
    assert run.main(common + ["--dry-run"], out, err) == 0
    plan = out.getvalue().split("\ncost plan:")[0]                     # the cells, before their costs
    assert sum(" meissonic " in line for line in plan.splitlines()) == 9      # 3 relaxations x 3 seeds
    out, err = text_io.StringIO(), text_io.StringIO()
    assert run.main(common + ["--executor", "debug"], out, err) == 2
    for name in ("meissonic_transformer", "meissonic_vqvae", "meissonic_text_encoder"):
        assert f"asset '{name}' is missing" in err.getvalue()
    assert not (tmp_path / "r" / "soft_vs_hard").exists() or not any((tmp_path / "r").rglob("record.json"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_parity_and_sampling_on_gpu(io, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cuda = torch.device("cuda")
    network = load_meissonic_network(TRANSFORMER_FILE, TINY, (3, 32, 32)).to(cuda)
    out = network(network.embed(io["input_ids"].reshape(B, -1, 1).to(cuda)), fixture_cond(io).to(cuda))
    assert_parity(logits(out).cpu(), tokens_last(io["logits_cond"]), TRANSFORMER)   # float32 (TF32 off)
    ctx = RunContext(tmp_path / "run", tmp_path / "cache", device=cuda)
    teacher = teachers.get("meissonic").build(tiny_meissonic_config(tmp_path), ctx)
    cond = teacher.encode_condition(list(PROMPTS))
    tokens = teacher.sample(cond, steps=4, noise=ImageNoise(0, range(3), device=cuda))
    assert tokens.device.type == "cuda" and teacher.decode(tokens).shape == (3, 3, 32, 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and the released weights "
                    "(assets meissonic_*; none on this machine)")
def test_released_teacher_samples_on_gpu(tmp_path):
    names = meissonic_entry.required_assets(MeissonicConfig())
    if assets.check_before_launch(names, verify_hash=False):
        pytest.skip("released Meissonic weights are not installed (python -m harness.prepare.assets check)")
    ctx = RunContext(tmp_path / "run", tmp_path / "cache", device=torch.device("cuda"))
    teacher = teachers.get("meissonic").build(MeissonicConfig(), ctx)
    cond = teacher.encode_condition(["a photo of a cat"])
    tokens = teacher.sample(cond, steps=4, noise=ImageNoise(0, [0], device="cuda"))
    assert teacher.decode(tokens).shape == (1, 3, 1024, 1024)


def test_deep_copies_carry_the_negative_prompt(net):
    theta = copy.deepcopy(net)
    assert torch.equal(theta.null_text_seq, net.null_text_seq)
