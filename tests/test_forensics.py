"""tools/forensics.py on a real adversarially trained digits run: the labelled set's splits
are disjoint, the detector separates clean from PGD-L-inf far above chance over seeds, the
adaptive attack lowers its detection rate, outputs are atomic (a kill mid-write leaves no
partial file and the rerun resumes), 2 processes make the same set as 1, and bad input is one
line with exit status 2."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import NO_CHECK, ROOT, run_env

from tools.procs import launch_cmd

PY = sys.executable
# Small budgets: these tests are about properties of the study, not the paper's numbers.
CHEAP = ["aa_steps=10", "square_queries=100", "detector.epochs=20", "adaptive.steps=20",
         "adaptive.weights=[10.0]"]


def forensics(*args, env=None, timeout=600):
    """Run tools/forensics.py on one process."""
    return subprocess.run([PY, str(ROOT / "tools/forensics.py"), *args], env=env or run_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo recipe (SmallCNN, PGD-L-inf training at eps 0.1 on 8x8 digits), ~15 s."""
    root = tmp_path_factory.mktemp("forensics")
    r = subprocess.run([PY, str(ROOT / "distadv/train.py"), "recipe=demo", f"runs_root={root}",
                        "name=demo", *NO_CHECK], env=run_env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return root / "demo"


@pytest.fixture(scope="module")
def study(demo_run):
    """The whole study on the demo run, default attacks at small budgets (~15 s)."""
    r = forensics(f"run={demo_run}", *CHEAP)
    assert r.returncode == 0, r.stderr[-3000:]
    return demo_run / "forensics", r.stdout


def _store(out):
    from distadv.forensics.store import Store
    meta = json.loads(_metadata(out / "chunks" / "train-clean.safetensors"))
    return Store(out, {k: v for k, v in meta.items() if k != "chunk"})


def _metadata(path):
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()["distadv_forensics"]


def test_labelled_set_splits_are_disjoint_and_complete(study):
    from distadv.data.digits import digits_train_test
    from distadv.forensics.dataset import image_digests, labelled_set

    out, stdout = study
    names = ["fgsm", "pgd_linf", "pgd_l2", "apgd_ce_linf", "square_linf"]
    store = _store(out)
    train, test = labelled_set(store, "train", names), labelled_set(store, "test", names)
    # Disjoint by content, not only by index: no clean source image of one split is in the other.
    assert len(train.digests) == 200 and len(test.digests) == 359
    assert not set(train.digests) & set(test.digests)
    # The test split's sources are the run's test set itself (index i = test image i).
    _, run_test = digits_train_test(8)
    assert image_digests(test.images[test.of("clean")]) == image_digests(run_test.images)
    # PGD always perturbs: every source image has its PGD image; AutoAttack's components keep
    # only the images they fooled, the rest is dropped (and counted), never labelled "attack".
    for s in (train, test):
        assert s.of("pgd_linf").sum() == s.of("clean").sum()
        assert s.dropped["apgd_ce_linf"] + s.of("apgd_ce_linf").sum() == s.of("clean").sum()
        eps = (s.images[s.of("pgd_linf")] - s.images[s.of("clean")]).abs().amax()
        assert 0.09 < eps <= 0.1 + 1e-6                  # the run's radius
    report = json.loads((out / "report.json").read_text())
    assert report["disjoint_sources"] and report["splits"]["test"]["source_images"] == 359
    assert report["splits"]["train"]["dropped_unchanged"] == train.dropped
    for f in ("report.json", "confusion.png", "roc.png", "detector.safetensors", "baseline.safetensors"):
        assert (out / f).stat().st_size > 0
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "| pgd_linf |" in stdout and "| adaptive_w10 |" in stdout


def test_detector_separates_clean_from_pgd_linf_far_above_chance_over_seeds(study):
    from distadv.forensics.dataset import labelled_set
    from distadv.forensics.detector import new_detector, probabilities, train_detector
    from distadv.forensics.metrics import adversarial_score, auc

    out, _ = study
    store = _store(out)
    train, test = (labelled_set(store, s, ["pgd_linf"]) for s in ("train", "test"))

    class D:  # the detector settings of CHEAP
        epochs, lr, batch_size, width = 20, 0.001, 64, 32

    aucs = []
    for seed in range(3):
        D.seed = seed
        det = train_detector(new_detector(1, 2, D, residual=True), train.images, train.kind, D,
                             device="cpu", log=lambda *a: None)
        s = adversarial_score(probabilities(det, test.images, "cpu"))
        aucs.append(auc(s[test.kind.numpy() == 0], s[test.kind.numpy() == 1]))
    # Measured (AVX-512 CPU; 200 train / 359 test source images; detector seeds 0-4): AUC
    # 0.955-0.963 on this run (seed 0), 0.945-0.959 on a demo run trained with seed 1. Chance
    # is 0.5; the asserted margin (+0.35, mean +0.4) is under the smallest value measured.
    assert min(aucs) > 0.85, aucs
    assert np.mean(aucs) > 0.9, aucs


def test_adaptive_attack_lowers_the_detection_rate(study):
    out, _ = study
    report = json.loads((out / "report.json").read_text())
    plain = report["adaptive"]["pgd_linf (detector not attacked)"]
    adaptive = report["adaptive"]["adaptive_w10"]
    assert plain["count"] == adaptive["count"] == 359          # the same test images
    # Measured at these budgets (AVX-512; demo runs of seed 0 and 1): PGD-L-inf detected 62.7
    # and 67.7% at 5% FPR; the adaptive PGD (weight 10, 20 steps): 0.0 and 0.0%.
    assert plain["detected"] > 0.4
    assert adaptive["detected"] < plain["detected"] / 2
    assert report["detector"]["fpr_measured"] <= 0.05


def test_a_kill_mid_write_leaves_no_partial_file_and_the_rerun_resumes(demo_run, tmp_path):
    out = tmp_path / "f"
    args = [f"run={demo_run}", f"out={out}", "attacks=[fgsm,pgd_linf]", "max_examples=60",
            "detector.epochs=3", "adaptive.steps=3", "adaptive.weights=[1.0]"]
    env = run_env()
    env["DISTADV_CRASH_AT"] = "checkpoint.written:3"   # the 3rd file: fsynced, not yet renamed
    r = forensics(*args, env=env)
    assert r.returncode == -9, r.stderr[-2000:]
    chunks = out / "chunks"
    done = sorted(p.name for p in chunks.glob("*.safetensors"))
    assert done == ["train-clean.safetensors", "train-fgsm.safetensors"]
    assert [p.name for p in chunks.glob(".*")] != []           # the killed writer's temporary
    before = {p: p.read_bytes() for p in chunks.glob("*.safetensors")}
    r = forensics(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "train/clean: done before, not recomputed" in r.stdout
    assert "train/fgsm: done before, not recomputed" in r.stdout
    assert all(p.read_bytes() == b for p, b in before.items())  # kept, not rewritten
    assert [p.name for p in chunks.glob(".*")] == []           # temporaries swept
    assert len(list(chunks.glob("*.safetensors"))) == 7         # 2 splits x 3 + adaptive
    assert json.loads((out / "report.json").read_text())["splits"]["test"]["source_images"] == 60
    # Other settings on the same folder are refused, never mixed in.
    r = forensics(*[a for a in args if not a.startswith("max_examples")], "max_examples=50")
    assert r.returncode == 2 and "made with other settings (differ: max_examples)" in r.stderr


@pytest.mark.slow
def test_two_processes_make_the_same_labelled_set_as_one(demo_run, tmp_path):
    from safetensors.torch import load_file

    args = [f"run={demo_run}", "attacks=[fgsm]", "max_examples=101", "detector.epochs=2",
            "adaptive.steps=2", "adaptive.weights=[1.0]"]
    one = forensics(*args, f"out={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-2000:]
    env = run_env()
    env["ACCELERATE_USE_CPU"] = "1"
    two = subprocess.run(launch_cmd("tools/forensics.py", *args, f"out={tmp_path / 'two'}"),
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    for name in ("train-clean", "train-fgsm", "test-clean", "test-fgsm"):   # no randomness
        a = load_file(tmp_path / "one" / "chunks" / f"{name}.safetensors")
        b = load_file(tmp_path / "two" / "chunks" / f"{name}.safetensors")
        assert torch.equal(a["index"], torch.arange(101))                   # each image once
        assert all(torch.equal(a[k], b[k]) for k in a), name
    rep = json.loads((tmp_path / "two" / "report.json").read_text())
    assert rep["world_size"] == 2 and rep["splits"]["test"]["source_images"] == 101


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    r = forensics(f"run={tmp_path}")
    assert r.returncode == 2 and r.stderr.startswith("distadv: error: "), r.stderr
    assert "is not a run directory (no config.yaml)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["nope=1"], "unknown key 'nope'"),
    (["detector.epochs=many"], "wrong type for 'detector.epochs'"),
    (["attacks=[fgsm,pgd_foo]"], "unknown attack(s) pgd_foo in attacks=; valid for this run: "
                                  "pgd_linf, pgd_l2, fgsm, apgd_ce_linf, apgd_ce_l2"),
    (["fpr=0"], "fpr must be in (0, 1)"),
    (["checkpoint=nothing.safetensors"], "no checkpoint at nothing.safetensors"),
])
def test_bad_input_is_one_line(args, message, demo_run):
    r = forensics(f"run={demo_run}", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_help_lists_every_key_with_its_meaning_fast():
    import dataclasses

    from distadv.forensics.config import ForensicsConfig

    r = forensics("--help")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    for f in dataclasses.fields(ForensicsConfig):
        assert f"    {f.name}" in r.stdout, f.name
    assert "adaptive.weights: List[float] = [1.0, 10.0]" in r.stdout
    assert "detector.epochs: int = 30" in r.stdout and "report.json, confusion.png" in r.stdout
