"""Configuration: composition, one-line errors with the valid choices, safe run directories."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distadv.compose import load_config, recipe_names
from distadv.errors import ConfigError
from distadv.train import main
from tests.conftest import ROOT, run_env

SEED_RECIPES = {"demo", "basic_linf", "basic_l2", "basic_fgsm", "wrn18_linf", "wrn18_mat",
                "resnet20_mat", "vgg11_mat", "basic_noise", "wrn18_noise", "noisenet20",
                "wider_wrn"}


def test_every_seed_experiment_has_a_recipe():
    assert SEED_RECIPES <= set(recipe_names())


def test_overrides_apply_and_are_typed():
    cfg = load_config(["recipe=wider_wrn", "optim.lr=0.1", "train_attacks.linf.eps=0.05"])
    assert cfg.optim.lr == 0.1 and cfg.train_attacks.linf.eps == 0.05
    assert cfg.model.width == 1.25 and cfg.strategy.natural_fraction == 0.05
    assert cfg.recipe == "wider_wrn"


def test_seed_hyperparameters():
    t1 = load_config(["recipe=basic_linf"])
    assert (t1.optim.lr, t1.optim.epochs, list(t1.optim.milestones)) == (0.01, 40, [20, 30])
    assert (t1.train_attacks.linf.eps, t1.train_attacks.linf.alpha) == (0.03, 0.0075)
    t3 = load_config(["recipe=resnet20_mat"])
    assert (t3.optim.epochs, list(t3.optim.milestones)) == (50, [30, 40])
    assert set(t3.train_attacks) == {"linf", "l2"} and t3.strategy.name == "mat"


@pytest.mark.parametrize("overrides,pattern", [
    (["recipe=nope"], r"unknown recipe 'nope'; valid recipes: .*basic_linf.*wider_wrn"),
    (["optim.lrr=0.1"], r"unknown key 'optim.lrr'.*valid keys there: epochs, lr"),
    (["bogus=1"], r"unknown key 'bogus'.*valid keys there: recipe, name"),
    (["optim.lr=fast"], r"wrong type for 'optim.lr': 'fast' is not a valid float"),
    (["data.batch_size=1.5"], r"wrong type for 'data.batch_size'"),
    (["train_attacks.linf.eps=0"], r"train_attacks.linf.eps must be > 0"),
    (["eval_attacks.pgd_l2.eps=-1"], r"eval_attacks.pgd_l2.eps must be > 0"),
    (["train_attacks.linf.steps=0"], r"train_attacks.linf.steps must be >= 1"),
    (["train_attacks.linf.alpha=0"], r"train_attacks.linf.alpha must be > 0"),
    (["train_attacks.linf.norm=l1"], r"train_attacks.linf.norm='l1' is not valid; choose one of: linf, l2"),
    (["model.name=resnet9000"], r"model.name='resnet9000' is not valid; choose one of: basicnet"),
    (["strategy.name=mat"], r"strategy 'mat' takes 2-8 train_attacks"),
    (["early_stop.metric=pgd_l1"], r"early_stop.metric='pgd_l1' is not valid; choose one of: natural, pgd_linf"),
    (["name=../escape"], r"not a safe run name"),
    (["runtime.precision=fp8"], r"runtime.precision='fp8' is not valid; choose one of: fp32, bf16, fp16"),
    (["autoattack.version=strong"], r"unknown autoattack.version 'strong'; valid: auto, standard, rand, plus"),
    (["autoattack.attacks=[apgd-ce,pgd]"], r"unknown autoattack.attacks \['pgd'\]; valid: apgd-ce, apgd-dlr, apgd-t"),
    (["autoattack.attacks=[]"], r"unknown autoattack.attacks \(empty list\)"),
    (["autoattack.max_examples=0"], r"autoattack.max_examples must be >= 1 .*got 0; autoattack.enabled=false skips"),
    (["data.test_size=0"], r"data.test_size must be >= 1"),
    (["autoattack.steps=0"], r"autoattack.steps must be >= 1 \(or null for the package's budget\), got 0"),
    (["autoattack.steps=0"], r"autoattack.steps must be >= 1 \(or null for the package's budget\), got 0"),
    (["data.image_size=12"], r"data.image_size must be one of 8, 16, 24, 32 \(multiples of the native 8x8\), got 12"),
    (["recipe=fmnist_linf", "data.image_size=8"], r"data.image_size is only for digits, not 'fashion_mnist'; remove data.image_size"),
    (["model.name=basicnet"], r"model.name=basicnet does not fit digits at 8x8: BasicNet needs images of at least 16 pixels.*larger data.image_size"),
])
def test_bad_input_is_one_clear_line(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(overrides)
    assert "\n" not in str(info.value)


def test_sync_bn_composes_and_a_gpu_grid_is_accepted_on_a_cpu_machine(tmp_path, capsys):
    """Issue 16: runtime.sync_bn=true is a property of where the run starts, not of the machine
    composing the config: a GPU grid is composed and submitted from a CPU login node."""
    from distadv.grid.submit import submit
    assert load_config(["recipe=demo", "runtime.sync_bn=true"]).runtime.sync_bn is True
    gd = tmp_path / "g"     # a dry run asks SLURM nothing (no job recorded) and writes nothing
    summary = submit("demo", "local", str(gd), ["runtime.sync_bn=true"], dry_run=True)
    assert len(summary["submitted"]) == 4 and summary["array"] is None
    assert "dry run: would submit 4 element(s)" in capsys.readouterr().out
    assert not (gd / "grid.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="SyncBN runs where GPUs exist")
def test_sync_bn_run_on_cpu_is_refused_at_start_in_one_line(tmp_path, capsys):
    """The run itself refuses SyncBN without GPUs: one line naming the fix, exit 2, and the run
    directory is not created (the check comes before any write)."""
    run = tmp_path / "r"
    assert main(["recipe=demo", f"run_dir={run}", "runtime.sync_bn=true", "optim.epochs=1",
                 "runtime.max_steps_per_epoch=1", "autoattack.enabled=false",
                 "log.progress=never"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["distadv: error: runtime.sync_bn=true needs GPUs (torch's SyncBatchNorm "
                   "refuses CPU modules); set runtime.sync_bn=false"]
    assert not run.exists()


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real (tiny) finished demo run to aim bad commands at."""
    run = tmp_path_factory.mktemp("runs") / "demo"
    assert main(["recipe=demo", f"run_dir={run}", "optim.epochs=1",
                 "runtime.max_steps_per_epoch=2", "log.progress=never"]) == 0
    return run


