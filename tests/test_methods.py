"""Training methods through the method protocol: EMA (hand-computed, exact resume, 2 processes =
1, the best checkpoint holds the average), AWP (exact restore, bounded perturbation), TRADES as
the leaders run it (its loss equals the formula), and the leaderboard's optimizer options."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distadv.compose import load_config
from distadv.engine.checkpoint import load_state, load_weights
from distadv.engine.fit import fit
from distadv.engine.loop import train_step
from distadv.engine.setup import make_accelerator
from distadv.engine.state import TrainState
from distadv.strategies import TRADES, Batch
from distadv.strategies.awp import AWP
from distadv.strategies.ema import EMA, ema_decay
from tests.conftest import NO_CHECK

# A few short steps of the demo (SmallCNN on 8x8 digits): seconds.
SHORT = ["recipe=demo", "log.progress=never", "runtime.max_steps_per_epoch=3", "early_stop.patience=0",
         *NO_CHECK]


def _state(*overrides) -> TrainState:
    cfg = load_config([*SHORT, *overrides])
    return TrainState.create(cfg, make_accelerator(cfg))


def _find(state, kind):
    return next(m for m in state.method.nodes if isinstance(m, kind))


def _weights(module: nn.Module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _batch(state):
    x, y, _ = next(iter(state.parts.train_dl))
    return x.contiguous(memory_format=state.parts.memory_format), y


@pytest.mark.parametrize("warmup_steps", [0, 2])
def test_ema_equals_a_hand_computed_average_over_3_steps(warmup_steps):
    st = _state("ema.enabled=true", "ema.decay=0.995", f"ema.warmup={warmup_steps / 30}",
                "optim.epochs=10")              # 10 epochs x 3 steps: warm-up = warmup_steps
    ema = _find(st, EMA)
    assert ema.warmup_steps == warmup_steps
    params = [n for n, _ in st.raw_model.named_parameters()]
    hand = {n: p.detach().clone() for n, p in st.raw_model.named_parameters()}   # e_0 = w_0
    x, y = _batch(st)
    st.method.on_epoch_start(st, 0)
    for n in range(3):
        train_step(st, x, y)
        d = 0.0 if n < warmup_steps else min(0.995, (1 + n - warmup_steps) / (10 + n - warmup_steps))
        assert ema_decay(n, 0.995, warmup_steps) == d
        w = dict(st.raw_model.named_parameters())
        for k in params:
            hand[k] = d * hand[k] + (1 - d) * w[k].detach()
    got = dict(ema.module.named_parameters())
    for k in params:
        assert torch.allclose(got[k], hand[k], atol=1e-6, rtol=0), k
    assert ema.steps == 3
    # BatchNorm statistics are copied from the model, not averaged
    for (k, b), (_, mb) in zip(ema.module.named_buffers(), st.raw_model.named_buffers()):
        assert torch.equal(b, mb), k
    # and the average differs from the trained weights once it averages
    if warmup_steps < 3:
        assert any(not torch.equal(got[k], dict(st.raw_model.named_parameters())[k]) for k in params)


def test_ema_is_what_is_validated_selected_and_saved_and_resume_is_exact(tmp_path):
    args = ["ema.enabled=true", "optim.epochs=3", "early_stop.patience=0"]
    full = fit(load_config([*SHORT, f"run_dir={tmp_path / 'full'}", *args]))
    first = fit(load_config([*SHORT, f"run_dir={tmp_path / 'cut'}", *args,
                             "runtime.max_epochs_per_session=1"]))
    assert first == {"finished": False}
    resumed = fit(load_config([*SHORT, f"run_dir={tmp_path / 'cut'}", *args]))
    a = load_state(tmp_path / "full/checkpoints/latest")
    b = load_state(tmp_path / "cut/checkpoints/latest")
    assert a["method"]["ema"]["steps"] == 9               # 3 epochs x 3 steps
    for key in ("model",):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    ea, eb = a["method"]["ema"]["weights"], b["method"]["ema"]["weights"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea)                    # bit-exact resume
    assert any(not torch.equal(ea[k], a["model"][k]) for k in ea)        # latest: both copies
    best = load_weights(tmp_path / "full/checkpoints/best.safetensors")
    if full["best_epoch"] == 3:                           # the best is the last epoch's average
        assert all(torch.equal(best[k], ea[k]) for k in ea)
    assert full["test"] == resumed["test"]


def test_best_checkpoint_holds_the_ema_weights(tmp_path):
    """One epoch: the first validation always improves, so best.safetensors is written from
    that epoch's model; with EMA on it is the average, not the trained weights."""
    fit(load_config([*SHORT, f"run_dir={tmp_path / 'r'}", "ema.enabled=true", "optim.epochs=1"]))
    state = load_state(tmp_path / "r/checkpoints/latest")
    best = load_weights(tmp_path / "r/checkpoints/best.safetensors")
    ema = state["method"]["ema"]["weights"]
    assert best.keys() == ema.keys()
    assert all(torch.equal(best[k], ema[k]) for k in best)
    assert any(not torch.equal(best[k], state["model"][k]) for k in best)


