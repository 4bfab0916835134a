"""MaskGen teacher: released key layout, parity with the upstream fixtures, the soft path, the
tied head, no hidden re-masking, CLIP text features, the sampler end to end, errors."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from harness.builtin import maskgen as maskgen_entry
from harness.contracts.entries import RunContext
from harness.contracts.registry import teachers
from harness.grid.spec import STAGE_CONFIGS
from harness.store import assets
from harness.store.assets import AssetError
from softdimo.params import schema
from softdimo.teachers.base import Condition, ImageNoise, MDMNetwork, Teacher, guided_logits
from softdimo.teachers.clip_text import build_clip_text_encoder
from softdimo.teachers.maskgen import (MASKGEN_ARCHS, MaskGenArch, MaskGenConfig, aesthetic_embedding,
                                       load_maskgen, maskgen_guidance, remask_count)
from softdimo.teachers.tatitok import TATITOK_ARCHS, TATiTokArch, load_tatitok
from softdimo.teachers.weights import CheckpointError
from tests.float_tolerance import assert_parity
from tests.maskgen_tiny import FIXTURES, MASKGEN_FILE, PROMPTS, TATITOK_FILE, tiny_maskgen_config, write_tiny_clip

# Float32 tolerances (tests/float_tolerance.py) of the tiny networks of the fixtures (README), as
# (sequential reductions, longest reduction). MaskGen: 2 joint blocks of 9 reductions (norm, q / k / v,
# scores over 8 head dimensions, softmax and attention over 16 + 7 tokens, output projection, norm,
# MLP over 32 and 128 units) plus the text, pooled and micro-condition projections, the final norm
# and the tied head: 24 reductions of at most 128 terms.
TRANSFORMER = (24, 128)
# TA-TiTok: the 8 x 8 x 3 patch embedding (192 terms), 2 ViT layers of 9 reductions over at most
# 128 terms, the 1 x 1 convolution to 192 channels and the 3 x 3 output convolution: 23 reductions.
TOKENIZER = (23, 192)
TEXT = (21, 128)                    # CLIP text: 2 layers of 9 reductions (MLP 4 x 32), norm, projection
SOFT_EMBEDDING = (1, 32)            # p @ E over the 32 codes
SINUSOID = (1, 16)                  # the aesthetic sinusoid: one product and sin / cos per channel



@pytest.fixture(scope="module")
def io():
    return load_file(str(FIXTURES / "maskgen_vq_tiny_io.safetensors"))


@pytest.fixture(scope="module")
def tio():
    return load_file(str(FIXTURES / "tatitok_vq_tiny_io.safetensors"))


@pytest.fixture()
def net(io):
    network = load_maskgen(MASKGEN_FILE, MASKGEN_ARCHS["tiny"], (3, 32, 32))
    network.set_null_condition(io["null_text_seq"][0], io["null_text_pooled"][0, 0])
    return network


def fixture_cond(io) -> Condition:
    return Condition("text", {"seq": io["text_seq"], "pooled": io["text_pooled"][:, 0],
                              "aesthetic": io["aesthetic_score"]})


#----------------------------------------------------------------------------
# Architecture and strict loading.


def test_presets_match_the_fixture_config():
    config = json.loads((FIXTURES / "tiny_config.json").read_text())
    assert MaskGenArch.from_upstream(config) == MASKGEN_ARCHS["tiny"]
    assert TATiTokArch.from_upstream(config) == TATITOK_ARCHS["tiny"]
    assert MASKGEN_ARCHS["L"].vocab_rows == 9194
    assert (MASKGEN_ARCHS["XL"].width, MASKGEN_ARCHS["XL"].depth) == (1280, 20)


def test_strict_load_uses_released_key_names(net):
    released = load_file(str(MASKGEN_FILE))
    assert set(net.state_dict()) == set(released)
    assert net.lm_head.weight is net.embeddings.weight
    assert isinstance(net, MDMNetwork)
    for key, value in released.items():
        assert torch.equal(net.state_dict()[key], value), key


@pytest.mark.parametrize("variant", ["only_embeddings", "only_lm_head", "torch_bin"])
def test_load_accepts_deduplicated_and_pickled_files(variant, io, tmp_path):
    state = load_file(str(MASKGEN_FILE))
    if variant == "only_embeddings":
        del state["lm_head.weight"]
    elif variant == "only_lm_head":
        del state["embeddings.weight"]
    path = tmp_path / ("w.bin" if variant == "torch_bin" else "w.safetensors")
    if variant == "torch_bin":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    network = load_maskgen(path, MASKGEN_ARCHS["tiny"])
    assert network.lm_head.weight is network.embeddings.weight
    out = network(network.embed(io["input_ids"][..., None]), fixture_cond(io))
    assert_parity(out.logits[:, :, 0], io["logits_cond"], TRANSFORMER)


def test_load_rejects_untied_unexpected_and_misshaped_files(tmp_path):
    state = load_file(str(MASKGEN_FILE))
    untied = dict(state, **{"lm_head.weight": state["lm_head.weight"] + 1})
    save_file(untied, str(tmp_path / "untied.safetensors"))
    with pytest.raises(CheckpointError, match="lm_head.weight different"):
        load_maskgen(tmp_path / "untied.safetensors", MASKGEN_ARCHS["tiny"])
    extra = dict(state, **{"blocks.2.attn.to_q.weight": torch.zeros(1)})
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(\d+\): blocks\.2\.attn\.to_q\.weight"):
        load_maskgen(tmp_path / "extra.safetensors", MASKGEN_ARCHS["tiny"])
    with pytest.raises(CheckpointError, match="shape mismatches.*embeddings.weight"):
        load_maskgen(MASKGEN_FILE, MaskGenArch(**{**MASKGEN_ARCHS["tiny"].__dict__, "codebook_size": 31}))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_maskgen(tmp_path / "absent.bin", MASKGEN_ARCHS["tiny"])


#----------------------------------------------------------------------------
# Parity with the upstream MaskGen_VQ (fixtures recorded with diffusers' JointTransformerBlock).


def test_parity_conditional_null_and_cfg_logits(net, io):
    cond = fixture_cond(io)
    embeds = net.embed(io["input_ids"][..., None])
    out = net(embeds, cond, hidden_layers=[0, 1])
    assert out.logits.shape == (3, 8, 1, 32)
    assert_parity(out.logits[:, :, 0], io["logits_cond"], TRANSFORMER)
    assert_parity(out.hidden[0], io["inter_block0_image_out"], TRANSFORMER)
    assert_parity(out.hidden[1], io["inter_block1_image_out"], TRANSFORMER)
    ctx, c = net.condition(cond)
    assert_parity(ctx, io["inter_text_embed_proj_out"], TRANSFORMER)
    assert_parity(c, io["inter_cond_pooled_proj_out"][:, 0], TRANSFORMER)
    assert_parity(net.norm(out.hidden[1], c), io["inter_final_norm_out"], TRANSFORMER)

    drop = torch.ones(3, dtype=torch.bool)
    assert_parity(net(embeds, cond, drop=drop).logits[:, :, 0], io["logits_uncond"], TRANSFORMER)
    # Upstream CFG z_c + s (z_c - z_u) with s = 3 is guided_logits with w = 1 + s (one doubled batch).
    guided = guided_logits(net, embeds, cond, 1.0 + io["cfg_scale"].item())
    assert_parity(guided.logits[:, :, 0], io["logits_cfg"], TRANSFORMER)
    mixed = net(embeds, cond, drop=torch.tensor([True, False, True])).logits[:, :, 0]
    assert_parity(mixed[1], io["logits_cond"][1], TRANSFORMER)
    assert_parity(mixed[[0, 2]], io["logits_uncond"][[0, 2]], TRANSFORMER)


def test_parity_masked_rows_and_aesthetic_sinusoid(io):
    ids = io["input_ids"]
    assert (ids[1, 1::2] == 32).all() and (ids[2] == 32).all()  # the fixture's masked cases
    aes = aesthetic_embedding(io["aesthetic_score"], 16)
    assert_parity(torch.cat([io["text_pooled"][:, 0], aes], -1), io["pooled_with_aes"][:, 0], SINUSOID)


def test_parity_soft_input(net, io):
    cond = fixture_cond(io)
    soft = net.embed_soft(io["soft_probs"][:, :, None, :])
    assert_parity(soft, io["soft_emb"], SOFT_EMBEDDING)
    assert_parity(net(soft, cond).logits[:, :, 0], io["logits_soft_cond"], TRANSFORMER)
    drop = torch.ones(3, dtype=torch.bool)
    assert_parity(net(soft, cond, drop=drop).logits[:, :, 0], io["logits_soft_uncond"], TRANSFORMER)


def test_embed_soft_of_one_hot_equals_embed_exactly(net, io):
    tokens = torch.randint(0, 32, (4, 8, 1), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(4, 8, 1, dtype=torch.bool)
    mask[:, ::3] = True
    one_hot = torch.nn.functional.one_hot(tokens, 32).float()
    assert torch.equal(net.embed_soft(one_hot), net.embed(tokens))
    masked = torch.where(mask, torch.full_like(tokens, 32), tokens)
    assert torch.equal(net.embed_soft(one_hot, mask), net.embed(masked))
    with pytest.raises(ValueError, match=r"\[0, 32\]"):
        net.embed(torch.full((1, 8, 1), 33))


def test_tied_head_and_frozen_embedding_names(net, io):
    names = dict(net.named_parameters())
    assert net.embedding_parameter_names() <= set(names)
    assert "lm_head.weight" not in names  # one Parameter, reported once
    x = torch.randn(2, 8, 32)
    assert_close(net.lm_head(x), x @ net.embeddings.weight[:32].T, atol=0, rtol=0)
    theta = copy.deepcopy(net)
    assert theta.lm_head.weight is theta.embeddings.weight
    with torch.no_grad():
        theta.embeddings.weight[3] += 1.0
    assert torch.equal(theta.lm_head.weight[3], theta.embeddings.weight[3])
    assert not torch.equal(theta.embeddings.weight[3], net.embeddings.weight[3])
    assert torch.equal(theta.null_text_seq, net.null_text_seq)  # CFG encoding travels with copies


def test_train_mode_never_remasks(net, io):
    cond = fixture_cond(io)
    embeds = net.embed(io["input_ids"][..., None])
    before = embeds.clone()
    reference = net.eval()(embeds, cond).logits
    net.train()
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.equal(net(embeds, cond).logits, reference)
    assert torch.equal(embeds, before)
    assert_parity(reference[0, :, 0], io["logits_cond"][0], TRANSFORMER)  # all-known row stays all-known


#----------------------------------------------------------------------------
# TA-TiTok.


def test_tatitok_decoder_and_encoder_parity(tio):
    tok = load_tatitok(TATITOK_FILE, TATITOK_ARCHS["tiny"], with_encoder=True)
    assert set(tok.state_dict()) == set(load_file(str(TATITOK_FILE)))
    with torch.no_grad():
        assert_parity(tok.decode_tokens(tio["dec_tokens"], tio["text_guidance"]), tio["images_from_tokens"], TOKENIZER)
        assert_parity(tok.quantize.codebook_entry(tio["soft_probs"]), tio["soft_latent"], SOFT_EMBEDDING)
        assert_parity(tok.decode_probs(tio["soft_probs"], tio["text_guidance"]), tio["images_from_soft"], TOKENIZER)
        z, ids = tok.encode(tio["enc_image"])
        assert torch.equal(ids, tio["enc_indices"])
        assert_parity(z, tio["enc_latent_quantized"], TOKENIZER)
        assert_parity(tok.decode(z, tio["text_guidance"][:2]), tio["enc_recon"], TOKENIZER)


def test_tatitok_optional_embed_prob_and_decoder_only_load(tio, tmp_path):
    state = load_file(str(TATITOK_FILE))
    save_file(dict(state, **{"quantize.embed_prob": torch.rand(32)}), str(tmp_path / "cvq.safetensors"))
    tok = load_tatitok(tmp_path / "cvq.safetensors", TATITOK_ARCHS["tiny"], with_encoder=False)
    assert tok.encoder is None and not any(k.startswith("encoder.") for k in tok.state_dict())
    with torch.no_grad():
        assert_parity(tok.decode_tokens(tio["dec_tokens"], tio["text_guidance"]), tio["images_from_tokens"], TOKENIZER)
    save_file(dict(state, **{"decoder.extra": torch.zeros(1)}), str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(\d+\): decoder.extra"):
        load_tatitok(tmp_path / "bad.safetensors", TATITOK_ARCHS["tiny"])


#----------------------------------------------------------------------------
# CLIP text features.


def test_clip_text_features_match_open_clip(tmp_path):
    import open_clip

    config_path, weights_path = write_tiny_clip(tmp_path)
    encoder = build_clip_text_encoder(str(config_path), weights_path)
    reference = open_clip.model.CLIP(32, {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                          "patch_size": 16},
                                     {"context_length": 7, "vocab_size": 49408, "width": 32, "heads": 4,
                                      "layers": 2}, quick_gelu=True).eval()
    reference.load_state_dict(load_file(str(weights_path)))
    ids = encoder.tokenize(["a cat", "", "a very long prompt that is truncated to seven tokens"])
    assert ids.shape == (3, 7)
    with torch.no_grad():
        f = encoder(ids)
        assert_parity(f.pooled, reference.encode_text(ids), TEXT)
        x = reference.token_embedding(ids) + reference.positional_embedding
        last, (penultimate,) = reference.transformer.forward_intermediates(x, reference.attn_mask, indices=[0])
        assert_parity(f.seq, penultimate, TEXT)
        assert_parity(f.final, reference.ln_final(last), TEXT)
    assert f.seq.shape == f.final.shape == (3, 7, 32) and f.pooled.shape == (3, 32)
    assert not torch.allclose(f.seq, f.final)


def test_clip_errors_name_the_file(tmp_path):
    config_path, weights_path = write_tiny_clip(tmp_path)
    state = load_file(str(weights_path))
    del state["ln_final.weight"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError, match=r"broken.safetensors.*missing keys \(\d+\): ln_final.weight"):
        build_clip_text_encoder(str(config_path), tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match="neither an open_clip model name"):
        build_clip_text_encoder("ViT-Nonexistent", weights_path)


#----------------------------------------------------------------------------
# The teacher, built through the registry entry, end to end.


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    directory = tmp_path_factory.mktemp("maskgen")
    config = tiny_maskgen_config(directory)
    ctx = RunContext(run_dir=directory / "run", cache_dir=directory / "cache")
    return teachers.get("maskgen").build(config, ctx)


def test_tiny_teacher_samples_and_decodes(tiny_teacher):
    teacher = tiny_teacher
    assert isinstance(teacher, Teacher) and teacher.layout.image_shape == (3, 32, 32)
    cond = teacher.encode_condition(list(PROMPTS[:2]))
    assert set(cond.tensors) == {"seq", "pooled", "aesthetic", "final"}
    assert torch.equal(cond.tensors["aesthetic"], torch.full((2,), 6.5))
    tokens = teacher.sample(cond, noise=ImageNoise(7, [0, 1]))
    assert tokens.shape == (2, 8, 1) and tokens.dtype == torch.long
    assert ((tokens >= 0) & (tokens < 32)).all()
    images = teacher.decode(tokens, cond)
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    # Samples are seeded per image: image 1 alone equals image 1 of the pair; seeds matter.
    alone = teacher.sample(cond.index(slice(1, 2)), noise=ImageNoise(7, [1]))
    assert torch.equal(alone[0], tokens[1])
    assert torch.equal(teacher.sample(cond, noise=ImageNoise(7, [0, 1])), tokens)
    others = torch.stack([teacher.sample(cond, noise=ImageNoise(s, [0, 1])) for s in range(8, 12)])
    assert (others != tokens).any()
    # The soft decoder path at a one-hot distribution is the hard decoder.
    one_hot = torch.nn.functional.one_hot(tokens, 32).float().requires_grad_(True)
    soft_images = teacher.decode_soft(one_hot, cond)
    assert_parity(soft_images, images, TOKENIZER)
    soft_images.sum().backward()
    assert one_hot.grad is not None and one_hot.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="text-conditioned"):
        teacher.decode(tokens)


def test_sampler_follows_the_released_schedule(tiny_teacher, monkeypatch):
    teacher = tiny_teacher
    assert maskgen_guidance(12.0, 1.0, "cosine") == pytest.approx(12.0)
    assert maskgen_guidance(12.0, 1 / 16, "cosine") == pytest.approx(1 + 11 * (1 - math.cos(math.pi / 16)) / 2)
    assert maskgen_guidance(12.0, 0.5, "linear") == pytest.approx(6.5)
    network = teacher.network
    masked_seen, weights_seen = [], []
    original_embed = network.embed
    monkeypatch.setattr(network, "embed", lambda t: masked_seen.append(int((t == 32).sum())) or original_embed(t))
    import softdimo.teachers.maskgen as mg
    original_guided = mg.guided_logits
    monkeypatch.setattr(mg, "guided_logits", lambda n, e, c, w: weights_seen.append(w) or original_guided(n, e, c, w))
    cond = teacher.encode_condition([PROMPTS[0]])
    teacher.sample(cond, steps=4, noise=ImageNoise(0, [0]))
    # 8 tokens, 4 steps: floor(8 arccos(r) / (pi/2)) for r = 1/4, 2/4, 3/4, clamped to [1, masked-1].
    expected = [8]
    for r in (0.25, 0.5, 0.75):
        expected.append(int(remask_count(8, r, torch.tensor([expected[-1]]))[0]))
    assert masked_seen == expected == [8, 6, 5, 3]
    assert weights_seen == pytest.approx([1 + maskgen_guidance(12.0, r, "cosine") for r in (0.25, 0.5, 0.75, 1.0)])


def test_prompt_files(tiny_teacher, tmp_path):
    teacher = tiny_teacher
    assert teacher.eval_conditions(5) == [PROMPTS[i % 3] for i in range(5)]
    draws = teacher.sample_conditions(6, torch.Generator().manual_seed(1))
    assert draws == teacher.sample_conditions(6, torch.Generator().manual_seed(1))
    assert set(draws) <= set(PROMPTS)
    with pytest.raises(TypeError, match="prompts"):
        teacher.encode_condition([3])
    missing = copy.copy(teacher)
    missing._prompts = {}
    missing.config = MaskGenConfig(size="tiny", train_prompts=str(tmp_path / "none.txt"))
    with pytest.raises(FileNotFoundError, match="teacher.train_prompts.*none.txt"):
        missing.sample_conditions(1, torch.Generator())
    with pytest.raises(ValueError, match="teacher.eval_prompts is not set"):
        missing.eval_conditions(1)


#----------------------------------------------------------------------------
# Registration and assets.


def test_registration_defaults_are_valid_parameters():
    entry = teachers.get("maskgen")
    assert entry.scales == ("paper",) and entry.config_cls is MaskGenConfig
    assert entry.default_metrics == ("geneval", "hps", "clip_score")
    for key, value in entry.default_params.items():
        stage, _, name = key.partition(".")
        assert schema(STAGE_CONFIGS[stage])[name].check(value) == value, key
    assert entry.default_params["sample.cfg"] == 12.0 and entry.default_params["sample.steps"] == 16
    for name in ("maskgen_vq_l", "maskgen_vq_xl", "tatitok_bl128_vq", "openai_clip_vit_l_14_336"):
        assert assets.manifest.get(name).sha256 is None


def test_missing_weights_name_the_asset(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTDIMO_ASSETS", str(tmp_path))
    for var in ("SOFTDIMO_MASKGEN_VQ_L", "SOFTDIMO_TATITOK_BL128_VQ", "SOFTDIMO_CLIP_VIT_L_14_336"):
        monkeypatch.delenv(var, raising=False)
    entry = teachers.get("maskgen")
    assert entry.assets(MaskGenConfig()) == ["maskgen_vq_l", "tatitok_bl128_vq", "openai_clip_vit_l_14_336"]
    assert entry.assets(MaskGenConfig(size="XL"))[0] == "maskgen_vq_xl"
    assert entry.assets(MaskGenConfig(generator_weights="/x.bin")) == ["tatitok_bl128_vq", "openai_clip_vit_l_14_336"]
    ctx = RunContext(run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    with pytest.raises(AssetError, match="asset 'maskgen_vq_l' is missing.*huggingface.co/fun-research/MaskGen"):
        entry.build(MaskGenConfig(), ctx)
    with pytest.raises(ValueError, match="teacher.generator_weights must be set"):
        maskgen_entry.weight_paths(MaskGenConfig(size="tiny"))


def test_paper_cells_resolve_with_maskgen_defaults(monkeypatch):
    from harness.contracts import registry
    from harness.contracts.entries import MethodEntry
    from harness.grid.spec import CellError, resolve_cell

    sampler = MethodEntry("maskgen_test_sampler", stages=("teacher", "sample"), run=lambda spec, ctx: None)
    monkeypatch.setitem(registry.methods._entries, sampler.name, sampler)
    spec = resolve_cell({"teacher": "maskgen", "method": sampler.name, "seed": 0}, "paper")
    assert spec.param("teacher.size") == "L" and spec.param("sample.cfg") == 12.0
    assert spec.param("sample.choice_temperature") == 2.0
    with pytest.raises(CellError, match="runs at scale"):
        resolve_cell({"teacher": "maskgen", "method": sampler.name, "seed": 0}, "mini")
    with pytest.raises(CellError, match="teacher.size.*'L', 'XL', 'tiny'"):
        resolve_cell({"teacher": "maskgen", "method": sampler.name, "seed": 0, "teacher.size": "M"}, "paper")


def test_released_sizes_have_the_published_parameter_counts():
    from softdimo.teachers.clip_text import ClipTextEncoder, open_clip_text_config
    from softdimo.teachers.maskgen import MaskGenNetwork, _check_compatible
    from softdimo.teachers.tatitok import TATiTok
    from open_clip.model import _build_text_tower

    with torch.device("meta"):
        large, xl = MaskGenNetwork(MASKGEN_ARCHS["L"]), MaskGenNetwork(MASKGEN_ARCHS["XL"])
        tokenizer = TATiTok(TATITOK_ARCHS["bl128_vq"])
        embed_dim, text_cfg, _ = open_clip_text_config("ViT-L-14-336")
        text = ClipTextEncoder(_build_text_tower(embed_dim, text_cfg, quick_gelu=True), None, "ViT-L-14-336")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731 (tied head counted once)
    # docs/maskgen.md: 604.3M (2.42 GB) and 1176.6M (4.71 GB); TA-TiTok bl128 391M.
    assert (count(large), count(xl), count(tokenizer)) == (604_311_552, 1_176_611_840, 391_046_292)
    _check_compatible(MASKGEN_ARCHS["L"], tokenizer, text)
    _check_compatible(MASKGEN_ARCHS["XL"], tokenizer, text)
    assert large.layout.positions == 128 and large.layout.mask_id == 8192


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_parity_and_sampling_on_gpu(io, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cuda = torch.device("cuda")
    network = load_maskgen(MASKGEN_FILE, MASKGEN_ARCHS["tiny"]).to(cuda)
    cond = fixture_cond(io).to(cuda)
    out = network(network.embed(io["input_ids"][..., None].to(cuda)), cond)
    assert_parity(out.logits[:, :, 0].cpu(), io["logits_cond"], TRANSFORMER)   # float32 (TF32 off)
    config = tiny_maskgen_config(tmp_path)
    teacher = teachers.get("maskgen").build(config, RunContext(tmp_path / "run", tmp_path / "cache", device=cuda))
    cond = teacher.encode_condition(list(PROMPTS))
    tokens = teacher.sample(cond, noise=ImageNoise(0, range(3), device=cuda))
    assert tokens.device.type == "cuda" and ((tokens >= 0) & (tokens < 32)).all()
    assert teacher.decode(tokens, cond).shape == (3, 3, 32, 32)


# A tiny MaskGen teacher with its tiny random CLIP text encoder, distilled with soft embeddings and
# a reward step: the CLIP-score reward (a tiny random CLIP image/text pair) of `decode_soft`.
def test_soft_dimo_with_a_reward_step_end_to_end(tiny_teacher, tmp_path):
    import open_clip
    from safetensors.torch import load_file as load_safetensors

    from harness.methods.metrics.clip_score import CLIPModel, CLIPScoreReward
    from harness.methods.metrics.hps import OPENAI_MEAN, OPENAI_STD
    from softdimo.config import DistillConfig, RelaxConfig
    from softdimo.refine.reward import RewardConfig, RewardRefinement
    from softdimo.relax import RELAXATIONS
    from softdimo.train import Distiller, run_distillation
    from tests.maskgen_tiny import TINY_CLIP_CONFIG

    teacher = tiny_teacher
    _, weights = write_tiny_clip(tmp_path, seed=11)
    model = open_clip.model.CLIP(TINY_CLIP_CONFIG["embed_dim"], TINY_CLIP_CONFIG["vision_cfg"],
                                 TINY_CLIP_CONFIG["text_cfg"], quick_gelu=True)
    model.load_state_dict(load_safetensors(str(weights)))
    model.visual.preprocess_cfg = {"size": (32, 32), "mean": OPENAI_MEAN, "std": OPENAI_STD}
    clip = CLIPModel("tiny", weights, "", model.eval(), None,
                     open_clip.tokenizer.SimpleTokenizer(context_length=7), torch.device("cpu"))
    reward = CLIPScoreReward(clip, "A photo depicts ")
    before = {k: v.clone() for k, v in teacher.network.state_dict().items()}
    soft, _ = RELAXATIONS["soft"]

    def distil(refinement):
        return run_distillation(Distiller(teacher, soft, RelaxConfig(), DistillConfig(steps=2, batch_size=3),
                                          seed=0, refinement=refinement))

    refined = distil(RewardRefinement(RewardConfig(models=("clip_score",), weight=10.0), teacher,
                                      {"clip_score": reward}))
    plain = distil(None)
    for h in refined.history:
        assert all(math.isfinite(h[k]) for k in ("divergence", "aux_loss", "reward_clip_score"))
    for k, v in teacher.network.state_dict().items():
        assert torch.equal(v, before[k]), k                            # the teacher stays frozen
    assert [h["divergence"] for h in refined.history][:1] == [plain.history[0]["divergence"]]   # same draws
    moved = [not torch.equal(a, b) for a, b in zip(refined.generator.parameters(), plain.generator.parameters())]
    assert any(moved)                                  # the reward's gradient reached the generator
