"""Single-step methods and the catastrophic-overfitting guard: FGSM-RS's and N-FGSM's
perturbation bounds, GradAlign's penalty against the formula and its pass count, Free's m
replays with the carried perturbation, and the guard (detects, rolls back with the method's
state, tightens, stops; resumable; a guarded run that never fires is bit-identical)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distadv.attacks import PGD
from distadv.compose import load_config
from distadv.engine.checkpoint import load_state
from distadv.engine.fit import fit
from distadv.engine.loop import train_epoch, train_step
from distadv.errors import ConfigError
from distadv.strategies import Free, GradAlign
from distadv.strategies.fast import SingleStep, fgsm_rs, n_fgsm
from distadv.strategies.grad_align import alignment_penalty
from distadv.strategies.collapse import collapsed
from distadv.strategies.guard import Guard
from tests.conftest import NO_CHECK
from tests.test_methods import SHORT, _batch, _find, _state   # the demo's few-step run

ONE_STEP = ["train_attacks.linf.steps=1"]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 10))


# -- perturbation bounds -----------------------------------------------------------------
def test_fgsm_rs_stays_in_the_eps_ball_and_n_fgsm_reaches_three_eps():
    """FGSM-RS projects: ||delta||_inf <= eps. N-FGSM does not: noise 2 eps + a step of eps, so
    its bound is 3 eps, and it is reached (it is not eps)."""
    torch.manual_seed(1)
    model, eps = _net(), 0.05
    x = torch.rand(64, 1, 8, 8) * 0.5 + 0.25        # inside [0, 1] by more than 3 eps
    y = torch.randint(0, 10, (64,))
    threat = PGD(eps=eps, alpha=eps, steps=1)
    rs, nf = fgsm_rs(threat), n_fgsm(threat)
    assert (rs.step, rs.noise, nf.step, nf.noise) == (1.25, 1.0, 1.0, 2.0)
    d_rs = (rs.examples(model, x, y).inputs - x).abs().flatten(1).amax(1)
    d_nf = (nf.examples(model, x, y).inputs - x).abs().flatten(1).amax(1)
    assert d_rs.max() <= eps + 1e-6 and d_rs.min() >= eps - 1e-6       # on the sphere: projected
    assert d_nf.max() <= 3 * eps + 1e-6 and d_nf.min() > 2.5 * eps      # ~ 3 eps: not clipped
    assert rs.bound() == 1.0 and nf.bound() == 3.0
    custom = n_fgsm(threat, step=0.5, noise=1.0)
    d = (custom.examples(model, x, y).inputs - x).abs().amax()
    assert d <= 1.5 * eps + 1e-6 and custom.bound() == 1.5
    zero = n_fgsm(threat, noise=0.0)                 # FGSM without a random start
    xg = x.clone().requires_grad_()
    grad = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)[0]
    assert torch.equal(zero.examples(model, x, y).inputs, (x + eps * grad.sign()).clamp(0, 1))


def test_single_step_examples_stay_in_the_pixel_box_and_follow_the_warmup():
    torch.manual_seed(2)
    model, x, y = _net(), torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    s = n_fgsm(PGD(eps=0.2, alpha=0.2, steps=1))
    adv = s.examples(model, x, y).inputs
    assert adv.min() >= 0 and adv.max() <= 1
    s.attack.eps = 0.02                               # what the eps warm-up does
    assert (s.examples(model, x, y).inputs - x).abs().max() <= 3 * 0.02 + 1e-6


def test_tightening_changes_the_training_examples():
    """After a rollback the method really changes: plain FGSM (noise 0) gains a random start
    (FGSM-RS) or noise (N-FGSM), FGSM-RS's step shrinks, and the examples follow."""
    torch.manual_seed(4)
    model, eps = _net(), 0.05
    x, y = torch.rand(32, 1, 8, 8) * 0.5 + 0.25, torch.randint(0, 10, (32,))
    rs = fgsm_rs(PGD(eps=eps, alpha=eps, steps=1), noise=0.0)
    before = rs.examples(model, x, y).inputs
    assert rs.tighten() == "fgsm_rs random start 0 -> 1 eps"
    after = rs.examples(model, x, y).inputs
    assert not torch.equal(before, after) and (after - x).abs().max() <= eps + 1e-6
    assert rs.tighten() == "fgsm_rs step 1.25 -> 1 eps" and rs.step == 1.0
    nf = n_fgsm(PGD(eps=eps, alpha=eps, steps=1), noise=0.0)
    assert (nf.examples(model, x, y).inputs - x).abs().max() <= eps + 1e-6
    assert nf.tighten() == "n_fgsm noise 0 -> 1 eps" and nf.bound() == 2.0
    assert (nf.examples(model, x, y).inputs - x).abs().max() > 1.5 * eps