@pytest.mark.slow
def test_ema_two_processes_equal_one_process_of_the_same_global_batch(tmp_path, two_process_run):
    from tests.test_training import TWO_VS_ONE, _one_process
    extra = [*TWO_VS_ONE, "strategy.name=natural", "optim.epochs=2",
             "runtime.max_steps_per_epoch=8", "ema.enabled=true"]
    one = _one_process(tmp_path / "one", *extra)
    two_dir = two_process_run(*extra)
    two = json.loads((two_dir / "results.json").read_text())
    assert one["world_size"] == 1 and two["world_size"] == 2
    a = load_state(tmp_path / "one/checkpoints/latest")["method"]["ema"]
    b = load_state(two_dir / "checkpoints/latest")["method"]["ema"]
    assert a["steps"] == b["steps"] == 16
    params = {n for n, _ in nn.Module.named_parameters(_model_like(tmp_path / "one"))}
    diff = max((a["weights"][k] - b["weights"][k]).abs().max().item() for k in params)
    assert diff < 1e-6, diff        # the float rounding of a 2-rank mean (as for the weights)


def _model_like(run_dir):
    from distadv.engine.build import model_for
    from distadv.engine.rundir import load_run_config
    from distadv.data import build_splits
    cfg = load_run_config(run_dir)
    return model_for(cfg, build_splits(cfg.data).info)


def test_awp_restores_the_weights_bit_for_bit_and_bounds_the_perturbation():
    st = _state("awp.enabled=true", "awp.gamma=0.01", "model.name=smallcnn")
    awp = _find(st, AWP)
    awp.record = True
    st.method.on_epoch_start(st, 0)
    x, y = _batch(st)
    before = _weights(st.raw_model)
    out = st.method.batch_loss(st, x, y)
    perturbed = _weights(st.raw_model)
    moved = [k for k in before if not torch.equal(before[k], perturbed[k])]
    assert moved and all(k.endswith("weight") and before[k].dim() > 1 for k in moved)
    assert len(awp.last_ratio) == len(moved)
    assert all(r <= 0.01 * (1 + 1e-5) for r in awp.last_ratio)       # ||v_l|| <= gamma ||w_l||
    assert min(awp.last_ratio) > 0.0099                               # and it is that size
    st.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    awp.after_backward(st)
    restored = _weights(st.raw_model)
    assert all(torch.equal(before[k], restored[k]) for k in before)   # before the optimizer step


def test_awp_warmup_keeps_the_first_epochs_plain():
    st = _state("awp.enabled=true", "awp.warmup_epochs=2")
    awp = _find(st, AWP)
    x, y = _batch(st)
    for epoch, active in ((0, False), (1, False), (2, True)):
        st.method.on_epoch_start(st, epoch)
        before = _weights(st.raw_model)
        st.method.batch_loss(st, x, y)
        changed = any(not torch.equal(before[k], v) for k, v in _weights(st.raw_model).items())
        assert awp.active == active and changed == active
        awp.after_backward(st)


def test_awp_step_through_the_loop_applies_the_perturbed_gradient_to_the_plain_weights():
    """A whole AWP step is w - lr * g(w + v) (SGD without momentum or decay): the gradient taken
    at the perturbed weights, applied to the unperturbed ones. The plain step uses g(w)."""
    over = ["optim.momentum=0", "optim.weight_decay=0", "train_attacks.linf.random_start=false",
            "optim.schedule=constant", "optim.lr=0.05"]
    plain, awp = _state(*over), _state(*over, "awp.enabled=true", "awp.gamma=0.02")
    x, y = _batch(plain)
    w0 = _weights(plain.raw_model)
    assert all(torch.equal(w0[k], v) for k, v in _weights(awp.raw_model).items())  # same start
    for st in (plain, awp):
        st.method.on_epoch_start(st, 0)
        train_step(st, x, y)
    for st in (plain, awp):
        for name, p in st.raw_model.named_parameters():
            assert torch.allclose(p.detach(), w0[name] - 0.05 * p.grad, atol=1e-7, rtol=0), name
    g_plain = dict(plain.raw_model.named_parameters())
    g_awp = dict(awp.raw_model.named_parameters())
    assert any(not torch.allclose(g_plain[k].grad, g_awp[k].grad) for k in g_plain)


