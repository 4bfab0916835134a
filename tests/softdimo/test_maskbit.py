"""The MaskBit teacher: parity with the upstream fixtures, bit-token soft embeddings, the sampler,
strict loading of released key layouts, and its registration (tiny sizes, CPU, seconds)."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from harness.contracts.entries import RunContext
from harness.contracts.registry import refinements, teachers
from harness.grid.spec import STAGE_CONFIGS
from harness.store import assets
from softdimo.params import schema
from softdimo.teachers.base import Condition, ImageNoise, MDMNetwork, Teacher, TokenLayout, guided_logits
from softdimo.teachers.maskbit import (MaskBitConfig, build_maskbit_teacher, generator_arch, guidance_weight,
                                       load_generator, load_tokenizer, maskbit_sample, released_sampler,
                                       remask_count, tokenizer_arch)
from softdimo.teachers.class_conditioned import load_real_tokens, save_real_tokens
from softdimo.teachers.maskbit_generator import (LFQBert, combine_groups, expected_bits,
                                                 near_uniform_fraction, split_groups)
from softdimo.teachers.maskbit_tokenizer import Conv2dSame, MaskBitTokenizer
from softdimo.teachers.weights import CheckpointError, load_strict
from tests.float_tolerance import assert_parity, rounding_atol

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "maskbit"
GEN_FILE = FIXTURES / "lfqbert_tiny_state_dict.safetensors"
TOK_FILE = FIXTURES / "tokenizer_tiny_state_dict.safetensors"
# Float32 tolerances (tests/float_tolerance.py) of the tiny networks of the fixtures (README), as
# (sequential reductions, longest reduction). Generator (LFQBert): the bit-to-embedding projection,
# 2 blocks of 9 reductions (norm, q / k / v, scores over 16 head dimensions, softmax and attention
# over 17 tokens, output projection, norm, MLP over 64 and 256 units) and the output layers: 24
# reductions of at most 256 terms.
GENERATOR = (24, 256)
# Tokenizer (ConvVQModel, 64 channels at most: 3 x 3 x 64 = 576 terms): the input convolution, 3
# levels of 2 ResNet blocks (2 group norms and 2 convolutions each), the mid blocks and the
# re-sampling convolutions, the output norm and convolution: 38 reductions.
TOKENIZER = (38, 576)
EXPECTED_BITS = (1, 1024)           # sum_j p_j bits(j) over the 1024 codes

TINY = MaskBitConfig(bits=10, size="tiny")

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def gio() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "lfqbert_tiny_io.safetensors"))


@pytest.fixture(scope="module")
def tio() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "tokenizer_tiny_io.safetensors"))


@pytest.fixture(scope="module")
def teacher():
    return build_maskbit_teacher(TINY, GEN_FILE, TOK_FILE)


def labels_cond(labels: torch.Tensor) -> Condition:
    return Condition("class", {"labels": labels.clone()}, labels.tolist())



# The configuration class of a parameter stage: a fixed stage's, or the refinement's that owns it.
def _stage_class(stage: str) -> type:
    return STAGE_CONFIGS.get(stage) or next(e.config_cls for _, e in refinements.items() if e.stage == stage)

#----------------------------------------------------------------------------
# Generator parity.


def test_generator_logits_match_upstream(teacher, gio):
    net = teacher.network
    cond = labels_cond(gio["labels"])
    with torch.no_grad():
        e = net.embed(gio["tokens"])
        torch.testing.assert_close(net.token_bits(gio["tokens"]), gio["token_bits"], atol=0, rtol=0)
        z_c = net(e, cond, gio["drop_none"]).logits
        z_u = net(e, cond, gio["drop_all"]).logits
        assert_parity(z_c, gio["logits_cond"], GENERATOR)
        assert_parity(z_u, gio["logits_uncond"], GENERATOR)
        assert_parity(net(e, cond, gio["drop_mixed"]).logits, gio["logits_mixed_drop"], GENERATOR)
        null = labels_cond(gio["labels_with_null"])
        assert_parity(net(e, null, gio["drop_none"]).logits, gio["logits_null_label"], GENERATOR)
        # CFG: upstream writes z_c + s (z_c - z_u); the harness's guided_logits uses w = 1 + s.
        s = float(gio["cfg_scale"])
        # z_c + s (z_c - z_u) carries z_c's error times 1 + s and z_u's times s: (1 + 2s) times the
        # logits' tolerance at their magnitude
        logits = torch.maximum(gio["logits_cond"].abs(), gio["logits_uncond"].abs())
        cfg = dict(atol=(1 + 2 * s) * rounding_atol(logits, *GENERATOR), rtol=0.0)
        torch.testing.assert_close(z_c + s * (z_c - z_u), gio["logits_cfg"], **cfg)
        torch.testing.assert_close(guided_logits(net, e, cond, 1.0 + s).logits, gio["logits_cfg"], **cfg)


def test_generator_masked_rows_and_intermediates(teacher, gio):
    net = teacher.network
    seen: dict[str, torch.Tensor] = {}
    modules = {"first": net.first_layer, "trunk": net.transformer.layers[-1][1], "last": net.last_layer}
    hooks = [m.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, o))
             for key, m in modules.items()]
    try:
        with torch.no_grad():
            row = gio["tokens"][1:2]          # groups masked separately and together
            e = net.embed(row)
            no_drop = torch.zeros(1, dtype=torch.bool)
            out = net(e, labels_cond(gio["labels"][1:2]), no_drop, hidden_layers=(0, 1))
    finally:
        for h in hooks:
            h.remove()
    assert_parity(e, gio["inter_input_proj_out"], GENERATOR)
    assert_parity(seen["first"], gio["inter_first_layer_out"], GENERATOR)
    assert_parity(seen["trunk"], gio["inter_transformer_out"], GENERATOR)
    assert_parity(seen["last"], gio["inter_last_layer_out"], GENERATOR)
    # hidden states are the image positions of the requested layers (class token, index 16, dropped)
    assert [tuple(h.shape) for h in out.hidden] == [(1, 16, 64), (1, 16, 64)]
    assert_parity(out.hidden[1], gio["inter_transformer_out"][:, :16], GENERATOR)
    assert_parity(out.logits, gio["logits_cond"][1:2], GENERATOR)
    # fully masked row: every group's bits are zero
    assert torch.all(net.token_bits(gio["tokens"][2]) == 0)
    with pytest.raises(ValueError, match="hidden_layers"):
        net(e, labels_cond(gio["labels"][1:2]), hidden_layers=(2,))


def test_generator_soft_input_matches_upstream(teacher, gio):
    net = teacher.network
    cond = labels_cond(gio["labels"])
    assert_parity(expected_bits(gio["soft_probs"]), gio["soft_bits"], EXPECTED_BITS)
    with torch.no_grad():
        e = net.embed_soft(gio["soft_probs"])
        assert_parity(net(e, cond, gio["drop_none"]).logits, gio["logits_soft_cond"], GENERATOR)
        assert_parity(net(e, cond, gio["drop_all"]).logits, gio["logits_soft_uncond"], GENERATOR)


def test_label_tensor_never_written_and_no_drop_by_default(teacher, gio):
    # Upstream writes the null label in place and, with drop_label_mask=None, drops every label.
    net = teacher.network
    cond = labels_cond(gio["labels"])
    before = cond.tensors["labels"].clone()
    with torch.no_grad():
        e = net.embed(gio["tokens"])
        net(e, cond, gio["drop_all"])
        assert torch.equal(cond.tensors["labels"], before)
        assert_parity(net(e, cond, None).logits, gio["logits_cond"], GENERATOR)


#----------------------------------------------------------------------------
# Tokenizer parity.


def test_decoder_matches_upstream(teacher, tio):
    tok = teacher.tokenizer
    with torch.no_grad():
        latent = tok.indices_to_latent(tio["dec_tokens"])
        assert torch.equal(latent, tio["latent_bits"])
        assert_parity(tok.decode_tokens(tio["dec_tokens"]), tio["images_from_tokens"], TOKENIZER)
        trace: list[torch.Tensor] = []
        tok.decoder(latent[:1], trace=trace)
        for got, key in zip(trace, ["inter_dec_conv_in", "inter_dec_mid", "inter_dec_up0",
                                    "inter_dec_up1", "inter_dec_up2"]):
            assert_parity(got, tio[key], TOKENIZER)
        assert_parity(tok.decode(tio["soft_latent"]), tio["images_from_soft"], TOKENIZER)


def test_encoder_round_trip_matches_upstream(teacher, tio):
    tok = teacher.tokenizer
    with torch.no_grad():
        assert_parity(tok.encoder(tio["enc_image"]), tio["enc_pre_quant"], TOKENIZER)
        quantized, indices = tok.encode(tio["enc_image"])
        assert torch.equal(quantized, tio["enc_latent_quantized"])
        assert torch.equal(indices, tio["enc_indices"])
        assert_parity(tok.decode(quantized), tio["enc_recon"], TOKENIZER)
        # the teacher's encode gives group tokens of the same indices
        groups = teacher.encode(tio["enc_image"])
        assert torch.equal(combine_groups(groups, 10), tio["enc_indices"].flatten(1))


def test_teacher_decode_uses_group_order_of_the_tokenizer(teacher, gio, tio):
    # dec_tokens row 0 is generator row 0 with its groups combined (g0 + 32 g1).
    assert torch.equal(split_groups(tio["dec_tokens"][0], 10), gio["tokens"][0])
    with torch.no_grad():
        images = teacher.decode(split_groups(tio["dec_tokens"], 10))
        assert_parity(images, tio["images_from_tokens"].clamp(0, 1), TOKENIZER)
        soft = teacher.decode_soft(gio["soft_probs"][:2])
        assert_parity(soft, tio["images_from_soft"].clamp(0, 1), TOKENIZER)


def test_tf_same_padding_is_asymmetric_for_stride_two():
    torch.manual_seed(0)
    conv = Conv2dSame(4, 4, 3, stride=2)
    x = torch.randn(1, 4, 8, 8)
    reference = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, conv.bias, stride=2)
    symmetric = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)
    torch.testing.assert_close(conv(x), reference, atol=0, rtol=0)
    assert (conv(x) - symmetric).abs().max() > 1e-2
    # stride 1: symmetric "same" padding keeps the size
    assert Conv2dSame(4, 4, 3)(x).shape == x.shape


def test_fixtures_detect_padding_and_skip_quirks(teacher, tio, monkeypatch):
    # The parity checks above would fail without the two quirks: symmetric padding moves the encoder
    # output, and a plain residual instead of h + nin(h) moves the decoded image.
    tok = teacher.tokenizer
    assert hasattr(tok.decoder.up[1].res_blocks[0], "nin_shortcut")
    assert hasattr(tok.encoder.down[2].res_blocks[0], "nin_shortcut")
    with torch.no_grad():
        monkeypatch.setattr(Conv2dSame, "forward",
                            lambda self, x: F.conv2d(x, self.weight, self.bias, self.stride,
                                                     (self.kernel_size[0] - 1) // 2))
        assert (tok.encoder(tio["enc_image"]) - tio["enc_pre_quant"]).abs().max() > 1e-2
        monkeypatch.undo()
        block = tok.decoder.up[1].res_blocks[0]
        monkeypatch.setattr(block.nin_shortcut, "forward", lambda h: torch.zeros_like(h))
        assert (tok.decode_tokens(tio["dec_tokens"]) - tio["images_from_tokens"]).abs().max() > 1e-2


#----------------------------------------------------------------------------
# Soft embeddings.


def test_embed_soft_of_one_hot_equals_embed_exactly(teacher, gio):
    net = teacher.network
    tokens = gio["tokens"]
    mask = tokens == net.layout.mask_id
    one_hot = F.one_hot(tokens.masked_fill(mask, 0), net.layout.classes).float()
    with torch.no_grad():
        assert torch.equal(net.embed_soft(one_hot, mask), net.embed(tokens))


def test_embed_soft_is_the_expectation_of_embed(teacher, gio):
    # Monte Carlo over M tokens drawn from the per-group distributions. Each coordinate of the
    # mean has standard error sigma/sqrt(M); we allow 6 estimated standard errors per coordinate
    # (4096 coordinates; seeded, so deterministic) plus float32 rounding 1e-5.
    net = teacher.network
    probs = gio["soft_probs"]
    g = torch.Generator().manual_seed(0)
    m, chunk = 4000, 500
    total = torch.zeros(4, 16, 64, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    with torch.no_grad():
        for _ in range(m // chunk):
            draws = torch.multinomial(probs.reshape(-1, 32), chunk, replacement=True, generator=g)
            tokens = draws.T.reshape(chunk, 4, 16, 2)
            e = net.embed(tokens.reshape(chunk * 4, 16, 2)).reshape(chunk, 4, 16, 64).double()
            total += e.sum(0)
            total_sq += (e * e).sum(0)
        mean = total / m
        stderr = ((total_sq / m - mean ** 2).clamp_min(0) / m).sqrt()
        soft = net.embed_soft(probs).double()
    assert torch.all((mean - soft).abs() <= 6 * stderr + 1e-5)
    # and the check has power: swapping the two groups' distributions is detected
    swapped = net.embed_soft(probs.flip(2)).double()
    assert torch.any((mean - swapped).abs() > 6 * stderr + 1e-5)


def test_near_uniform_fraction_flags_groups_that_look_masked():
    uniform = torch.full((2, 16, 2, 32), 1 / 32)
    assert near_uniform_fraction(uniform, tol=1e-6) == 1.0
    one_hot = F.one_hot(torch.randint(32, (2, 16, 2), generator=torch.Generator().manual_seed(0)), 32).float()
    assert near_uniform_fraction(one_hot, tol=0.1) == 0.0
    # mass split between v and its bitwise complement: expected bits 0, i.e. the mask encoding
    complement = torch.zeros(1, 1, 1, 32)
    complement[..., 5] = complement[..., 31 - 5] = 0.5
    assert near_uniform_fraction(complement, tol=1e-6) == 1.0
    mixed = torch.cat([uniform[:, :, :1], one_hot[:, :, :1]], dim=2)
    assert near_uniform_fraction(mixed, tol=0.1) == 0.5


def test_teacher_reports_soft_diagnostics(teacher):
    uniform = torch.full((2, 16, 2, 32), 1 / 32)
    assert teacher.soft_diagnostics(uniform) == {"near_uniform_groups": 1.0}


def test_decode_soft_is_differentiable(teacher, gio):
    logits = torch.randn(1, 16, 2, 32, requires_grad=True)
    teacher.decode_soft(logits.softmax(-1)).mean().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


#----------------------------------------------------------------------------
# Sampler.


@pytest.mark.parametrize("steps", [8, 12])
def test_sampler_unmasks_on_the_arccos_schedule(teacher, steps):
    slots = teacher.layout.slots
    cond = teacher.encode_condition([1, 2, 3])
    trace: list[torch.Tensor] = []
    tokens = maskbit_sample(teacher.network, cond, steps, 3.0, ImageNoise(0, [0, 1, 2]), 1.0, 4.5,
                            "cosine", 3.0, trace=trace)
    expected, masked = [], slots
    for i in range(steps - 1):
        n = math.floor(math.acos((i + 1) / steps) / (math.pi / 2) * slots)
        masked = min(max(n, 1), masked - 1)
        expected.append(masked)
    expected.append(0)
    mask_id = teacher.layout.mask_id
    assert [(t == mask_id).flatten(1).sum(1).tolist() for t in trace] == [[e] * 3 for e in expected]
    for before, after in zip(trace, trace[1:]):       # unmasked slots keep their values
        known = before != mask_id
        assert torch.equal(after[known], before[known])
    assert torch.equal(trace[-1], tokens)
    assert tokens.shape == (3, 16, 2) and tokens.min() >= 0 and tokens.max() < teacher.layout.classes
    assert remask_count(0, steps, slots, slots) == expected[0]


def test_sampler_is_seeded_per_image(teacher):
    noise = ImageNoise(7, [0, 1, 2])
    batch = teacher.sample(teacher.encode_condition([4, 5, 6]), 6, 2.0, noise, 1.0, 2.0)
    alone = teacher.sample(teacher.encode_condition([5]), 6, 2.0, ImageNoise(7, [1]), 1.0, 2.0)
    assert torch.equal(batch[1:2], alone)
    again = teacher.sample(teacher.encode_condition([4, 5, 6]), 6, 2.0, ImageNoise(7, [0, 1, 2]), 1.0, 2.0)
    assert torch.equal(batch, again)
    images = teacher.decode(batch)
    assert images.shape == (3, 3, 16, 16) and images.min() >= 0 and images.max() <= 1


def test_guidance_annealing_and_released_settings():
    assert guidance_weight(0, 64, 8.1, "cosine", 3.0) == 1.0      # s = 0 at the first step
    assert guidance_weight(32, 64, 8.1, "cosine", 1.0) == pytest.approx(1.0 + 7.1 / 2)
    assert guidance_weight(10, 64, 8.1, "none", 3.0) == 8.1
    assert guidance_weight(16, 64, 3.0, "linear", 3.0) == pytest.approx(1.5)
    row = released_sampler(14)
    assert (row.cfg, row.randomize_temperature, row.scale_pow) == (pytest.approx(8.1), 7.8, 3.0)
    assert released_sampler(10).scale_pow == 2.5 and released_sampler(14, 256).guidance_scale == 5.8
    with pytest.raises(KeyError, match="known"):
        released_sampler(12, 128)


#----------------------------------------------------------------------------
# Strict loading of released key layouts.


def test_released_file_names_token_emb_loads(tmp_path, gio):
    state = load_file(str(GEN_FILE))
    released = {k.replace("input_proj", "token_emb"): v for k, v in state.items()}
    path = tmp_path / "maskbit_generator_10bit.bin"
    torch.save(released, path)
    net = load_generator(path, generator_arch("tiny", 10)).eval()
    with torch.no_grad():
        logits = net(net.embed(gio["tokens"]), labels_cond(gio["labels"]), gio["drop_none"]).logits
    assert_parity(logits, gio["logits_cond"], GENERATOR)


def test_strict_load_fails_loudly(tmp_path):
    state = load_file(str(GEN_FILE))
    arch = generator_arch("tiny", 10)
    missing = {k: v for k, v in state.items() if k != "pos_emb"}
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): pos_emb"):
        load_strict(LFQBert(arch), missing, "test file")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): extra.weight"):
        load_strict(LFQBert(arch), {**state, "extra.weight": torch.zeros(1)}, "test file")
    with pytest.raises(CheckpointError, match=r"shape mismatches .*input_proj.weight"):
        load_strict(LFQBert(generator_arch("tiny", 12)), state, "test file")
    both = {**state, "token_emb.weight": state["input_proj.weight"]}
    torch.save(both, tmp_path / "both.bin")
    with pytest.raises(CheckpointError, match="both its released and its renamed name"):
        load_generator(tmp_path / "both.bin", arch)
    tok_state = load_file(str(TOK_FILE))
    tok_state.pop("decoder.up.1.res_blocks.0.nin_shortcut.weight")
    save_file(tok_state, str(tmp_path / "tok.safetensors"))
    with pytest.raises(CheckpointError, match="nin_shortcut"):
        load_tokenizer(tmp_path / "tok.safetensors", tokenizer_arch("tiny", 10))


class _NotATensor:
    pass


def test_checkpoints_are_read_weights_only(tmp_path):
    torch.save({"pos_emb": torch.zeros(1), "payload": _NotATensor()}, tmp_path / "pickle.bin")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_generator(tmp_path / "pickle.bin", generator_arch("tiny", 10))
    with pytest.raises(FileNotFoundError, match="nowhere.bin"):
        load_generator(tmp_path / "nowhere.bin", generator_arch("tiny", 10))


@pytest.mark.parametrize("bits", [10, 12, 14, 16, 18])
def test_full_size_modules_have_the_released_layout(bits):
    k = bits // 2
    with torch.device("meta"):
        net = LFQBert(generator_arch("full", bits))
        tok = MaskBitTokenizer(tokenizer_arch("full", bits))
    assert net.layout == TokenLayout(positions=256, groups=2, classes=2 ** k, mask_id=2 ** k,
                                     image_shape=(3, 256, 256))
    shapes = {k_: tuple(v.shape) for k_, v in net.state_dict().items()}
    assert shapes["class_emb.weight"] == (1001, 1024)
    assert shapes["input_proj.weight"] == (1024, bits) and shapes["pos_emb"] == (1, 257, 1024)
    assert shapes["bits_to_indices"] == (k,)
    assert shapes["transformer.layers.23.0.mha.in_proj_weight"] == (3072, 1024)
    assert shapes["transformer.layers.23.1.net.0.weight"] == (4096, 1024)
    assert shapes["prediction_layer.weight"] == (2 * 2 ** k, 1024)
    assert len(shapes) == 13 + 24 * 12          # the fixture has 13 + 2 * 12 = 37
    assert 304.6e6 < sum(p.numel() for p in net.parameters()) < 305.8e6     # docs/maskbit.md: 304.7M-305.7M
    tshapes = {k_: tuple(v.shape) for k_, v in tok.state_dict().items()}
    assert tshapes["quantize.codebook"] == (2 ** bits, bits)
    assert tshapes["encoder.down.4.res_blocks.0.nin_shortcut.weight"] == (512, 512, 1, 1)
    assert tshapes["decoder.up.3.res_blocks.0.nin_shortcut.weight"] == (128, 128, 1, 1)
    assert "encoder.down.4.down_conv.weight" not in tshapes
    assert "decoder.up.4.upsample_conv.weight" not in tshapes
    assert "encoder.conv_in.bias" not in tshapes and tshapes["decoder.conv_in.weight"] == (512, bits, 3, 3)
    enc = sum(p.numel() for n, p in tok.named_parameters() if n.startswith("encoder."))
    dec = sum(p.numel() for n, p in tok.named_parameters() if n.startswith("decoder."))
    # docs/maskbit.md quotes encoder 25.1M and decoder 29.4M; the bit width moves them by < 0.05M
    assert abs(enc - 25.1e6) < 0.1e6 and abs(dec - 29.4e6) < 0.1e6


#----------------------------------------------------------------------------
# Teacher protocol, conditions, real tokens, registration.


def test_teacher_protocol_and_conditions(teacher):
    assert isinstance(teacher, Teacher) and isinstance(teacher.network, MDMNetwork)
    assert not any(p.requires_grad for p in teacher.network.parameters())
    names = dict(teacher.network.named_parameters())
    assert teacher.network.embedding_parameter_names() <= set(names)
    assert teacher.eval_conditions(12) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    g = torch.Generator().manual_seed(0)
    drawn = teacher.sample_conditions(100, g)
    assert all(0 <= c < 10 for c in drawn) and len(set(drawn)) > 5
    assert teacher.encode_condition([3, 10]).tensors["labels"].tolist() == [3, 10]   # 10 = null
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        teacher.encode_condition([11])


def test_real_tokens_round_trip(tmp_path, teacher, tio):
    assert teacher.real_tokens() is None
    tokens = teacher.encode(tio["enc_image"])
    path = tmp_path / "real.safetensors"
    save_real_tokens(path, tokens, [3, 4])
    loaded, labels = load_real_tokens(path, teacher.layout, 10)
    assert torch.equal(loaded, tokens) and labels == [3, 4]
    save_real_tokens(path, tokens.masked_fill(tokens == tokens[0, 0, 0], 32), [3, 4])
    with pytest.raises(ValueError, match="no mask values"):
        load_real_tokens(path, teacher.layout, 10)


def test_registration_defaults_and_assets():
    entry = teachers.get("maskbit")
    assert entry.config_cls is MaskBitConfig and entry.scales == ("paper",)
    assert entry.default_metrics == ("fid", "inception_score", "prdc")
    fields = schema(MaskBitConfig)
    assert fields["bits"].default == 14 and fields["bits"].choices == (10, 12, 14, 16, 18)
    with pytest.raises(ValueError):
        fields["bits"].check(15)
    for key, value in entry.default_params.items():
        stage, _, name = key.partition(".")
        assert schema(_stage_class(stage))[name].check(value) == value, key
    assert entry.default_params["sample.cfg"] == pytest.approx(released_sampler(14).cfg)
    assert entry.assets(MaskBitConfig()) == ["maskbit_generator_14bit", "maskbit_tokenizer_14bit"]
    assert entry.assets(MaskBitConfig(bits=18)) == ["maskbit_generator_18bit", "maskbit_tokenizer_18bit"]
    assert entry.assets(TINY) == []
    for bits in (10, 12, 14, 16, 18):
        for kind in ("generator", "tokenizer"):
            asset = assets.manifest.get(f"maskbit_{kind}_{bits}bit")
            assert asset.source.startswith(f"https://huggingface.co/markweber/maskbit_{kind}_{bits}bit")
            assert asset.sha256 is None
    with pytest.raises(ValueError, match="neither a registered asset"):
        entry.assets(MaskBitConfig(generator_weights="no_such_asset"))


def test_missing_weights_name_the_asset_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTDIMO_ASSETS", str(tmp_path))
    monkeypatch.delenv("SOFTDIMO_MASKBIT_GENERATOR_14BIT", raising=False)
    monkeypatch.delenv("SOFTDIMO_MASKBIT_TOKENIZER_14BIT", raising=False)
    entry = teachers.get("maskbit")
    status = [assets.check_asset(assets.manifest.get(n)) for n in entry.assets(MaskBitConfig())]
    assert [s.state for s in status] == ["missing", "missing"]
    with pytest.raises(assets.AssetError) as err:
        entry.build(MaskBitConfig(), RunContext(tmp_path, tmp_path))
    message = str(err.value)
    assert "maskbit_generator_14bit" in message and "missing" in message
    assert str(tmp_path / "maskbit" / "maskbit_generator_14bit.bin") in message
    assert "huggingface.co/markweber/maskbit_generator_14bit" in message
    assert "SOFTDIMO_MASKBIT_GENERATOR_14BIT" in message


def test_entry_builds_from_file_paths(tmp_path, monkeypatch, gio, tio):
    monkeypatch.setenv("SOFTDIMO_ASSETS", str(tmp_path / "assets"))
    released = {k.replace("input_proj", "token_emb"): v for k, v in load_file(str(GEN_FILE)).items()}
    torch.save(released, tmp_path / "gen.bin")
    config = MaskBitConfig(bits=10, size="tiny", generator_weights=str(tmp_path / "gen.bin"),
                           tokenizer_weights=str(TOK_FILE.resolve()))
    entry = teachers.get("maskbit")
    assert len(entry.assets(config)) == 2
    teacher = entry.build(config, RunContext(tmp_path, tmp_path, log=lambda s: None))
    with torch.no_grad():
        z = teacher.network(teacher.network.embed(gio["tokens"]), labels_cond(gio["labels"])).logits
        assert_parity(z, gio["logits_cond"], GENERATOR)
        assert_parity(teacher.tokenizer.decode_tokens(tio["dec_tokens"]),
                                   tio["images_from_tokens"], GENERATOR)
    missing = MaskBitConfig(bits=10, size="tiny", generator_weights=str(tmp_path / "absent.bin"))
    with pytest.raises(assets.AssetError, match="absent.bin"):
        entry.build(missing, RunContext(tmp_path, tmp_path))


def test_tiny_random_teacher_is_seeded():
    a = build_maskbit_teacher(MaskBitConfig(bits=14, size="tiny", init_seed=3), None, None)
    b = build_maskbit_teacher(MaskBitConfig(bits=14, size="tiny", init_seed=3), None, None)
    assert a.layout == TokenLayout(16, 2, 128, 128, (3, 16, 16))
    for (n, p), (_, q) in zip(a.network.state_dict().items(), b.network.state_dict().items()):
        assert torch.equal(p, q), n
    for (n, p), (_, q) in zip(a.tokenizer.state_dict().items(), b.tokenizer.state_dict().items()):
        assert torch.equal(p, q), n
    with pytest.raises(ValueError, match="needs generator and tokenizer weight files"):
        build_maskbit_teacher(MaskBitConfig(bits=14), None, None)


def test_soft_path_backpropagates_from_the_teacher_into_a_generator_copy(teacher, gio):
    # Soft-Di[M]O's differentiable path: generator logits -> softmax -> teacher.embed_soft -> frozen
    # teacher. Gradients reach the generator's trainable parameters and never the teacher's.
    generator = copy.deepcopy(teacher.network).train().requires_grad_(True)
    for name, p in generator.named_parameters():
        p.requires_grad_(name not in generator.embedding_parameter_names())
    cond = labels_cond(gio["labels"])
    z = generator(generator.embed(gio["tokens"]), cond).logits
    out = teacher.network(teacher.network.embed_soft(z.softmax(-1)), cond, hidden_layers=(1,))
    (out.logits.logsumexp(-1).mean() + out.hidden[0].square().mean()).backward()
    grads = {n: p.grad for n, p in generator.named_parameters()}
    assert grads["class_emb.weight"].abs().sum() > 0
    assert grads["transformer.layers.0.0.mha.in_proj_weight"].abs().sum() > 0
    assert all(grads[n] is None for n in generator.embedding_parameter_names())
    assert all(p.grad is None for p in teacher.network.parameters())
