"""distadv/evaluate.py: suites on real trained digits runs (AutoAttack <= PGD, EOT <= PGD on
a randomised model), the gradient-masking audit (an input-quantised model is flagged, an
honest one is not), sharding across 2 processes, resume after kill -9, and bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from conftest import DEMO_EPS02, NO_CHECK, ROOT, run_env

from tools.procs import launch_cmd

PY = sys.executable
# Small budgets: the checks are about order relations, not about the paper's exact numbers.
SMALL = ["max_examples=120", "suite.aa_steps=10", "suite.aa_square_queries=100",
         "suite.audit_square_queries=300", "suite.eot_samples=4", "suite.repeats=3"]


def train(tmp_path_factory, name, *overrides):
    """A real run of the demo recipe (1 process, a few epochs); returns its directory."""
    root = tmp_path_factory.mktemp(name)
    r = subprocess.run([PY, str(ROOT / "distadv/train.py"), "recipe=demo", f"runs_root={root}",
                        f"name={name}", *overrides], env=run_env(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return root / name


@pytest.fixture(scope="module")
def at_run(tmp_path_factory):
    """PGD-L-inf adversarial training on digits (the demo: SmallCNN, eps 0.1), 6 epochs.
    NO_CHECK: the test evaluates it itself (eval/autoattack.json, not the run's check)."""
    return train(tmp_path_factory, "at", "optim.epochs=6", "optim.milestones=[4,5]", *NO_CHECK)


@pytest.fixture(scope="module")
def natural_run(tmp_path_factory):
    """Natural training of BasicNet (the model these checks were measured on), evaluated at
    eps 0.05 where its accuracy is neither 0 nor 100%."""
    # NO_CHECK: its end-of-run AutoAttack (57 s) is no subject here; the official package
    # against the sharded runner is tested on it below
    return train(tmp_path_factory, "nat", "model.name=basicnet", "data.image_size=32", *NO_CHECK,
                 "strategy.name=natural", "optim.epochs=4",
                 "eval_attacks.pgd_linf.eps=0.05", "eval_attacks.pgd_linf.alpha=0.0125",
                 "eval_attacks.fgsm.eps=0.05", "eval_attacks.fgsm.alpha=0.05",
                 "eval_attacks.pgd_l2.eps=0.5", "eval_attacks.pgd_l2.alpha=0.125")


def evaluate(*args, threads=1, timeout=900):
    """Run distadv/evaluate.py on one process."""
    return subprocess.run([PY, str(ROOT / "distadv/evaluate.py"), *args], env=run_env(threads),
                          capture_output=True, text=True, timeout=timeout)


def read(path):
    return json.loads(path.read_text())


@pytest.mark.slow
def test_autoattack_is_not_weaker_than_pgd_on_the_adversarially_trained_model(at_run):
    # APGD-CE + APGD-T at the package's 100 iterations: SMALL's 10 made AutoAttack weaker than
    # the demo's PGD-20 by one example of 120 (measured), which says nothing about AutoAttack.
    r = evaluate(f"run={at_run}", "suite=autoattack", "suite.attacks=[natural,pgd_linf,aa_linf]",
                 *SMALL, "suite.aa_steps=100", "suite.aa_components=[apgd-ce,apgd-t]")
    assert r.returncode == 0, r.stderr[-3000:]
    res = read(at_run / "eval/autoattack.json")
    acc = {k: v["acc"] for k, v in res["attacks"].items()}
    assert res["count"] == 120 and not res["randomised"]
    assert 0.3 < acc["pgd_linf"] < acc["natural"]            # a genuinely robust-looking model
    assert acc["aa_linf"] <= acc["pgd_linf"]
    assert "| aa_linf |" in r.stdout


@pytest.mark.slow
def test_eot_pgd_is_not_weaker_than_pgd_on_a_noise_injection_model(tmp_path_factory):
    # The old demo (BasicNet, 32x32, eps 0.2), where this order was measured. On the 8x8
    # SmallCNN demo with the same noise, EOT-4 PGD left MORE standing than PGD (68.6 vs 63.3 %,
    # 120 examples, 3 repeats): a finding for the README, not something this test can assert.
    # No end-of-run check: on a randomised model it is EOT-20 AutoAttack, minutes.
    run = train(tmp_path_factory, "noise", "model.input_noise=0.2", "optim.epochs=4",
                "optim.milestones=[3]", *DEMO_EPS02, *NO_CHECK)
    r = evaluate(f"run={run}", "suite=eot", "suite.attacks=[natural,pgd_linf,eot_pgd_linf]",
                 *SMALL)
    assert r.returncode == 0, r.stderr[-3000:]
    res = read(run / "eval/eot.json")
    assert res["randomised"] and res["repeats"] == 3
    a = res["attacks"]
    assert all(len(v["runs"]) == 3 for v in a.values())       # mean ± std over repeats
    assert a["eot_pgd_linf"]["acc"] <= a["pgd_linf"]["acc"]
    assert " ± " in r.stdout


class Quantise(nn.Module):
    """Bit-depth reduction in front of a model: round() has zero gradient almost everywhere,
    the textbook way to obfuscate gradients (Athalye et al. 2018)."""

    def __init__(self, model, levels=4):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * (self.levels - 1)) / (self.levels - 1))