# -- GradAlign -----------------------------------------------------------------------------
def test_grad_align_penalty_equals_the_formula_on_a_hand_built_batch():
    """A linear model, where d mean CE / dx = W^T (softmax(Wx + b) - onehot(y)) / B exactly:
    the penalty is 1 - the mean cosine of that at x and at x + eta, over the examples whose
    gradients are non-zero; the loss is CE on the FGSM example + lambda x the penalty."""
    torch.manual_seed(3)
    lin = nn.Linear(16, 3)
    model = nn.Sequential(nn.Flatten(), lin)
    x, y = torch.rand(5, 1, 4, 4) * 0.6 + 0.2, torch.tensor([0, 1, 2, 1, 0])
    eps, lam = 0.05, 0.7
    ga = GradAlign(PGD(eps=eps, alpha=eps, steps=1), lam)
    batch = ga.examples(model, x, y)
    torch.manual_seed(11)
    out = ga.loss(model, batch)
    torch.manual_seed(11)
    eta = torch.empty_like(x).uniform_(-eps, eps)     # the same draw as inside the loss

    def grad(z):
        p = F.softmax(lin(z.flatten(1)), 1)
        return ((p - F.one_hot(y, 3).float()) @ lin.weight / len(y)).detach()

    g1, g2 = grad(x), grad((x + eta).clamp(0, 1))
    cos = F.cosine_similarity(g1, g2, dim=1)
    assert torch.allclose(ga.last_penalty, 1 - cos.mean(), atol=1e-6)
    ce = F.cross_entropy(model(batch.inputs), y)
    assert torch.allclose(out.loss, ce + lam * (1 - cos.mean()), atol=1e-6)
    # the rule for zero gradients: such examples leave the mean
    z1 = torch.cat([g1, torch.zeros(1, 16)])
    z2 = torch.cat([g2, torch.ones(1, 16)])
    assert torch.allclose(alignment_penalty(z1, z2), 1 - cos.mean(), atol=1e-6)
    assert alignment_penalty(torch.zeros(2, 3), torch.ones(2, 3)).item() == 0.0


