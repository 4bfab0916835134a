"""`distill.precision`: what runs in bf16 and what stays float32, and how far bf16's numbers may be
from float32's.

The tolerance (derived, not measured). bf16 keeps an 8-bit significand, so rounding to nearest has
a relative error of at most u = 2^-8. Under autocast every matmul of a network (linear layers and
the attention products) rounds its two operands and its result to bf16 and accumulates in float32
(whose error, about n 2^-24, is negligible here): to first order each such stage adds a relative
error of at most 3u. A SmallMDM block has S_b = 6 matmul stages in series (qkv, q k^T, attention
times v, the output projection, the two MLP layers), the head one more, and an input made by
`embed_soft` one more; LayerNorm returns every stage's input to unit scale, so the stages' errors
add rather than multiply, and as independent round-to-nearest errors (the standard probabilistic
model) in quadrature: the logits' relative rms error is at most eps = 3u sqrt(S).

A loss that is a mean over slots of cross-entropies, f_s(z_s) = logsumexp(z_s) - <t_s, z_s>, has
the logit gradient p_s - t_s of l2 norm at most sqrt(2) and a Hessian of norm at most 1/2, so by
Cauchy-Schwarz |delta L| <= sqrt(2) rms_s ||delta z_s|| + (1/4) rms_s ||delta z_s||^2 with
rms_s ||delta z_s|| = sqrt(C) rms(delta z) <= sqrt(C) eps rms(z) over C classes (the rounding
errors are alike at every slot, so the masked slots the loss averages have the rms of all slots).
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from softdimo.config import DistillConfig, RelaxConfig
from softdimo.precision import PRECISIONS, effective_precision, full_precision, precision_region
from softdimo.relax import Relaxed, relax_hard, relax_soft
from softdimo.teachers.base import ImageNoise
from softdimo.teachers.digits import DigitsTeacher
from softdimo.train import Distiller, generate, run_distillation

U = 2.0 ** -8                                  # bf16's unit roundoff


# eps = 3u sqrt(S): the bound on the logits' relative rms error over S bf16 matmul stages.
def logit_error_bound(stages: int) -> float:
    return 3 * U * math.sqrt(stages)


def _rms(t: torch.Tensor) -> float:
    return float(t.double().pow(2).mean().sqrt())


def test_precision_region_sets_autocast_and_tf32_and_restores_them() -> None:
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_tf32, cudnn.allow_tf32
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    seen = {}
    for precision in PRECISIONS:
        with precision_region(precision, "cpu"):
            seen[precision] = ((x @ w).dtype, matmul.allow_tf32, cudnn.allow_tf32)
            with full_precision("cpu"):
                assert (x @ w).dtype == torch.float32
        assert (matmul.allow_tf32, cudnn.allow_tf32) == before
    assert seen == {"fp32": (torch.float32, False, False), "bf16": (torch.bfloat16, False, False),
                    "tf32": (torch.float32, True, True)}
    with pytest.raises(ValueError, match="unknown precision 'fp16'; allowed: fp32, bf16, tf32"):
        with precision_region("fp16", "cpu"):
            pass
    assert effective_precision("tf32", "cpu") == "fp32 (no TF32 on cpu)"
    assert effective_precision("bf16", "cpu").startswith("bf16 autocast on cpu")


def test_bf16_logits_stay_within_the_rounding_bound(tiny_teacher: DigitsTeacher) -> None:
    net, layout = tiny_teacher.network, tiny_teacher.layout
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(layout.classes, (64, layout.positions, 1), generator=g)
    tokens = torch.where(torch.rand(tokens.shape, generator=g) < 0.5, layout.mask_id, tokens)
    cond = tiny_teacher.encode_condition([i % 10 for i in range(64)])
    with torch.no_grad():
        z32 = net(net.embed(tokens), cond).logits
        with precision_region("bf16", "cpu"):
            z16 = net(net.embed(tokens), cond).logits
    assert z16.dtype == torch.bfloat16                  # autocast reached the network
    stages = 6 * net.num_layers + 1
    error = _rms(z16.float() - z32)
    assert 0 < error <= logit_error_bound(stages) * _rms(z32)


def test_bf16_loss_tracks_fp32_at_the_same_weights(tiny_teacher: DigitsTeacher) -> None:
    # The first step, where both precisions hold the same weights. Every sampled token must be the
    # same in both, else a token drawn differently (a near tie of the Gumbel-perturbed logits)
    # would move the loss by a whole logit gap: at gen_temperature 1e8 the draw is the argmax of
    # the Gumbel noise alone (a flip needs two noises within |delta z| / 1e8), and the test checks
    # that the tokens agree. Dropout 0: both precisions run the same deterministic networks.
    config = DistillConfig(batch_size=64, dropout=0.0, teacher_dropout=0.0, gen_temperature=1e8)
    runs = {}
    for precision in ("fp32", "bf16"):
        tokens: list[torch.Tensor] = []

        def recording_relax(*args: object) -> Relaxed:
            out = relax_hard(*args)
            tokens.append(out.tokens)
            return out

        d = Distiller(tiny_teacher, recording_relax, RelaxConfig(), dataclasses.replace(config, precision=precision),
                      seed=0)
        logits: list[torch.Tensor] = []
        d.aux.head.register_forward_hook(lambda m, i, o: logits.append(o.detach().float()))
        runs[precision] = (d.train_step(), tokens, logits)
    (log32, tokens32, z32), (log16, tokens16, z16) = runs["fp32"], runs["bf16"]
    assert all(torch.equal(a, b) for a, b in zip(tokens32, tokens16, strict=True))
    classes = tiny_teacher.layout.classes
    eps = logit_error_bound(6 * tiny_teacher.network.num_layers + 2)     # + embed_soft's matmul
    slot_rms = math.sqrt(classes) * eps * _rms(torch.cat(z32))
    tolerance = math.sqrt(2) * slot_rms + slot_rms ** 2 / 4
    assert log16["aux_loss"] != log32["aux_loss"]               # bf16 did run
    assert abs(log16["aux_loss"] - log32["aux_loss"]) <= tolerance
    assert math.isfinite(log16["divergence"])


def test_bf16_keeps_float32_master_state_draws_and_exact_resume(tiny_teacher: DigitsTeacher, tmp_path) -> None:
    config = DistillConfig(steps=4, batch_size=8, warmup_steps=1, checkpoint_every=2, precision="bf16")
    outputs: set[torch.dtype] = set()
    straight = Distiller(tiny_teacher, relax_soft, RelaxConfig(), config, seed=3)
    straight.generator.head.register_forward_hook(lambda m, i, o: outputs.add(o.dtype))
    run_distillation(straight)
    assert outputs == {torch.bfloat16}
    for network in (straight.generator, straight.aux, straight.ema):
        assert {p.dtype for p in network.parameters()} == {torch.float32}
    moments = [v for s in straight.opt_g.state.values() for v in s.values() if v.dim() > 0]
    assert moments and {v.dtype for v in moments} == {torch.float32}
    # The same random draws as a float32 run: the streams stand at the same place.
    fp32 = run_distillation(Distiller(tiny_teacher, relax_soft, RelaxConfig(),
                                      dataclasses.replace(config, precision="fp32"), seed=3))
    for stream in ("rng", "refine_rng"):
        assert torch.equal(getattr(straight, stream).get_state(), getattr(fp32, stream).get_state())
    assert straight.dropout_stream.state_dict() == fp32.dropout_stream.state_dict()
    assert straight.history != fp32.history
    # Resumed from its step-2 checkpoint, a bf16 run ends bit-identical.
    checkpoint = tmp_path / "distill.pt"
    run_distillation(Distiller(tiny_teacher, relax_soft, RelaxConfig(), config, seed=3), checkpoint=checkpoint,
                     stop_after=2)
    resumed = run_distillation(Distiller(tiny_teacher, relax_soft, RelaxConfig(), config, seed=3),
                               checkpoint=checkpoint)
    assert resumed.history == straight.history
    for a, b in zip(resumed.ema.parameters(), straight.ema.parameters()):
        assert torch.equal(a, b)


def test_one_step_sampling_at_a_precision(tiny_teacher: DigitsTeacher) -> None:
    cond = tiny_teacher.encode_condition(list(range(10)))
    logits: list[torch.Tensor] = []
    net = tiny_teacher.network
    hook = net.head.register_forward_hook(lambda m, i, o: logits.append(o))
    try:
        t32, p32 = generate(net, cond, ImageNoise(0, range(10)), 0.7, 0.1)
        t16, p16 = generate(net, cond, ImageNoise(0, range(10)), 0.7, 0.1, precision="bf16")
    finally:
        hook.remove()
    z32, z16 = logits
    assert (z32.dtype, z16.dtype, p16.dtype) == (torch.float32, torch.bfloat16, torch.float32)
    assert t16.shape == t32.shape and torch.allclose(p16.sum(-1), torch.ones(()))
    error = _rms(z16.float() - z32)
    assert 0 < error <= logit_error_bound(6 * net.num_layers + 1) * _rms(z32)