def audit_of(run, wrap=None):
    """Run the audit's attacks in process on ``run``'s model (optionally wrapped)."""
    from omegaconf import OmegaConf

    from distadv.compose import load_eval_config
    from distadv.engine.rundir import load_run_config
    from distadv.engine.setup import make_accelerator
    from distadv.eval.audit import audit_attacks, checks
    from distadv.eval.session import load_run
    from distadv.eval.suite_run import AttackPlan, is_randomised, run_attacks
    from distadv.eval.suites import SuiteConfig

    ecfg = load_eval_config([f"run={run}", "suite=full", *SMALL])
    suite = SuiteConfig(**OmegaConf.to_container(ecfg.suite))
    _, model, loader, classes, _ = load_run(ecfg, make_accelerator(load_run_config(run)))
    model = wrap(model) if wrap else model
    rand = is_randomised(model, next(iter(loader))[0])
    res = run_attacks(model, loader, audit_attacks(load_run_config(run), suite, rand, 0),
                      make_accelerator(load_run_config(run)), classes,
                      AttackPlan(log=lambda *a: None))
    return {c["check"]: c for c in checks(load_run_config(run), suite, res, rand)}


@pytest.mark.slow
def test_audit_flags_a_gradient_masked_model_and_passes_an_honest_one(natural_run):
    honest = audit_of(natural_run)
    assert {c["status"] for c in honest.values()} == {"PASS"}, honest
    masked = audit_of(natural_run, Quantise)
    flagged = {k for k, c in masked.items() if c["status"] == "FLAG"}
    assert "square_not_stronger" in flagged, masked
    assert masked["pgd_ge_autoattack"]["gap"] > 0                # AutoAttack (Square) beats PGD