def test_grad_align_costs_four_forwards_against_fgsm_rs_two_and_its_penalty_trains():
    """Passes per training step, counted on the model: FGSM-RS 2 forwards (attack, loss);
    GradAlign 4 (attack, the gradient at x, the gradient at x + eta, loss), plus the double
    backward through the second gradient (its gradient reaches the weights)."""
    counts = {}
    for name in ("fgsm_rs", "grad_align"):
        st = _state(f"strategy.name={name}", *ONE_STEP)
        calls = []
        st.raw_model.register_forward_hook(lambda m, i, o: calls.append(1))
        x, y = _batch(st)
        st.method.on_epoch_start(st, 0)
        train_step(st, x, y)
        counts[name] = len(calls)
    assert counts == {"fgsm_rs": 2, "grad_align": 4}
    st = _state("strategy.name=grad_align", "strategy.grad_align_lambda=1.0", *ONE_STEP)
    ga = _find(st, GradAlign)
    x, y = _batch(st)
    st.method.on_epoch_start(st, 0)
    batch = ga.examples(st.attack_model, x, y)
    out = ga.loss(st.model, batch)
    penalty_only = torch.autograd.grad(out.loss - F.cross_entropy(out.logits, y),
                                       list(st.raw_model.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in penalty_only)   # double backprop


# -- Free-AT --------------------------------------------------------------------------------
def test_free_replays_each_batch_m_times_and_carries_the_perturbation():
    st = _state("strategy.name=free", "strategy.free_replays=3", *ONE_STEP)
    free = _find(st, Free)
    assert st.parts.replays == 3 and st.parts.updates_per_epoch == 9
    seen = []
    st.raw_model.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    deltas = []
    orig = free.after_backward

    def spy(state):
        orig(state)
        deltas.append(free.delta.clone())
    free.after_backward = spy
    clean = [x for x, _, _ in st.parts.train_dl][:3]
    st.method.on_epoch_start(st, 0)
    st.parts.train_dl.set_epoch(0)
    torch.manual_seed(0)
    train_epoch(st)
    eps = st.cfg.train_attacks.linf.eps
    assert len(seen) == 9 and free.updates == 9                  # 3 batches x 3 replays
    assert st.scheduler.last_epoch == 9                          # the schedule counts replays
    for b in range(3):
        for r in range(3):
            x_in = seen[3 * b + r]
            assert (x_in - clean[b]).abs().max() <= eps + 1e-6
        assert not torch.equal(seen[3 * b], seen[3 * b + 1])     # the perturbation moved
    assert torch.equal(seen[0], clean[0])                         # it starts at 0
    assert torch.allclose(seen[1], (clean[0] + deltas[0]).clamp(0, 1))   # ...and is carried
    assert torch.allclose(seen[2], (clean[0] + deltas[1]).clamp(0, 1))
    assert torch.allclose(seen[3], (clean[1] + deltas[2]).clamp(0, 1))   # on to the next batch
    step = (deltas[1] - deltas[0]).abs().max()
    assert step <= eps + 1e-6 and step > 0


def test_free_schedule_spans_the_replays(tmp_path):
    """One-cycle over epochs x batches x m optimizer steps: the LR is back to 0 at the end."""
    st = _state("strategy.name=free", "strategy.free_replays=2", "optim.schedule=onecycle",
                "optim.epochs=2", *ONE_STEP)
    for e in range(2):
        st.method.on_epoch_start(st, e)
        st.parts.train_dl.set_epoch(e)
        train_epoch(st)
    assert st.scheduler.last_epoch == 12
    assert st.optimizer.param_groups[0]["lr"] == 0.0


# -- the guard ------------------------------------------------------------------------------
def test_collapse_rule():
    assert collapsed(pgd=0.05, fgsm=0.8, best=0.5, fgsm_at_best=0.7, threshold=0.2)
    assert not collapsed(pgd=0.35, fgsm=0.8, best=0.5, fgsm_at_best=0.7, threshold=0.2)  # small drop
    assert not collapsed(pgd=0.05, fgsm=0.3, best=0.5, fgsm_at_best=0.7, threshold=0.2)  # both fell


def _guarded(*extra):
    st = _state("strategy.name=fgsm_rs", *ONE_STEP, "guard.enabled=true", "guard.every=1",
                "guard.examples=64", *extra)
    return st, _find(st, Guard)


def test_guard_rolls_back_weights_momentum_and_ema_and_tightens_the_step(capsys):
    st, guard = _guarded("ema.enabled=true", "optim.schedule=onecycle")
    rs = _find(st, SingleStep)
    x, y = _batch(st)
    st.method.on_epoch_start(st, 0)
    train_step(st, x, y)                        # check 1 passes: the snapshot is this state
    good = {k: v.clone() for k, v in st.raw_model.state_dict().items()}
    good_momentum = [st.optimizer.state[p]["momentum_buffer"].clone()
                     for p in st.raw_model.parameters()]
    ema = next(m for m in st.method.addons if m.name == "ema")
    good_ema = {k: v.clone() for k, v in ema.module.state_dict().items()}
    good_ema_steps = ema.steps
    guard.probe.best, guard.probe.fgsm_at_best = 0.6, 0.6   # as if the model had been robust
    best = guard.probe.best
    guard._probe = lambda state: (0.0, 1.0)     # the next probe: PGD gone, FGSM fine
    train_step(st, x, y)
    assert len(guard.events) == 1 and guard.rollbacks == 1
    assert all(torch.equal(st.raw_model.state_dict()[k], good[k]) for k in good)
    assert all(torch.equal(st.optimizer.state[p]["momentum_buffer"], m)
               for p, m in zip(st.raw_model.parameters(), good_momentum))
    assert all(torch.equal(ema.module.state_dict()[k], good_ema[k]) for k in good_ema)
    assert ema.steps == good_ema_steps
    assert st.optimizer.param_groups[0]["lr"] == st.scheduler.get_last_lr()[0]  # schedule goes on
    assert rs.step == pytest.approx(1.0)        # 1.25 x 0.8
    line = capsys.readouterr().out
    assert "distadv: guard: catastrophic overfitting at epoch 1, step 2" in line
    assert f"(best {best:.3f})" in line and "rolled back to step 1" in line
    assert "fgsm_rs step 1.25 -> 1 eps" in line
    assert st.method.progress()["guard"]["events"][0]["action"] == "rollback"
    train_step(st, x, y)                        # a second collapse tightens further
    assert rs.step == pytest.approx(0.8) and guard.rollbacks == 2


def test_guard_stop_ends_the_epoch_and_the_run():
    st, guard = _guarded("guard.action=stop")
    st.method.on_epoch_start(st, 0)
    st.parts.train_dl.set_epoch(0)
    guard.probe.best, guard.probe.fgsm_at_best = 0.6, 0.6
    guard._probe = lambda state: (0.1, 0.7)
    before = {k: v.clone() for k, v in st.raw_model.state_dict().items()}
    train_epoch(st)
    assert st.halt and st.stopper.should_stop
    assert st.scheduler.last_epoch == 1          # stopped after the first of 3 steps
    assert any(not torch.equal(st.raw_model.state_dict()[k], before[k]) for k in before)
    assert guard.events[0]["action"] == "stop" and len(guard.events) == 1


def test_guard_max_rollbacks_then_stops():
    st, guard = _guarded("guard.max_rollbacks=1")
    st.method.on_epoch_start(st, 0)
    guard.probe.best, guard.probe.fgsm_at_best = 0.6, 0.6
    guard._probe = lambda state: (0.1, 0.7)
    x, y = _batch(st)
    train_step(st, x, y)
    train_step(st, x, y)
    assert [e["action"] for e in guard.events] == ["rollback", "stop"]
    assert st.stopper.should_stop and "max_rollbacks=1 reached" in guard.events[1]["message"]


@pytest.mark.parametrize("method", ["fgsm_rs", "n_fgsm", "free", "grad_align"])
def test_a_guarded_run_that_never_fires_is_bit_identical_to_an_unguarded_one(tmp_path, method):
    base = [f"strategy.name={method}", *ONE_STEP, "optim.epochs=2", "ema.enabled=true"]
    plain = fit(load_config([*SHORT, *base, f"run_dir={tmp_path / 'plain'}"]))
    guarded = fit(load_config([*SHORT, *base, f"run_dir={tmp_path / 'guard'}",
                               "guard.enabled=true", "guard.every=1", "guard.examples=32",
                               "guard.threshold=0.99"]))
    a = load_state(tmp_path / "plain/checkpoints/latest")
    b = load_state(tmp_path / "guard/checkpoints/latest")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    ea, eb = a["method"]["ema"]["weights"], b["method"]["ema"]["weights"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    updates = 2 * 3 * (4 if method == "free" else 1)        # 2 epochs x 3 batches x replays
    assert b["method"]["guard"]["steps"] == updates and b["method"]["guard"]["events"] == []
    assert plain["test"] == guarded["test"] and guarded["guard"]["fired"] == 0
    keep = lambda h: {k: v for k, v in h.items() if not k.startswith("guard/") and "_s" not in k
                      and "images_per_s" not in k}
    assert [keep(h) for h in a["history"]] == [keep(h) for h in b["history"]]


def _scripted_probe(self, state):
    """A probe that reports a collapse at steps 5 and 9 (PGD 0.0, FGSM 0.9) and a robust model
    otherwise: deterministic in the guard's state, as a real probe is in the run's."""
    return (0.0, 0.9) if self.steps in (5, 9) else (0.5, 0.5)


def test_guard_events_and_state_survive_a_resume(tmp_path, monkeypatch):
    """A guard that fires twice, cut after epoch 1 and resumed, ends exactly as the
    uninterrupted run: weights, the guard's events and bests, the twice-tightened step."""
    monkeypatch.setattr(Guard, "_probe", _scripted_probe)
    args = ["strategy.name=fgsm_rs", *ONE_STEP, "optim.epochs=3", "guard.enabled=true",
            "guard.every=1", "guard.examples=64", "runtime.max_steps_per_epoch=4"]
    full = fit(load_config([*SHORT, *args, f"run_dir={tmp_path / 'full'}"]))
    assert fit(load_config([*SHORT, *args, f"run_dir={tmp_path / 'cut'}",
                            "runtime.max_epochs_per_session=1"])) == {"finished": False}
    resumed = fit(load_config([*SHORT, *args, f"run_dir={tmp_path / 'cut'}"]))
    a = load_state(tmp_path / "full/checkpoints/latest")
    b = load_state(tmp_path / "cut/checkpoints/latest")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    timeless = lambda m: {**m, "guard": {k: v for k, v in m["guard"].items() if k != "seconds"}}
    assert timeless(a["method"]) == timeless(b["method"])      # seconds: a measurement
    assert full["guard"] == resumed["guard"]
    assert [e["step"] for e in full["guard"]["events"]] == [5, 9]
    assert a["method"]["fgsm_rs"]["step"] == pytest.approx(1.25 * 0.8 * 0.8)


def test_guard_logs_to_progress_and_tensorboard(tmp_path, monkeypatch):
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    monkeypatch.setattr(Guard, "_probe", _scripted_probe)
    args = ["strategy.name=fgsm_rs", *ONE_STEP, "optim.epochs=2", "guard.enabled=true",
            "guard.every=1", "guard.examples=64", f"run_dir={tmp_path / 'r'}"]
    results = fit(load_config([*SHORT, *args]))
    progress = json.loads((tmp_path / "r/progress.json").read_text())
    assert progress["guard"]["fired"] == results["guard"]["fired"] == 1     # step 5
    assert progress["guard"]["events"][0]["message"].startswith("distadv: guard: ")
    assert {"guard/pgd", "guard/fgsm", "guard/fired"} <= set(progress["history"][-1])
    assert [h["guard/fired"] for h in progress["history"]] == [0.0, 1.0]
    acc = EventAccumulator(str(tmp_path / "r/tb"), size_guidance={"tensors": 0})
    acc.Reload()
    assert "guard/fired" in acc.Tags()["scalars"]
    texts = acc.Tensors("guard/text_summary")
    assert len(texts) == 1 and b"catastrophic overfitting" in texts[0].tensor_proto.string_val[0]


# A forced catastrophic overfit on the real Fashion-MNIST: FGSM without a random start at eps
# 0.25, lr 0.01, 3 epochs of 200 steps. The collapse depends on the CPU's arithmetic: with 2
# epochs, on the AVX2 EPYC (2026-12-02) seed 0 peaked at 0.246 (step 200) and slid to 0.125 by
# step 350 (unguarded: 0.113 at the end of epoch 3), the guard firing at steps 350, 225, 375
# (seeds 0, 1, 2); on the AVX-512 EPYC (2026-12-02, later) seed 0 did not collapse within its
# 400 steps at all. With 3 epochs (another one-cycle schedule) on the AVX-512 EPYC: the guard
# (threshold 0.1) fires at steps 450, 225, 325 (probe best -> now 0.246 -> 0.102, 0.234 ->
# 0.102, 0.160 -> 0.059), rolls back and adds the random start; val PGD per epoch
# [0.208, 0.252, 0.200], [0.172, 0.192, 0.158], [0.140, 0.204, 0.178].
FORCED_CO = ["recipe=fmnist_fgsm_rs", "strategy.noise=0", "optim.lr=0.01", "optim.epochs=3",
             "runtime.max_steps_per_epoch=200", "guard.every=25", "guard.threshold=0.1",
             "data.val_size=500", "data.test_size=500", "~eval_attacks.pgd_l2",
             "train_attacks.linf.eps=0.25", "eval_attacks.pgd_linf.eps=0.25",
             "eval_attacks.pgd_linf.alpha=0.025", "eval_attacks.fgsm.eps=0.25",
             "eval_attacks.fgsm.alpha=0.25", "log.progress=never", "log.tensorboard=false",
             *NO_CHECK]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forced_catastrophic_overfitting_is_detected_rolled_back_and_ends_robust(tmp_path, seed):
    r = fit(load_config([*FORCED_CO, f"seed={seed}", f"run_dir={tmp_path / 'r'}"]))
    events = r["guard"]["events"]
    assert events, f"seed {seed}: plain FGSM at eps 0.25 did not collapse within 600 steps"
    first = events[0]
    assert first["action"] == "rollback" and first["best"] - first["pgd"] > 0.1
    assert "fgsm_rs random start 0 -> 1 eps" in first["message"]
    history = load_state(tmp_path / "r/checkpoints/latest")["history"]
    best_val = max(h["val/pgd_linf"] for h in history)
    end = history[-1]["val/pgd_linf"]           # the model that goes on (validated again after
    assert end >= best_val - 0.1 and end > 0.15  # a rollback at the epoch end): not collapsed


# -- composition and bad input ---------------------------------------------------------------
@pytest.mark.parametrize("method", ["fgsm_rs", "n_fgsm", "grad_align", "free"])
def test_single_step_methods_compose_with_ema_the_mix_and_the_eps_warmup(tmp_path, method):
    r = fit(load_config([*SHORT, f"strategy.name={method}", *ONE_STEP, "optim.epochs=2",
                         "ema.enabled=true", "strategy.natural_fraction=0.3",
                         "strategy.eps_warmup_epochs=2", f"run_dir={tmp_path / 'r'}"]))
    assert r["epochs_run"] == 2
    st = _state(f"strategy.name={method}", *ONE_STEP, "strategy.eps_warmup_epochs=4")
    st.method.on_epoch_start(st, 0)
    node = st.method.strategy.inner if hasattr(st.method.strategy, "inner") else st.method.strategy
    assert node.attack.eps == pytest.approx(0.1 / 4)


@pytest.mark.parametrize("override,message", [
    (["strategy.name=fgsm_rs"], "set train_attacks.linf.steps=1"),
    (["strategy.name=n_fgsm", *ONE_STEP, "strategy.noise=-1"], "strategy.noise must be >= 0"),
    (["strategy.name=fgsm_rs", *ONE_STEP, "strategy.step=0"], "strategy.step must be > 0"),
    (["strategy.step=1.0"], "strategy.step is for strategy.name in"),
    (["strategy.name=free", *ONE_STEP, "strategy.noise=1"], "strategy.noise is not used by free"),
    (["strategy.name=free", *ONE_STEP, "strategy.free_replays=0"], "strategy.free_replays must be >= 1"),
    (["strategy.free_replays=8"], "strategy.free_replays is for strategy.name=free"),
    (["strategy.name=free", *ONE_STEP, "awp.enabled=true"], "does not work with strategy free"),
    (["guard.enabled=true", "guard.action=pause"], "guard.action='pause' is not valid"),
    (["guard.enabled=true", "guard.threshold=0"], "guard.threshold must be in (0, 1)"),
    (["guard.enabled=true", "guard.every=-1"], "guard.every must be >= 0"),
])
def test_bad_single_step_and_guard_settings_are_refused_with_one_line(override, message):
    with pytest.raises(ConfigError, match=None) as exc:
        load_config([*SHORT, *override])
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.slow
def test_grad_align_and_the_guard_run_under_two_process_ddp(tmp_path):
    """GradAlign's double backward through the DDP wrapper and the guard's reduced probe (each
    rank probes half the images; one all-reduce per check) on 2 gloo ranks."""
    import json
    import subprocess

    from tests.conftest import ROOT, run_env
    from tools.procs import launch_cmd
    env = {**run_env(), "ACCELERATE_USE_CPU": "1"}
    run = tmp_path / "ddp"
    cmd = launch_cmd("distadv/train.py", *SHORT, "strategy.name=grad_align", *ONE_STEP,
                     "optim.epochs=2", "guard.enabled=true", "guard.every=2", "guard.examples=64",
                     f"run_dir={run}", config="ddp")
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2 and results["guard"]["fired"] == 0
    state = load_state(run / "checkpoints/latest")
    assert state["method"]["guard"]["steps"] == 6
    assert 0 <= state["history"][-1]["guard/pgd"] <= state["history"][-1]["guard/fgsm"] <= 1


@pytest.mark.slow
def test_time_to_robust_measures_every_method_and_refuses_an_existing_out(tmp_path):
    """The benchmark's whole path at a token budget (6 steps an epoch, a weak AutoAttack on 20
    images): every method's curve, R from PGD-10's best, the ratios; then --out is not reused."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT, run_env
    out = tmp_path / "ttr"
    cmd = [sys.executable, "tools/time_to_robust.py", "--quick", "--out", str(out), "--epochs", "2",
           "--aa-examples", "20", "--final-examples", "20", "--val-size", "100",
           "--methods", "reference,pgd10,fgsm_rs,free"]
    proc = subprocess.run(cmd, cwd=ROOT, env=run_env(2), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "time_to_robust.json").read_text())
    assert set(report["methods"]) == {"reference", "pgd10", "fgsm_rs", "free"}
    best = max(p["aa"] for p in report["methods"]["pgd10"]["curve"])
    assert report["R"] == pytest.approx(0.95 * best)
    assert len(report["methods"]["fgsm_rs"]["curve"]) == 2 and len(report["methods"]["free"]["curve"]) == 1
    times = [p["train_s"] for p in report["methods"]["pgd10"]["curve"]]
    assert times == sorted(times) and times[0] > 0          # cumulative training time
    assert report["methods"]["fgsm_rs"]["guard_fired"] is not None   # the guard ran
    assert "| fgsm_rs + guard |" in proc.stdout
    again = subprocess.run(cmd, cwd=ROOT, env=run_env(2), capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "exists; remove it or choose another folder" in again.stderr