def test_trades_loss_equals_the_formula_on_a_hand_built_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(5, 1, 2, 2)
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    y = torch.tensor([0, 1, 2, 1, 0])
    from distadv.attacks import PGD
    beta, ls = 5.0, 0.1
    trades = TRADES(PGD(eps=0.1, alpha=0.02, steps=2), beta=beta, label_smoothing=ls)
    out = trades.loss(model, Batch(x, y, x_adv, trades))
    zc, za = model(x), model(x_adv)
    pc, pa = zc.softmax(1), za.softmax(1)
    smooth = (1 - ls) * F.one_hot(y, 3) + ls / 3                     # label smoothing
    ce = -(smooth * zc.log_softmax(1)).sum(1).mean()
    kl = (pc * (pc.log() - pa.log())).sum(1).mean()                  # KL(p_clean || p_adv)
    assert torch.allclose(out.loss, ce + beta * kl, atol=1e-6)
    assert torch.equal(out.logits, za) and out.adversarial


def test_trades_normal_start_is_the_reference_codes():
    from distadv.attacks import PGD
    t = TRADES(PGD(eps=0.1, alpha=0.02, steps=1), start="normal")
    assert t.attack.start_sigma == 0.001 and t.attack.random_start
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(64, 1, 2, 2) * 0.5 + 0.25
    t.attack.steps, t.attack.alpha = 1, 1e-9                         # almost only the start
    x_adv = t.attack(model, x, model(x).softmax(1).detach())
    assert (x_adv - x).abs().max() < 0.006                          # 0.001 * N(0, 1): tiny
    with pytest.raises(ValueError, match="uniform"):
        TRADES(PGD(), start="gauss")


def test_no_weight_decay_on_batchnorm_and_biases():
    from distadv.engine.optim import build_optimizer
    cfg = load_config([*SHORT, "optim.no_decay_bn_bias=true", "optim.nesterov=true"])
    st = TrainState.create(cfg, make_accelerator(cfg))
    groups = st.optimizer.param_groups
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    free = [p for g in groups if g["weight_decay"] == 0 for p in g["params"]]
    assert decayed and free and all(p.dim() > 1 for p in decayed) and all(p.dim() <= 1 for p in free)
    assert all(g["nesterov"] for g in groups)
    plain = build_optimizer(st.raw_model, load_config(SHORT).optim)
    assert len(plain.param_groups) == 1


def test_cosine_schedule_with_a_linear_warmup():
    from distadv.engine.optim import LRFactor
    f = LRFactor("cosine", 400, (), 0.1, 0.4, warmup=10)
    assert [f(t) for t in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(10) == pytest.approx(1.0) and f(205) == pytest.approx(0.5)
    assert f(400) == pytest.approx(0.0, abs=1e-12)
    cfg = load_config([*SHORT, "optim.schedule=cosine", "optim.warmup=0.025", "optim.epochs=400"])
    st = TrainState.create(cfg, make_accelerator(cfg))
    assert st.scheduler.lr_lambdas[0].warmup == 30                   # 2.5 % of 400 x 3 steps


def test_silu_wide_resnets_use_silu():
    from distadv.models import create_model
    relu = create_model("preact_resnet18", width=0.125)
    silu = create_model("preact_resnet18", width=0.125, activation="silu")
    silu.load_state_dict(relu.state_dict())
    x = torch.rand(2, 3, 32, 32)
    relu.eval(), silu.eval()
    assert not torch.allclose(relu(x), silu(x))
    with torch.device("meta"):
        swish = create_model("wrn28_10_swish")
    assert isinstance(swish.net.act, torch.nn.SiLU)
    assert all(isinstance(b.act1, torch.nn.SiLU) and isinstance(b.act2, torch.nn.SiLU)
               for b in swish.net.layers)


@pytest.mark.parametrize("override,message", [
    ("ema.decay=1.5", "ema.decay must be in [0, 1)"),
    ("ema.warmup=1.0", "ema.warmup must be in [0, 1)"),
    ("awp.gamma=0", "awp.gamma must be > 0"),
    ("model.activation=tanh", "model.activation='tanh' is not valid; choose one of: relu, silu, lwta"),
    ("optim.warmup=0.1", "optim.warmup is for optim.schedule=cosine"),
    ("strategy.label_smoothing=0.1", "strategy.label_smoothing is for strategy.name=trades"),
])
def test_bad_method_settings_are_refused_with_one_line(override, message):
    from distadv.errors import ConfigError
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("*", r"\*")
                       .replace("(", r"\(").replace(")", r"\)")):
        load_config(["recipe=demo", override])


def test_bad_method_setting_on_the_command_line_exits_2_with_one_line(tmp_path):
    import subprocess
    import sys
    from tests.conftest import ROOT, run_env
    r = subprocess.run([sys.executable, str(ROOT / "distadv/train.py"), "recipe=demo",
                        f"run_dir={tmp_path / 'r'}", "awp.enabled=true", "awp.gamma=-1"],
                       capture_output=True, text=True, env=run_env(), timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == ("distadv: error: awp.gamma must be > 0 (e.g. 0.005 "
                                                 "for TRADES, 0.01 for PGD-AT), got -1.0")
    assert not (tmp_path / "r").exists()