@pytest.mark.slow
def test_full_suite_writes_audit_and_two_processes_equal_one(natural_run, tmp_path):
    """The full suite through the CLI (PASS/FLAG in the JSON and the table); the seed suite
    sharded over 2 real processes counts every example once and matches 1 process."""
    r = evaluate(f"run={natural_run}", "suite=full", *SMALL, threads=2)
    assert r.returncode == 0, r.stderr[-3000:]
    full = read(natural_run / "eval/full.json")
    assert [c["status"] for c in full["audit"]] == ["PASS"] * 6
    assert "| audit check | result | detail |" in r.stdout and "| monotone_in_eps | PASS |" in r.stdout

    one = evaluate(f"run={natural_run}", "suite=seed", f"out={tmp_path / 'one.json'}")
    assert one.returncode == 0, one.stderr[-2000:]
    env = run_env()
    env["ACCELERATE_USE_CPU"] = "1"
    two = subprocess.run(launch_cmd("distadv/evaluate.py", f"run={natural_run}", "suite=seed",
                                           f"out={tmp_path / 'two.json'}"),
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = read(tmp_path / "one.json"), read(tmp_path / "two.json")
    assert a["world_size"] == 1 and b["world_size"] == 2 and a["count"] == b["count"] == 359
    for k in ("natural", "fgsm"):                              # no randomness: identical
        assert a["attacks"][k]["acc"] == b["attacks"][k]["acc"]
    for k in ("pgd_linf", "pgd_l2"):                           # random starts differ by rank
        assert abs(a["attacks"][k]["acc"] - b["attacks"][k]["acc"]) <= 3 / 359
    # The training loop's final test used the same suite code: natural and FGSM agree exactly.
    test = read(natural_run / "results.json")["test"]
    assert test["natural"] == a["attacks"]["natural"]["acc"] and test["fgsm"] == a["attacks"]["fgsm"]["acc"]


@pytest.mark.slow
def test_killed_evaluation_resumes_without_recomputing(natural_run, tmp_path):
    out = tmp_path / "r.json"
    args = [PY, str(ROOT / "distadv/evaluate.py"), f"run={natural_run}", "suite=full", *SMALL,
            f"out={out}"]
    proc = subprocess.Popen(args, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = out.with_suffix(".partial.json")
    end = time.monotonic() + 300
    while time.monotonic() < end and not (partial.exists() and len(read(partial)["attacks"]) >= 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read(partial)["attacks"]
    assert 3 <= len(before) < 14 and not out.exists()
    r = subprocess.run(args, env=run_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    for name, v in before.items():
        assert f"{name}: done before, not recomputed" in r.stdout
        assert read(out)["attacks"][name] == v
    assert not partial.exists()
    again = subprocess.run(args, env=run_env(), capture_output=True, text=True, timeout=300)
    assert "already complete" in again.stdout


@pytest.mark.parametrize("args, message", [
    (["suite=nope"], "unknown suite 'nope'; valid suites: autoattack, eot, full, lwta, seed"),
    (["suite=seed", "suite.attacks=[natural,pgd_foo]"], "unknown attack(s) pgd_foo in suite 'seed'; valid for this run: natural, pgd_linf"),
    (["suite=seed", "suite.nope=1"], "unknown key 'suite.nope'"),
    (["suite=seed", "suite.steps=many"], "wrong type for 'suite.steps'"),
    (["suite=autoattack", "suite.aa_components=[apgd-ce,fab-x]"], "unknown AutoAttack components ['fab-x']; valid: apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square"),
    (["suite=autoattack", "suite.aa_version=strong"], "unknown AutoAttack version 'strong'; valid: auto, standard, rand, plus"),
    (["suite=seed", "max_examples=0"], "max_examples must be >= 1, got 0"),
    (["suite=seed", "checkpoint=nothing.safetensors"], "no checkpoint at nothing.safetensors"),
])
def test_bad_input_is_one_line(args, message, natural_run):
    r = evaluate(f"run={natural_run}", *args)
    assert r.returncode == 2 and r.stderr.startswith("distadv: error: ") and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_not_a_run_directory(tmp_path):
    r = evaluate(f"run={tmp_path}", "suite=seed")
    assert r.returncode == 2 and "is not a run directory (no config.yaml)" in r.stderr


@pytest.mark.slow
def test_sharded_autoattack_matches_the_official_package(natural_run, tmp_path):
    """pyautoattack's own run_standard_evaluation (one process, the first 60 test examples)
    against distadv's sharded runner on the same examples and checkpoint. One process, one
    batch: the same calls with the same seeds, so the per-example verdicts are identical. Two
    processes: each rank attacks its own 30 examples, so APGD's random starts (drawn per
    batch from the package's seed) differ and an example near the boundary may go the other
    way; every example is still counted once, and the verdicts agree but for a few."""
    from pyautoattack import AutoAttack as Official

    from distadv.compose import load_eval_config
    from distadv.engine.rundir import load_run_config
    from distadv.engine.setup import make_accelerator
    from distadv.eval.session import load_run

    # 60 examples and Square at 1,000 queries, on both sides alike (the package's 5,000 on 120
    # examples made this one test 6 minutes, three full AutoAttacks of a BasicNet)
    n, queries = 60, 1000
    ecfg = load_eval_config([f"run={natural_run}", "suite=autoattack", f"max_examples={n}"])
    run_cfg, model, loader, _, _ = load_run(ecfg, make_accelerator(load_run_config(natural_run)))
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    assert len(x) == n
    eps = run_cfg.eval_attacks.pgd_linf.eps
    official = Official(model, norm="Linf", eps=eps, seed=0, version="standard")
    official.square.n_queries = queries
    x_adv, _ = official.run_standard_evaluation(x, y, batch_size=250)
    with torch.no_grad():
        ref = "".join(str(int(v)) for v in (model(x_adv).argmax(1) == y).tolist())

    args = [f"run={natural_run}", "suite=autoattack", "suite.attacks=[aa_linf]", f"max_examples={n}",
            f"suite.aa_square_queries={queries}"]
    one = evaluate(*args, f"out={tmp_path / 'one.json'}")
    assert one.returncode == 0, one.stderr[-3000:]
    env = dict(run_env(), ACCELERATE_USE_CPU="1")
    two = subprocess.run(launch_cmd("distadv/evaluate.py", *args, f"out={tmp_path / 'two.json'}"),
                         env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = read(tmp_path / "one.json"), read(tmp_path / "two.json")
    assert a["world_size"] == 1 and b["world_size"] == 2 and a["count"] == b["count"] == n
    va, vb = a["attacks"]["aa_linf"]["verdicts"], b["attacks"]["aa_linf"]["verdicts"]
    assert "version standard; CHANGED from the package's budgets: square_queries 5000 -> 1000" \
        in a["attacks"]["aa_linf"]["attack"]
    assert va == ref                                              # one process: identical
    differ = sum(p != q for p, q in zip(vb, ref))
    assert len(vb) == n and differ <= 3, (differ, vb, ref)        # 2 processes
    assert a["attacks"]["aa_linf"]["acc"] == pytest.approx(ref.count("1") / n)
    assert 0 < ref.count("1") < n          # a model with something left to attack
