"""Strategies: what each turns a batch into, and that attacks leave parameter grads alone."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distadv.attacks import PGD, ce_loss
from distadv.strategies import MAT, TRADES, Adversarial, Mix, Natural
from tests.conftest import small_cnn


def _data(digits, n=32):
    test = digits[1]
    return test.images[:n], test.labels[:n]


def test_attack_inside_strategy_leaves_param_grads_empty(trained_digits_model, digits):
    x, y = _data(digits)
    m = small_cnn(bn=False)
    m.load_state_dict({k: v for k, v in trained_digits_model.state_dict().items()
                       if "1." not in k[:2]}, strict=False)
    out = Adversarial(PGD(eps=0.1, alpha=0.03, steps=3))(m, m, x, y)
    assert all(p.grad is None for p in m.parameters())
    out.loss.backward()
    assert all(p.grad is not None for p in m.parameters())


def test_mat_max_keeps_the_more_damaging_example_per_example(trained_digits_model, digits):
    x, y = _data(digits, 64)
    m = trained_digits_model  # eval mode and its BN use running stats: train == attack view
    linf = PGD(norm="linf", eps=0.1, alpha=0.025, steps=5, random_start=False)
    l2 = PGD(norm="l2", eps=2.0, alpha=0.5, steps=5, random_start=False)
    out = MAT([linf, l2], mode="max")(m, m, x, y)
    with torch.no_grad():
        l_inf = ce_loss(m(linf(m, x, y)), y)
        l_two = ce_loss(m(l2(m, x, y)), y)
        chosen = F.cross_entropy(out.logits, y, reduction="none")
    assert torch.allclose(chosen, torch.maximum(l_inf, l_two), atol=1e-5)
    assert (l_inf > l_two).any() and (l_two > l_inf).any()  # both threats win somewhere


def test_mat_rand_uses_each_threat_about_half_the_time(trained_digits_model, digits):
    x, y = _data(digits, 4)
    calls = {"linf": 0, "l2": 0}

    class Counting(PGD):
        def __call__(self, model, x, y):
            calls[self.norm] += 1
            return x

    mat = MAT([Counting(norm="linf", eps=0.1, alpha=0.1, steps=1),
               Counting(norm="l2", eps=1.0, alpha=1.0, steps=1)], mode="rand")
    torch.manual_seed(0)
    for _ in range(400):
        mat(trained_digits_model, trained_digits_model, x, y)
    assert 150 < calls["linf"] < 250 and calls["linf"] + calls["l2"] == 400


def test_mix_trains_the_requested_share_of_natural_batches(trained_digits_model, digits):
    x, y = _data(digits, 4)
    mix = Mix(Adversarial(PGD(eps=0.1, alpha=0.1, steps=1)), natural_fraction=0.05)
    torch.manual_seed(0)
    kinds = [mix(trained_digits_model, trained_digits_model, x, y).adversarial for _ in range(1000)]
    natural_share = 1 - sum(kinds) / len(kinds)
    assert 0.03 < natural_share < 0.07


def test_trades_loss_is_ce_plus_beta_kl(trained_digits_model, digits):
    x, y = _data(digits)
    m = trained_digits_model
    attack = PGD(eps=0.1, alpha=0.025, steps=3)
    torch.manual_seed(0)
    t0 = TRADES(attack, beta=0.0)(m, m, x, y)
    assert torch.allclose(t0.loss, Natural()(m, m, x, y).loss, atol=1e-6)
    torch.manual_seed(0)
    t6 = TRADES(attack, beta=6.0)(m, m, x, y)
    assert t6.loss > t0.loss and t6.adversarial


def test_eps_warmup_ramps_training_eps_then_holds():
    from distadv.compose import load_config
    from distadv.strategies import build_strategy
    cfg = load_config(["recipe=demo", "strategy.eps_warmup_epochs=4", "train_attacks.linf.eps=0.2",
                       "train_attacks.linf.alpha=0.05"])
    eps = [build_strategy(cfg, 10, e).attack.eps for e in range(6)]
    assert eps == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    alpha = build_strategy(cfg, 10, 0).attack.alpha
    assert alpha == pytest.approx(0.05 / 4)


def test_build_strategy_sets_num_classes_on_nested_strategies():
    from distadv.compose import load_config
    from distadv.strategies import build_strategy
    cfg = load_config(["recipe=wider_wrn"])  # Mix(MAT(Adversarial x 2))
    s = build_strategy(cfg, 100)
    nested = [s, *s.children(), *s.inner.children()]
    assert len(nested) == 5 and all(n.num_classes == 100 for n in nested)
