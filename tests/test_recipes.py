"""Every recipe composes and trains one tiny step through the real loop, on synthetic data
of its data set's shape (the CPU debug variant of each recipe)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from distadv.compose import load_config, recipe_names
from distadv.engine.fit import fit
from tests.conftest import ROOT, run_env

# data.test_size=4: the synthetic test split is 16 images and every eval attack runs on all
# of them; the check takes 4 anyway (the WRN recipes' evaluation was ~40 % of their time)
TINY = ["data.synthetic=true", "data.synthetic_size=8", "data.val_size=4", "data.test_size=4",
        "data.batch_size=4", "data.eval_batch_size=4", "optim.epochs=1", "runtime.max_steps_per_epoch=1",
        "log.progress=never", "log.tensorboard=false",
        # the check's whole path at a token budget: at the package's (EOT 20 x 10 APGD runs
        # x 100 steps on a randomised ResNet) one recipe took minutes
        "autoattack.steps=1", "autoattack.target_classes=1", "autoattack.max_examples=4"]


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """A generated stand-in for the DM-AT recipes, made as the README says: the jitter
    generator over the recipe's (synthetic) training split, then the import."""
    root = tmp_path_factory.mktemp("standin")
    data = ["recipe=dm_wrn28_10", "data.synthetic=true", "data.synthetic_size=200"]  # all classes
    for cmd in (["tools/generate_set.py", "--generator", "jitter", "--count", "40", "--out",
                 str(root / "g.npz"), "--", *data],
                ["tools/import_generated.py", str(root / "g.npz"), "--out", str(root / "set")]):
        r = subprocess.run([sys.executable, str(ROOT / cmd[0]), *cmd[1:]], cwd=ROOT,
                           env=run_env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    return root / "set"


# One CPU step of the 267M-parameter WRN-70-16 ran past 10 minutes here: dm_wrn70_16 is its
# twin dm_wrn28_10 (which trains a tiny step below) plus exactly its own keys; so is
# trades_ema_wrn28_10_silu, dm_wrn28_10 without the generated data (saves CI 90 s); and lwta_wrn.
TWINS = {"dm_wrn70_16": ("dm_wrn28_10", {"model.name": "wrn70_16_swish", "data.batch_size": 1024,
                                         "data.extra": "data/dm_edm_50m", "optim.epochs": 2000}),
         "trades_ema_wrn28_10_silu": ("dm_wrn28_10", {"data.extra": None, "data.epoch_samples": None}),
         # the 46M-parameter LWTA WRN-34-10 is lwta_resnet20's training on a wider net
         "lwta_wrn": ("lwta_resnet20", {"model.name": "lwta_wrn34_10"})}


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("recipe", sorted(TWINS))
def test_heavy_recipe_is_its_twin_plus_its_own_keys(recipe):
    twin, own = TWINS[recipe]
    a, b = (_flat(OmegaConf.to_container(load_config([f"recipe={r}"]), resolve=True))
            for r in (recipe, twin))
    assert {k: a[k] for k in a if a[k] != b.get(k)} == {"recipe": recipe, **own}


@pytest.mark.parametrize("recipe", [r for r in recipe_names() if r not in TWINS])
def test_recipe_runs_one_tiny_step(recipe, tmp_path, standin):
    extra = [f"data.extra={standin}"] if load_config([f"recipe={recipe}"]).data.extra else []
    cfg = load_config([f"recipe={recipe}", f"run_dir={tmp_path / recipe}", *TINY, *extra])
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
