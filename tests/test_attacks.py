"""Attack correctness: constraints, closed forms, strength, targeting, side effects, and
agreement with torchattacks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distadv.attacks import PGD, attack_mode, ce_loss, fgsm
from tests.conftest import small_cnn


def _batch(digits, n=64):
    test = digits[1]
    return test.images[:n].clone(), test.labels[:n].clone()


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
@pytest.mark.parametrize("random_start", [True, False])
def test_constraints_hold(trained_digits_model, digits, norm, eps, random_start):
    x, y = _batch(digits)
    atk = PGD(norm=norm, eps=eps, alpha=eps / 4, steps=10, random_start=random_start)
    x_adv = atk(trained_digits_model, x, y)
    delta = (x_adv - x).flatten(1)
    per_example = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (per_example <= eps * (1 + 1e-5)).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert per_example.max() > 0.5 * eps  # it actually moved


def test_fgsm_closed_form_on_linear_model():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.rand(5, 3, 2, 2) * 0.5 + 0.25  # away from the box so no clamping
    y = torch.tensor([0, 1, 2, 0, 1])
    eps = 0.05
    x_adv = fgsm(eps)(lin, x, y)
    # d CE / dx = W^T (softmax(Wx + b) - onehot(y))
    w = lin[1].weight
    p = F.softmax(lin(x), dim=1)
    grad = ((p - F.one_hot(y, 3).float()) @ w).view_as(x)
    assert torch.allclose(x_adv, x + eps * grad.sign(), atol=1e-7)


def test_pgd_reaches_higher_loss_than_fgsm(trained_digits_model, digits):
    x, y = _batch(digits, 128)
    m = trained_digits_model
    with torch.no_grad():
        l_fgsm = ce_loss(m(fgsm(0.1)(m, x, y)), y).mean()
        l_pgd = ce_loss(m(PGD(eps=0.1, alpha=0.02, steps=20)(m, x, y)), y).mean()
    assert l_pgd > l_fgsm


def test_restarts_keep_worst_case(trained_digits_model, digits):
    x, y = _batch(digits, 128)
    m = trained_digits_model
    torch.manual_seed(1)
    one = PGD(eps=0.06, alpha=0.015, steps=5)(m, x, y)
    torch.manual_seed(1)
    five = PGD(eps=0.06, alpha=0.015, steps=5, restarts=5)(m, x, y)
    with torch.no_grad():
        acc_one = (m(one).argmax(1) == y).float().mean()
        acc_five = (m(five).argmax(1) == y).float().mean()
    assert acc_five <= acc_one


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_targeted_attack_reaches_target(trained_digits_model, digits, loss):
    x, y = _batch(digits, 64)
    m = trained_digits_model
    target = (y + 3) % 10
    x_adv = PGD(eps=0.5, alpha=0.05, steps=50, loss=loss, targeted=True)(m, x, target)
    with torch.no_grad():
        hit = (m(x_adv).argmax(1) == target).float().mean()
    assert hit > 0.95


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_grads_buffers_and_mode_untouched(digits, bn_mode):
    x, y = _batch(digits, 32)
    torch.manual_seed(0)
    m = small_cnn()
    m.train()
    m[1].eval()  # a mixed-mode model: each submodule's own flag must come back
    for p in m.parameters():
        p.grad = torch.full_like(p, 7.0)
    buffers = {k: v.clone() for k, v in m.named_buffers()}
    modes = [mod.training for mod in m.modules()]
    PGD(eps=0.1, alpha=0.03, steps=5, bn_mode=bn_mode)(m, x, y)
    assert all((p.grad == 7.0).all() for p in m.parameters())
    for k, v in m.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert [mod.training for mod in m.modules()] == modes


def test_bn_mode_is_used_during_attack():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(self.training)
            return x.flatten(1)[:, :3]

    m = Probe()
    m.train()
    PGD(eps=0.1, alpha=0.1, steps=2)(m, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))
    PGD(eps=0.1, alpha=0.1, steps=2, bn_mode="train")(m, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))
    assert seen == [False, False, True, True] and m.training


def test_perturbation_stays_fp32_under_autocast(trained_digits_model, digits):
    x, y = _batch(digits, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = PGD(eps=0.1, alpha=0.025, steps=3)(trained_digits_model, x, y)
    assert x_adv.dtype == torch.float32
    assert ((x_adv - x).abs().amax() <= 0.1 + 1e-6)


def test_attack_context_restores_on_error():
    m = small_cnn()
    m.train()
    with pytest.raises(RuntimeError):
        with attack_mode(m, "eval"):
            raise RuntimeError("boom")
    assert m.training


# Tolerance for the torchattacks cross-check: both take the same steps from the same random
# start, but torchattacks averages the loss over the batch and we sum it. With a batch that is
# a power of two this is an exact rescaling, so L-inf (sign steps) must agree to 1e-6; L2
# normalises the gradient, which adds float rounding: 1e-5.
@pytest.mark.parametrize("norm,tol", [("linf", 1e-6), ("l2", 1e-5)])
def test_agrees_with_torchattacks(trained_digits_model, digits, norm, tol):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = _batch(digits, 64)
    m = trained_digits_model
    eps, alpha = (0.1, 0.02) if norm == "linf" else (1.0, 0.2)
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    theirs_atk = cls(m, eps=eps, alpha=alpha, steps=10, random_start=True)
    torch.manual_seed(123)
    ours = PGD(norm=norm, eps=eps, alpha=alpha, steps=10)(m, x, y)
    torch.manual_seed(123)
    theirs = theirs_atk(x, y)
    assert (ours - theirs).abs().max().item() <= tol


def test_restarts_with_soft_labels_stay_on_the_input_device():
    """Issue 16: with soft labels (TRADES' KL objective) and restarts > 1 the "fooled" mask was
    built on the CPU whatever the input's device, so the restart selection mixed CPU and CUDA
    tensors. The ``meta`` device shows it without a GPU: every tensor of the restart path must
    stay there (the old mask landed on cpu and torch.where refused to mix them)."""
    from distadv.attacks.losses import kl_loss
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).to("meta")
    x = torch.rand(4, 3, 2, 2).to("meta")
    p_clean = torch.softmax(torch.rand(4, 3), dim=1).to("meta")
    atk = PGD(eps=0.1, alpha=0.05, steps=2, restarts=3, loss=kl_loss)
    fooled, loss = atk._score(model, x, p_clean)
    assert fooled.device == x.device and fooled.dtype == torch.bool and fooled.shape == (4,)
    assert loss.device == x.device
    x_adv = atk(model, x, p_clean)                   # the whole restart selection
    assert x_adv.device == x.device and x_adv.shape == x.shape
