"""The end-of-run AutoAttack cross-check, on real digits runs: an honest model (the demo) gets
no flag and its numbers equal distadv/evaluate.py's on the same checkpoint and examples; a
gradient-masked (input-quantised) model is flagged; a disabled check is flagged as unchecked;
the printed table carries the AutoAttack row and the FLAG lines."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import ROOT, run_env

from distadv.compose import load_config
from distadv.engine.fit import fit
from distadv.engine.report import results_table
from distadv.models import MODELS, BasicNet

PY = sys.executable


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`make demo`'s recipe as it ships (one process, the whole schedule)."""
    root = tmp_path_factory.mktemp("demo")
    r = subprocess.run([PY, str(ROOT / "distadv/train.py"), "recipe=demo", f"runs_root={root}",
                        "name=demo", "log.progress=never"], env=run_env(), capture_output=True,
                       text=True, timeout=1800)   # one thread: ~4 min alone, 15 under load
    assert r.returncode == 0, r.stderr[-3000:]
    return root / "demo", r.stdout


@pytest.mark.slow
def test_honest_demo_gets_no_flag_and_equals_evaluate_py(demo_run, tmp_path):
    run, stdout = demo_run
    res = json.loads((run / "results.json").read_text())
    check = res["autoattack"]
    assert check["enabled"] and check["examples"] == res["test_examples"] == 359
    assert "apgd-ce, apgd-t" in check["attack"] and "pyautoattack 0.2.0" in check["attack"]
    assert res["flags"] == [], res["flags"]
    assert abs(check["gaps"]["aa_linf"]) <= 0.015
    assert "| L-inf AutoAttack (first 359 test examples) |" in stdout and "FLAG" not in stdout
    assert 0 < check["fraction_of_run"] < 1 and check["seconds"] > 0

    # The same numbers from distadv/evaluate.py: the check is that code, on the same examples.
    out = tmp_path / "same.json"
    r = subprocess.run([PY, str(ROOT / "distadv/evaluate.py"), f"run={run}", "suite=autoattack",
                        "suite.attacks=[pgd_linf,aa_linf]", "suite.aa_components=[apgd-ce,apgd-t]",
                        "suite.repeats=1", "max_examples=1000", f"out={out}"],
                       env=run_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    ev = json.loads(out.read_text())["attacks"]
    mine = json.loads((run / "eval/autoattack_check.json").read_text())["attacks"]
    for k in ("pgd_linf", "aa_linf"):
        assert ev[k]["acc"] == check["same_examples"][k] == mine[k]["acc"]
        assert ev[k]["verdicts"] == mine[k]["verdicts"] and len(ev[k]["verdicts"]) == 359
    assert res["test"]["aa_linf"] == ev["aa_linf"]["acc"]
    # The table's PGD row is the final test's own run (training's seeds): another random start
    # on the same 359 examples, so it may differ by a few examples (README: check cost).
    assert abs(res["test"]["pgd_linf"] - ev["pgd_linf"]["acc"]) <= 5 / 359


class Quantised(nn.Module):
    """BasicNet behind bit-depth reduction (round() has zero gradient almost everywhere), the
    audit tests' textbook gradient masking (Athalye et al. 2018)."""

    def __init__(self, num_classes=10, in_channels=3, image_size=32):
        super().__init__()
        self.net = BasicNet(num_classes, in_channels, image_size)

    def forward(self, x):
        return self.net(torch.round(x * 2) / 2)


@pytest.fixture
def quantised_model(monkeypatch):
    monkeypatch.setitem(MODELS._table, "test_quantised", Quantised)
    return "test_quantised"


@pytest.mark.slow
def test_gradient_masked_model_is_flagged(quantised_model, tmp_path, capsys):
    # Quantised wraps BasicNet (>= 16 pixels): the 32x32 digits
    cfg = load_config(["recipe=demo", f"model.name={quantised_model}", "data.image_size=32",
                       "strategy.name=natural",
                       "strategy.eps_warmup_epochs=0", "early_stop.metric=natural",
                       "optim.epochs=3", "log.progress=never", "log.tensorboard=false",
                       f"run_dir={tmp_path / 'q'}"])
    res = fit(cfg)
    out = capsys.readouterr().out
    assert res["flags"], res["autoattack"]
    assert any("zero gradient" in f or "overstates robustness" in f for f in res["flags"])
    assert "pgd_linf" in res["autoattack"]["flagged"]
    assert "\nFLAG: " in out and "| L-inf AutoAttack" in out
    on_disk = json.loads((tmp_path / "q/results.json").read_text())
    assert on_disk["flags"] == res["flags"] and "aa_linf" in on_disk["test"]


def test_overstated_pgd_prints_the_flag_line():
    """The table of a results.json whose PGD exceeds AutoAttack by 31 points (the old demo)."""
    res = {"best_epoch": 3, "recipe": "demo", "test": {"natural": 0.97, "pgd_linf": 0.855, "aa_linf": 0.546},
           "autoattack": {"enabled": True, "examples": 359, "attack": "official AutoAttack",
                          "same_examples": {"pgd_linf": 0.855, "aa_linf": 0.546}},
           "flags": ["PGD-L-inf overstates robustness by 30.9 points (gradient masking?); quote AutoAttack"]}
    text = results_table(res)
    assert "| L-inf AutoAttack (first 359 test examples) | 54.60 |" in text
    assert text.splitlines()[-1] == ("FLAG: PGD-L-inf overstates robustness by 30.9 points "
                                     "(gradient masking?); quote AutoAttack")


def test_disabled_check_is_itself_a_flag(tmp_path):
    cfg = load_config(["recipe=demo", "optim.epochs=1", "runtime.max_steps_per_epoch=2",
                       "autoattack.enabled=false", "log.progress=never", "log.tensorboard=false",
                       f"run_dir={tmp_path / 'off'}"])
    res = fit(cfg)
    assert res["autoattack"] == {"enabled": False} and "aa_linf" not in res["test"]
    assert res["flags"] == ["robustness not cross-checked by AutoAttack (autoattack.enabled=false)"]


def test_flag_threshold_follows_the_tolerance():
    from distadv.eval.crosscheck import flags_of
    cfg = load_config(["recipe=demo", "autoattack.tolerance=0.015"])
    near = {"pgd_linf": {"acc": 0.800}, "aa_linf": {"acc": 0.790}}
    far = {"pgd_linf": {"acc": 0.800}, "aa_linf": {"acc": 0.780}}
    assert flags_of(cfg, near) == []
    (flag,) = flags_of(cfg, far)
    assert flag["metric"] == "pgd_linf" and flag["message"].startswith(
        "PGD-L-inf overstates robustness by 2.0 points (gradient masking?); quote AutoAttack")
    l2 = load_config(["recipe=basic_l2"])
    from distadv.eval.crosscheck import checked_norms
    assert checked_norms(l2) == ["linf", "l2"] and checked_norms(cfg) == ["linf"]
