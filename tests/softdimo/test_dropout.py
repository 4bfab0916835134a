"""The dropout stream (softdimo/dropout.py): masks that every machine draws alike, at the stated
rate, resumable, and the attention and dropout it serves equal to their formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from softdimo.dropout import (DropoutStream, StreamDropout, attention, drawing_from, dropout, keep_threshold,
                              stream_for)

MASK_128 = (1 << 128) - 1
PCG_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645      # PCG's default 128-bit LCG multiplier


def _pcg64_words(state: int, inc: int, n: int) -> list[int]:
    # PCG64 (XSL-RR 128/64) written out: advance the 128-bit LCG, then xor-fold and rotate.
    out = []
    for _ in range(n):
        state = (state * PCG_MULTIPLIER + inc) & MASK_128
        folded = ((state >> 64) ^ state) & ((1 << 64) - 1)
        rot = state >> 122
        out.append(((folded >> rot) | (folded << ((64 - rot) & 63))) & ((1 << 64) - 1))
    return out


def test_masks_are_pcg64_words_below_the_threshold() -> None:
    # The masks are a function of the PCG64 specification alone (integer arithmetic), so every
    # machine draws the same: an independent implementation of the generator gives the same bits.
    stream = DropoutStream(12345)
    start = stream.state_dict()["state"]
    words = _pcg64_words(start["state"], start["inc"], 8)
    halves = [w >> s & 0xFFFFFFFF for w in words for s in (0, 32)]      # little-endian uint32 halves
    mask = stream.keep_mask((16,), 0.9)
    assert mask.tolist() == [h < keep_threshold(0.9) for h in halves]


def test_keep_rate_and_threshold() -> None:
    # Keep probability round(keep 2^32) / 2^32; over n draws the kept fraction lies within 5
    # binomial standard deviations of it (a fixed stream: this is deterministic).
    assert keep_threshold(0.9) == round(0.9 * 2**32)
    assert abs(keep_threshold(0.9) / 2**32 - 0.9) <= 2**-33
    n = 1_000_000
    kept = DropoutStream(0).keep_mask((n,), 0.9).double().mean().item()
    assert abs(kept - 0.9) <= 5 * math.sqrt(0.9 * 0.1 / n)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="keep probability"):
            keep_threshold(bad)


def test_state_round_trip_continues_the_stream() -> None:
    a = DropoutStream(7)
    a.keep_mask((33,), 0.5)
    b = DropoutStream(0)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.keep_mask((1001,), 0.8), b.keep_mask((1001,), 0.8))
    assert a.next_seed() == b.next_seed() < 2**63


def test_dropout_draws_from_the_active_stream_on_cpu() -> None:
    x = torch.randn(4, 5, 6)
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0, training=True) is x
    stream, twin = DropoutStream(3), DropoutStream(3)
    with drawing_from(stream):
        assert stream_for(x) is stream
        y = dropout(x, 0.3, training=True)
    expected = x * twin.keep_mask(x.shape, 0.7).to(x.dtype) / 0.7
    assert torch.allclose(y, expected, rtol=2 * torch.finfo(torch.float32).eps, atol=0)
    assert stream_for(x) is None                  # outside the block: torch's own dropout
    torch.manual_seed(0)
    a = dropout(x, 0.3, training=True)
    torch.manual_seed(0)
    assert torch.equal(a, F.dropout(x, 0.3, True))


def test_stream_dropout_module_follows_train_and_eval_modes() -> None:
    module = StreamDropout(0.25)
    assert isinstance(module, torch.nn.Dropout)
    x = torch.ones(1000)
    with drawing_from(DropoutStream(1)):
        dropped = module(x)
        assert set(dropped.unique().tolist()) == {0.0, torch.tensor(1.0).div(0.75).item()}
        module.eval()
        assert torch.equal(module(x), x)


def test_attention_with_dropout_is_the_formula() -> None:
    # softmax(q k^T / sqrt(d)) with its probabilities dropped by the stream's mask, times v; without
    # dropout, torch's fused kernel (equal to the formula within float32 rounding).
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))
    probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    twin = DropoutStream(9)
    with drawing_from(DropoutStream(9)):
        out = attention(q, k, v, 0.2)
    keep = twin.keep_mask(probs.shape, 0.8).to(probs.dtype) / 0.8
    # Each output is a sum of 7 products of values of order 1: a few float32 roundings apart.
    eps = torch.finfo(torch.float32).eps
    bound = 8 * 7 * eps * ((probs * keep).abs() @ v.abs())
    assert ((out - (probs * keep) @ v).abs() <= bound).all()
    plain = attention(q, k, v, 0.0)
    assert ((plain - probs @ v).abs() <= 8 * 7 * eps * (probs @ v.abs())).all()
    assert not np.allclose(out.numpy(), plain.numpy())