@pytest.mark.parametrize("bad", [
    ["recipe=nope"], ["optim.lrr=1"], ["optim.lr=abc"], ["train_attacks.linf.eps=0"],
    ["train_attacks.linf.steps=0"], ["recipe=basic_linf"], ["optim.lr=0.5"],
    ["data.name=cifar10", "data.root=/nonexistent"],
])
def test_bad_input_leaves_existing_run_untouched(finished_run, bad, capsys):
    before = _snapshot(finished_run)
    assert main([*bad, f"run_dir={finished_run}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distadv: error: ")
    assert _snapshot(finished_run) == before


def test_different_recipe_is_refused_with_the_differences(finished_run, capsys):
    assert main(["recipe=basic_linf", f"run_dir={finished_run}"]) == 2
    err = capsys.readouterr().err
    assert "holds a different run (recipe 'demo'" in err and "nothing was changed" in err


def test_missing_data_directory_names_path_and_flag(tmp_path, capsys):
    run = tmp_path / "cifar_run"
    assert main(["recipe=basic_linf", f"data.root={tmp_path / 'nowhere'}", f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert "cifar10 not found" in err and "nowhere" in err and "data.download=true" in err
    assert "data_batch_1" in err
    assert not run.exists()


@pytest.mark.parametrize("bad", ["autoattack.version=strong", "autoattack.attacks=[fab-x]",
                                 "autoattack.max_examples=0"])
def test_autoattack_block_bad_input_exits_2_before_writing(tmp_path, bad):
    proc = subprocess.run([sys.executable, str(ROOT / "distadv/train.py"), bad,
                           f"run_dir={tmp_path / 'x'}"], capture_output=True, text=True,
                          env=run_env(), timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("distadv: error: ") and "autoattack." in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_cli_exit_status_and_single_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "distadv/train.py"), "recipe=nope",
                           f"run_dir={tmp_path / 'x'}"], capture_output=True, text=True,
                          env=run_env(), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("distadv: error: unknown recipe 'nope'")
    assert len(proc.stderr.strip().splitlines()) == 1
