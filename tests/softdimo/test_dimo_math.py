"""The Di[M]O objective: Jeffreys gradient, surrogate loss, relaxations, token initialisation."""
from __future__ import annotations

import pytest
import torch

from softdimo.config import RelaxConfig
from softdimo.dimo import (aux_loss, dimo_surrogate_loss, jeffreys_divergence, jeffreys_gradient,
                           perturb_embeddings, token_init)
from softdimo.relax import relax_gumbel, relax_hard, relax_soft
from softdimo.teachers.base import TokenLayout, gumbel_from_uniform, random_slot_masks
from tests.float_tolerance import U64, rounding_atol

LAYOUT = TokenLayout(positions=12, groups=2, classes=5, mask_id=5, image_shape=(1, 3, 4))


@pytest.mark.parametrize("beta", [0.0, 0.25, 0.5, 1.0, -0.2, 1.5])
def test_jeffreys_gradient_equals_autograd(beta: float) -> None:
    g = torch.Generator().manual_seed(0)
    z_phi = torch.randn(3, 7, 11, generator=g, dtype=torch.float64) * 3
    z_psi = (torch.randn(3, 7, 11, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    jeffreys_divergence(z_phi, z_psi, beta).sum().backward()
    closed = jeffreys_gradient(z_phi, z_psi.detach(), beta)
    # float64: softmaxes, the KL sums over 11 classes and products, by two routes
    torch.testing.assert_close(closed, z_psi.grad, atol=rounding_atol(z_psi.grad, 4, 11, unit=U64), rtol=0)


def test_jeffreys_endpoints_are_forward_and_reverse_kl() -> None:
    z_phi, z_psi = torch.randn(4, 6), torch.randn(4, 6)
    p_phi, p_psi = z_phi.softmax(-1), z_psi.softmax(-1)
    torch.testing.assert_close(jeffreys_gradient(z_phi, z_psi, 0.0), p_psi - p_phi)
    fkl = (p_phi * (p_phi.log() - p_psi.log())).sum(-1)
    rkl = (p_psi * (p_psi.log() - p_phi.log())).sum(-1)
    torch.testing.assert_close(jeffreys_divergence(z_phi, z_psi, 0.0), fkl)
    torch.testing.assert_close(jeffreys_divergence(z_phi, z_psi, 1.0), rkl)


def test_surrogate_loss_gradient_is_g_on_masked_slots_only() -> None:
    z = torch.randn(2, 12, 2, 5, requires_grad=True)
    grad = torch.randn(2, 12, 2, 5)
    mask = torch.rand(2, 12, 2) < 0.5
    dimo_surrogate_loss(z, grad, mask).backward()
    expected = grad * mask[..., None] / 2  # divided by the batch size
    torch.testing.assert_close(z.grad, expected)


def _logits() -> torch.Tensor:
    return torch.randn(2, 12, 2, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)


def _gumbel(shape: torch.Size) -> torch.Tensor:
    return gumbel_from_uniform(torch.rand(shape, generator=torch.Generator().manual_seed(2)))


def test_soft_is_softmax_and_passes_gradients() -> None:
    z = _logits()
    r = relax_soft(z, _gumbel(z.shape), RelaxConfig(), temperature=1.0)
    torch.testing.assert_close(r.q, z.softmax(-1))
    (r.q * torch.randn_like(r.q)).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_gumbel_is_one_hot_forward_with_gradients() -> None:
    z = _logits()
    gumbel = _gumbel(z.shape)
    r = relax_gumbel(z, gumbel, RelaxConfig(gumbel_tau=0.7), temperature=1.0)
    one_hot = torch.nn.functional.one_hot((z.detach() + gumbel).argmax(-1), 5).float()
    assert torch.equal(r.q, one_hot)            # exactly: (1 - s) + s == 1 in floating point
    assert torch.equal(r.tokens, (z.detach() + gumbel).argmax(-1))
    (r.q * torch.randn_like(r.q)).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_hard_passes_no_gradient_and_shares_the_sample() -> None:
    z = _logits()
    gumbel = _gumbel(z.shape)
    hard = relax_hard(z, gumbel, RelaxConfig(), temperature=1.0)
    assert not hard.q.requires_grad
    assert torch.equal(hard.tokens, relax_gumbel(z, gumbel, RelaxConfig(), 1.0).tokens)
    assert torch.equal(hard.tokens, relax_soft(z, gumbel, RelaxConfig(), 1.0).tokens)


def test_token_init_masks_exact_fraction() -> None:
    x = token_init(LAYOUT, 50, 0.3, torch.Generator().manual_seed(0))
    assert x.shape == (50, 12, 2)
    assert ((x == LAYOUT.mask_id).sum(dim=(1, 2)) == round(24 * 0.3)).all()
    assert x[x != LAYOUT.mask_id].max() < LAYOUT.classes


def test_remasking_counts_follow_schedule() -> None:
    masks = random_slot_masks(LAYOUT, 200, "arccos", torch.Generator().manual_seed(0))
    counts = masks.sum(dim=(1, 2))
    assert counts.min() >= 1 and counts.max() <= LAYOUT.slots
    # arccos schedule: E[gamma] = E[arccos(u)] / (pi/2) = 2/pi ~ 0.637 of the slots
    assert abs(counts.float().mean().item() / LAYOUT.slots - 2 / torch.pi) < 0.06


def test_embedding_noise_is_variance_preserving() -> None:
    e, n = torch.randn(20000), torch.randn(20000)
    out = perturb_embeddings(e, 0.6, n)
    assert abs(out.var().item() - 1.0) < 0.05
    torch.testing.assert_close(perturb_embeddings(e, 0.0, n), e)


def test_aux_loss_uses_masked_slots_and_label_smoothing() -> None:
    logits = torch.randn(2, 12, 2, 5)
    targets = torch.randint(5, (2, 12, 2))
    mask = torch.zeros(2, 12, 2, dtype=torch.bool)
    mask[0, 0, 0] = True
    expected = torch.nn.functional.cross_entropy(logits[0, 0, 0][None], targets[0, 0, 0][None],
                                                 label_smoothing=0.1)
    torch.testing.assert_close(aux_loss(logits, targets, mask, 0.1), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_forward_as_relaxations_reproduce_forward_values_exactly(dtype: torch.dtype) -> None:
    # A relaxation declaring `forward_as` shares that relaxation's students (harness.methods.
    # student_key), which is sound only if q and the tokens are the same to the bit, at any scale.
    from harness.contracts import registry
    g = torch.Generator().manual_seed(5)
    declared = [e for _, e in registry.relaxations.items() if e.forward_as]
    assert [e.name for e in declared] == ["gumbel"]
    for scale in (0.01, 1.0, 30.0):
        z = (scale * torch.randn(64, 16, 1, 33, generator=g)).to(dtype).requires_grad_(True)
        gumbel = gumbel_from_uniform(torch.rand(z.shape, generator=g)).to(dtype)
        for tau in (0.05, 1.0, 7.0):
            for entry in declared:
                a = entry.fn(z, gumbel, RelaxConfig(gumbel_tau=tau), 0.8)
                b = registry.relaxations.get(entry.forward_as).fn(z, gumbel, RelaxConfig(gumbel_tau=tau), 0.8)
                assert torch.equal(a.q.detach(), b.q) and torch.equal(a.tokens, b.tokens), (entry.name, scale, tau)
