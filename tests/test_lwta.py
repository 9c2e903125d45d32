"""Stochastic LWTA (distadv/models/lwta.py): one winner per block, the relaxation's gradient,
the sampling law, randomised-model detection, the per-stage nets, and on a trained LWTA model
EOT-PGD at least as strong as plain PGD."""
from __future__ import annotations

import pytest
import torch

from distadv.attacks.mode import is_randomised
from distadv.compose import load_config
from distadv.errors import ConfigError
from distadv.models import LWTA, create_model
from distadv.models.lwta import lwta
from tests.conftest import NO_CHECK


def _winners(out: torch.Tensor, u: int) -> torch.Tensor:
    """Nonzero units per block (blocks of ``u`` adjacent channels)."""
    return (out.reshape(out.shape[0], out.shape[1] // u, u, *out.shape[2:]) != 0).sum(2)


@pytest.mark.parametrize("shape", [(4, 12), (3, 12, 5, 5)], ids=["dense", "conv"])
@pytest.mark.parametrize("u", [2, 3])
def test_exactly_one_nonzero_per_block_in_the_sampled_forward(shape, u):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    layer = LWTA(competitors=u, channels=shape[1]).eval()
    out = layer(x)
    assert torch.all(_winners(out, u) == 1)
    # the winner passes its own value unchanged
    assert torch.equal(out[out != 0], x[out != 0])
    # straight-through training draw: one winner as well; the paper's soft draw: a convex
    # weighting of each block (relaxed one-hot), so value = sum over the block of out / x
    hard = LWTA(competitors=u, hard=True).train()(x)
    assert torch.all(_winners(hard, u) == 1)
    soft = LWTA(competitors=u).train()(x)
    weights = (soft / x).reshape(shape[0], shape[1] // u, u, *shape[2:])
    assert torch.allclose(weights.sum(2), torch.ones(()), atol=1e-5) and (weights >= 0).all()
    assert (_winners(soft, u) > 1).any()       # soft: not one-hot (the test would see a change)


def test_channels_last_maps_work():
    x = torch.randn(2, 8, 4, 4).to(memory_format=torch.channels_last)
    assert torch.all(_winners(LWTA().eval()(x), 2) == 1)


def test_winner_is_drawn_from_the_softmax_of_the_block():
    """logits (0, log 3): the second unit wins with probability 3/4. 20,000 draws: std 0.003,
    so a tolerance of 0.015 (5 std) still fails a wrong law (e.g. argmax: 1.0, uniform: 0.5)."""
    torch.manual_seed(1)
    x = torch.tensor([[1e-3, 1e-3 + torch.log(torch.tensor(3.0)).item()]]).repeat(20_000, 1)
    out = lwta(x, training=False)
    assert (out[:, 1] != 0).float().mean().item() == pytest.approx(0.75, abs=0.015)


def test_gradient_flows_through_the_relaxation():
    torch.manual_seed(0)
    x = torch.randn(6, 8, requires_grad=True)
    torch.manual_seed(5)
    out = lwta(x, 2, 0.67, training=True)
    (g,) = torch.autograd.grad((out * torch.arange(8.0)).sum(), x)
    with torch.no_grad():
        torch.manual_seed(5)
        mask = lwta(x, 2, 0.67, training=True) / x      # the same Gumbel draw, held fixed
    # d out / d x = mask + x * d mask / d x: the relaxation's own gradient is there
    assert not torch.allclose(g, mask * torch.arange(8.0), atol=1e-4)
    # ... and the whole net's: to the input and to the first convolution's weights
    model = create_model("smallcnn", in_channels=1, image_size=8, activation="lwta").train()
    xi = torch.rand(4, 1, 8, 8, requires_grad=True)
    model(xi).logsumexp(1).sum().backward()
    first = model.net.features[0].weight.grad
    assert xi.grad is not None and xi.grad.abs().sum() > 0
    assert first is not None and first.abs().sum() > 0


def test_lwta_model_is_detected_as_randomised_and_relu_is_not():
    x = torch.rand(8, 3, 32, 32)
    torch.manual_seed(0)
    assert is_randomised(create_model("lwta_resnet20"), x)
    assert is_randomised(create_model("smallcnn", 10, 3, image_size=32, activation="lwta"), x)
    assert not is_randomised(create_model("resnet20"), x)


def test_lwta_keeps_the_state_dict_keys_of_relu():
    for name, kw in (("smallcnn", {}), ("resnet20", {}), ("preact_resnet18", {"width": 0.125})):
        relu = create_model(name, **kw, activation="relu").state_dict()
        lw = create_model(name, **kw, activation="lwta")
        lw.load_state_dict(relu)                       # strict: same keys and shapes
        assert list(lw.state_dict()) == list(relu)


def test_generic_nets_follow_blocks_and_widths():
    net = create_model("preact_resnet", blocks=[1, 2, 1], widths=[8, 16, 32], activation="lwta").net
    assert len(net.layers) == 4 and net.conv1.out_channels == 8 and net.fc.in_features == 32
    assert [b.conv1.stride[0] for b in net.layers] == [1, 2, 1, 2]
    res = create_model("resnet", blocks=[2, 1], widths=[8, 16]).net
    assert len(res.layers) == 3 and res.fc.in_features == 16
    out = create_model("preact_resnet", blocks=[1, 1], widths=[4, 8], activation="lwta").eval()(
        torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("override,message", [
    (["model.name=smallcnn", "model.activation=lwta", "model.lwta_competitors=3"],
     "LWTA needs channels divisible by its 3 competitors, got 16 channels"),
    (["model.name=preact_resnet", "model.activation=lwta", "model.blocks=[1,1]",
      "model.widths=[8,15]"], "model.widths [15] do not divide into LWTA blocks"),
    (["model.name=preact_resnet", "model.blocks=[1,1]", "model.widths=[8,16,32]"],
     "model.blocks has 2 stages and model.widths 3"),
    (["model.name=basicnet", "model.widths=[8]"], "model.widths is only for preact_resnet"),
    (["model.lwta_temperature=0.5"], "model.lwta_temperature is for LWTA models"),
    (["model.name=lwta_resnet20", "model.lwta_temperature=0"], "model.lwta_temperature must be > 0"),
    (["model.lwta_kl=1"], "model.lwta_kl is for LWTA models"),
    (["model.name=lwta_resnet20", "model.lwta_kl=-1"], "model.lwta_kl must be >= 0"),
])
def test_bad_lwta_settings_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(["recipe=demo", *override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_kl_term_is_kept_in_training_and_reaches_the_loss(tmp_path):
    """model.lwta_kl: each LWTA layer keeps KL(q || uniform) of its training forward (0 for
    uniform logits, > 0 otherwise, differentiable), and the training method adds weight x KL
    to the batch's loss; evaluation forwards keep none."""
    from distadv.models.lwta import kl_to_uniform, record_kl, take_kl
    assert float(kl_to_uniform(torch.zeros(2, 4, 2))) == 0.0
    assert float(kl_to_uniform(torch.tensor([[[3.0, -3.0]]]))) > 0.5
    torch.manual_seed(0)
    model = create_model("smallcnn", in_channels=1, image_size=8, activation="lwta")
    assert record_kl(model) == 3 and record_kl(create_model("smallcnn", in_channels=1)) == 0
    x = torch.rand(8, 1, 8, 8, requires_grad=True)
    model.eval()(x)
    assert take_kl(model) is None                      # evaluation: no KL kept
    model.train()(x)
    kl = take_kl(model)
    assert kl is not None and kl.item() > 0 and take_kl(model) is None   # taken once
    kl.backward()
    assert x.grad.abs().sum() > 0                      # the term is differentiable

    from distadv.engine.setup import make_accelerator
    from distadv.engine.state import TrainState
    losses = {}
    for weight in (0.0, 1.0):
        cfg = load_config(["recipe=lwta_digits", f"run_dir={tmp_path / str(weight)}",
                           f"model.lwta_kl={weight}", *NO_CHECK])
        state = TrainState.create(cfg, make_accelerator(cfg))
        xb, yb, _ = next(iter(state.parts.train_dl))
        torch.manual_seed(1)                          # the same draws for both weights
        state.model.train()
        losses[weight] = state.method.batch_loss(state, xb, yb).loss.item()
    assert losses[1.0] > losses[0.0] + 1e-3, losses   # the KL (> 0) was added


@pytest.mark.slow
def test_eot_pgd_is_at_least_as_strong_as_pgd_on_a_trained_lwta_model(tmp_path):
    """lwta_digits trained for 8 epochs (~15 s here), then plain PGD-20 and EOT-PGD-20
    (10 samples per step) on the 360 test digits, each evaluated 3 times; EOT's mean must
    not exceed PGD's. Measured at the full recipe (20 epochs, 3 seeds): EOT-PGD 0.9-1.6 points
    below PGD (README, "Stochastic LWTA networks")."""
    from distadv.engine.fit import fit
    from distadv.eval.evaluate import run_evaluation
    from distadv.compose import load_eval_config
    cfg = load_config(["recipe=lwta_digits", f"run_dir={tmp_path / 'r'}", "optim.epochs=8",
                       "optim.milestones=[6]", "strategy.eps_warmup_epochs=3",
                       "log.progress=never", "log.tensorboard=false", *NO_CHECK])
    fit(cfg)
    ecfg = load_eval_config([f"run={tmp_path / 'r'}", "suite=eot", "suite.attacks=[natural,"
                             "pgd_linf,eot_pgd_linf]", "suite.repeats=3"])
    res = run_evaluation(ecfg, show_table=False)
    assert res["randomised"] and res["repeats"] == 3 and res["count"] >= 300
    acc = {k: v["acc"] for k, v in res["attacks"].items()}
    print(acc)                                         # the margin, in the CI log
    assert acc["natural"] > 0.8                        # a trained model, not a broken one
    assert acc["eot_pgd_linf"] <= acc["pgd_linf"], acc
