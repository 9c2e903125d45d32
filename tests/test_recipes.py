"""Every recipe composes and trains one tiny step through the real loop, on synthetic data
of its data set's shape (the CPU debug variant of each recipe)."""
from __future__ import annotations

import json

import pytest

from distadv.compose import load_config, recipe_names
from distadv.engine.fit import fit

TINY = ["data.synthetic=true", "data.synthetic_size=8", "data.val_size=4", "data.batch_size=4",
        "data.eval_batch_size=4", "optim.epochs=1", "runtime.max_steps_per_epoch=1",
        "log.progress=never", "log.tensorboard=false",
        # the check's whole path at a token budget: at the package's (EOT 20 x 10 APGD runs
        # x 100 steps on a randomised ResNet) one recipe took minutes
        "autoattack.steps=1", "autoattack.target_classes=1", "autoattack.max_examples=4"]


@pytest.mark.parametrize("recipe", recipe_names())
def test_recipe_runs_one_tiny_step(recipe, tmp_path):
    cfg = load_config([f"recipe={recipe}", f"run_dir={tmp_path / recipe}", *TINY])
    for t in [*cfg.train_attacks.values(), *cfg.eval_attacks.values()]:
        t.steps = min(t.steps, 2)   # every piece runs, briefly: a WRN-34-10 pass costs seconds here
    results = fit(cfg)
    assert results["best_epoch"] == 1 and results["epochs_run"] == 1
    # the seed's rows (and the recipe's own, e.g. CW-PGD-40 for selection), plus the end-of-run
    # AutoAttack check (L2 too for L2-trained recipes)
    l2 = any(t.norm == "l2" for t in cfg.train_attacks.values())
    assert {"pgd_linf", "pgd_l2", "fgsm"} <= set(cfg.eval_attacks)
    assert set(results["test"]) == {"natural", *cfg.eval_attacks, "aa_linf",
                                    *(["aa_l2"] if l2 else [])}
    assert results["autoattack"]["enabled"] and results["autoattack"]["examples"] == 4
    assert "CHANGED from the package's budgets: n_iter 100 -> 1" in results["autoattack"]["attack"]
    assert any("below the package's budgets (autoattack.steps=1" in f for f in results["flags"])
    on_disk = json.loads((tmp_path / recipe / "results.json").read_text())
    assert on_disk["test"] == results["test"]
    assert (tmp_path / recipe / "checkpoints" / "best.safetensors").is_file()
