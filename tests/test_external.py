"""distadv/evaluate.py on a model trained elsewhere (``model=MODULE:FACTORY checkpoint=FILE
data=NAME``): bad input is one line (exit 2, nothing written); the checkpoint layouts load to
the same model; results, resume and refusal as for a run; every suite; 2 processes give the
numbers of 1; and the official AutoAttack package's own example checkpoint (a CIFAR-10
ResNet-18) gets the verdicts of the package's run_standard_evaluation."""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import ROOT, run_env
from tools.procs import launch_cmd

from distadv.evaluate import main

PY = sys.executable
FACTORIES = "tests.scripts.external_models"
CNN = f"model={FACTORIES}:small_cnn"
DIGITS = ["data=digits", "threat.eps=0.1"]
AA_EXAMPLES = Path(__import__("pyautoattack").__file__).parent / "examples"


def evaluate(argv, capsys):
    """distadv/evaluate.py's main in this process: (status, stdout, stderr)."""
    status = main(list(argv), close_group=False)
    cap = capsys.readouterr()
    return status, cap.out, cap.err


def read(path):
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, trained_digits_model):
    """conftest's trained small CNN saved the ways other labs save: a plain state dict, one
    under 'state_dict' with optimizer-like extras, a DataParallel 'module.' prefix, safetensors."""
    d = tmp_path_factory.mktemp("ckpts")
    sd = {k: v.clone() for k, v in trained_digits_model.state_dict().items()}
    torch.save(sd, d / "plain.pt")
    torch.save({"state_dict": sd, "epoch": 7, "best_acc": 0.9}, d / "wrapped.pth")
    torch.save({f"module.{k}": v for k, v in sd.items()}, d / "dataparallel.pt")
    save_file(sd, str(d / "weights.safetensors"))
    other = {k: v + 0.01 if v.is_floating_point() else v for k, v in sd.items()}
    (d / "other").mkdir()
    torch.save(other, d / "other" / "plain.pt")
    return d


def hostile(path: Path) -> Path:
    """A .pt whose pickle would run code (os.system) when loaded without weights_only."""
    class Boom:
        def __reduce__(self):
            return (__import__("os").system, ("echo pwned > " + str(path.parent / "pwned"),))
    path.write_bytes(pickle.dumps({"w": Boom()}, protocol=2))
    return path


@pytest.mark.parametrize("argv, message", [
    (["run=runs/x", CNN, "checkpoint=x.pt"], "give run= or model=, not both"),
    (["suite=seed"], "give what to evaluate: run=runs/<name> (a distadv run) or model="),
    ([CNN, *DIGITS], "model= needs checkpoint=FILE (.pt, .pth or .safetensors); 'best' names a run's"),
    ([CNN, "checkpoint=CK/plain.pt"], "model= needs data=NAME, got None; valid: cifar10, cifar100, digits"),
    (["model=nosuchpkg.models:resnet", "checkpoint=CK/plain.pt", *DIGITS], "no module 'nosuchpkg.models' importable from"),
    (["model=models/resnet.py:ResNet18", "checkpoint=CK/plain.pt", *DIGITS], "is not module:factory"),
    ([f"model={FACTORIES}:nope", "checkpoint=CK/plain.pt", *DIGITS], "has no callable 'nope' (model=tests.scripts.external_models:nope); callables there: "),
    ([f"model={FACTORIES}:needs_args", "checkpoint=CK/plain.pt", *DIGITS], "needs arguments; the factory is called with none"),
    ([f"model={FACTORIES}:not_a_module", "checkpoint=CK/plain.pt", *DIGITS], "not_a_module() returned dict, not a torch.nn.Module"),
    ([CNN, "checkpoint=CK/missing.pt", *DIGITS], "no checkpoint at CK/missing.pt; with model= checkpoint= takes a .pt"),
    ([CNN, "checkpoint=CK/hostile.pt", *DIGITS], "refused to load CK/hostile.pt: it holds pickled objects other than tensors"),
    ([CNN, "checkpoint=CK/truncated.pt", *DIGITS], "cannot read CK/truncated.pt with torch.load"),
    ([CNN, "checkpoint=CK/notes.txt", *DIGITS], "unknown kind '.txt'"),
    ([f"model={FACTORIES}:seven_classes", "checkpoint=CK/plain.pt", *DIGITS], "does not fit the run's model (Sequential): missing keys [], unexpected keys [0.bias, 0.weight, 1.num_batches_tracked, 1.running_mean, 1.running_var ... (7)], other shapes [1.bias, 1.weight]"),
    ([f"model={FACTORIES}:seven_classes", "checkpoint=none", *DIGITS], "returns (1, 7) for one image; data=digits needs logits of shape (1, 10)"),
    ([CNN, "checkpoint=CK/plain.pt", "data=imagenet"], "model= needs data=NAME, got 'imagenet'"),
    ([CNN, "checkpoint=CK/plain.pt", "data=digits", "threat.norm=l1"], "threat.norm='l1' is not valid; choose one of: linf, l2"),
    ([CNN, "checkpoint=CK/plain.pt", "data=digits", "threat.eps=0"], "threat.eps must be > 0"),
    ([CNN, "checkpoint=CK/plain.pt", *DIGITS, "split=val"], "split=val: a model trained elsewhere has no validation split"),
    ([CNN, "checkpoint=CK/plain.pt", "data=digits", "threat.norm=l2", "suite=full"], "the gradient-masking audit (suite.audit) runs at an L-inf threat"),
    ([CNN, "checkpoint=CK/plain.pt", *DIGITS, "suite.attacks=[aa_l2]"], "no attack of the suite fits threat.norm=linf (skipped: aa_l2)"),
    (["run=runs/x", "threat.eps=0.1"], "threat.*= set with run=: a run's data and threat come from its config"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(argv, message, ckpts, tmp_path, monkeypatch, capsys):
    (ckpts / "truncated.pt").write_bytes((ckpts / "plain.pt").read_bytes()[:2000])
    (ckpts / "notes.txt").write_text("weights? no")
    hostile(ckpts / "hostile.pt")
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("CK/", f"{ckpts}/") for a in argv]
    status, out, err = evaluate(argv, capsys)
    assert status == 2 and err.startswith("distadv: error: "), err
    assert message.replace("CK/", f"{ckpts}/") in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() and not (ckpts / "pwned").exists()


def test_checkpoint_layouts_load_the_same_model_and_results_are_kept(ckpts, tmp_path, monkeypatch, capsys):
    """Plain, 'state_dict'-wrapped, 'module.'-prefixed and safetensors files give one model
    (identical per-example verdicts); the default output is runs/external/<factory>-<stem>/;
    a rerun prints the finished results; another model's weights at the same place are refused."""
    monkeypatch.chdir(tmp_path)
    common = [CNN, *DIGITS, "suite=seed", "max_examples=48"]
    verdicts = {}
    for name in ("plain.pt", "wrapped.pth", "dataparallel.pt", "weights.safetensors"):
        status, out, err = evaluate([*common, f"checkpoint={ckpts / name}"], capsys)
        assert status == 0, err
        stem = Path(name).stem
        res = read(tmp_path / f"runs/external/small_cnn-{stem}/eval/seed.json")
        assert res["model"] == f"{FACTORIES}:small_cnn" and res["data"] == "digits" and res["run"] is None
        assert res["threat"] == {"norm": "linf", "eps": 0.1} and res["skipped"] == ["pgd_l2"]
        assert set(res["attacks"]) == {"natural", "fgsm", "pgd_linf"} and res["count"] == 48
        assert "| pgd_linf |" in out and "skipped (threat.norm=linf): pgd_l2" in out
        verdicts[name] = {k: v["verdicts"] for k, v in res["attacks"].items()}
    assert all(v == verdicts["plain.pt"] for v in verdicts.values())
    nat = verdicts["plain.pt"]["natural"]
    assert nat.count("1") >= 40 and verdicts["plain.pt"]["pgd_linf"].count("1") < nat.count("1")

    status, out, _ = evaluate([*common, f"checkpoint={ckpts / 'plain.pt'}"], capsys)
    assert status == 0 and "is already complete for this checkpoint and suite" in out
    target = tmp_path / "runs/external/small_cnn-plain/eval/seed.json"
    before = target.read_bytes()
    status, _, err = evaluate([*common, f"checkpoint={ckpts / 'other/plain.pt'}"], capsys)
    assert status == 2 and "holds results of another evaluation" in err
    status, _, err = evaluate([*common, f"checkpoint={ckpts / 'plain.pt'}", "threat.eps=0.05"], capsys)
    assert status == 2 and "holds results of another evaluation" in err
    assert target.read_bytes() == before


def test_a_randomised_factory_with_its_own_weights_is_detected_and_repeated(tmp_path, monkeypatch, capsys):
    """checkpoint=none: the factory's weights, fingerprinted by their sha256; the input-noise
    model is found randomised by measurement and evaluated suite.repeats times."""
    monkeypatch.chdir(tmp_path)
    argv = [f"model={FACTORIES}:noisy_cnn", "checkpoint=none", *DIGITS, "suite=eot",
            "suite.repeats=2", "suite.eot_samples=2", "max_examples=16"]
    status, out, err = evaluate(argv, capsys)
    assert status == 0, err
    res = read(tmp_path / "runs/external/noisy_cnn-own-weights/eval/eot.json")
    assert res["randomised"] and res["repeats"] == 2 and res["checkpoint"] == "none"
    assert all(len(v["runs"]) == 2 for v in res["attacks"].values())
    assert set(res["attacks"]) == {"natural", "pgd_linf", "eot_pgd_linf"}
    assert len(res["fingerprint"]["checkpoint"]) == 64 and "randomised: 2 repeats" in out


def test_full_suite_with_audit_on_an_external_model(ckpts, tmp_path, monkeypatch, capsys):
    """suite=full (FGSM, PGD, AutoAttack, EOT-PGD and the audit) at the given threat, with
    budgets cut for time; L2 attacks are skipped for an L-inf threat and said so."""
    monkeypatch.chdir(tmp_path)
    argv = [CNN, f"checkpoint={ckpts / 'plain.pt'}", *DIGITS, "suite=full", "max_examples=24",
            "suite.aa_steps=5", "suite.aa_target_classes=2", "suite.aa_square_queries=50",
            "suite.audit_square_queries=50", "suite.eot_samples=2", "out=full.json"]
    status, out, err = evaluate(argv, capsys)
    assert status == 0, err
    res = read(tmp_path / "full.json")
    assert res["skipped"] == ["pgd_l2", "aa_l2", "eot_pgd_l2"]
    assert {"natural", "fgsm", "pgd_linf", "aa_linf", "eot_pgd_linf"} <= set(res["attacks"])
    assert {c["check"] for c in res["audit"]} == {"monotone_in_eps", "zero_at_large_eps",
                                                  "more_steps_not_better", "square_not_stronger",
                                                  "eot_gap", "pgd_ge_autoattack"}
    assert res["attacks"]["aa_linf"]["acc"] <= res["attacks"]["pgd_linf"]["acc"] + 1 / 24
    assert "| audit check | result | detail |" in out


@pytest.mark.slow
def test_two_processes_give_the_numbers_of_one_from_a_module_in_the_working_directory(ckpts, tmp_path):
    """The factory is a user's own file in the working directory (mymodels.py); 2 processes
    (accelerate launch, gloo) give the natural and FGSM verdicts of 1 exactly, PGD within its
    random starts (drawn per rank)."""
    shutil.copy(ROOT / "tests/scripts/external_models.py", tmp_path / "mymodels.py")
    args = ["model=mymodels:small_cnn", f"checkpoint={ckpts / 'plain.pt'}", *DIGITS,
            "suite=seed", "max_examples=60"]
    one = subprocess.run([PY, str(ROOT / "distadv/evaluate.py"), *args, "out=one.json"], cwd=tmp_path,
                         env=run_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    env = dict(run_env(), ACCELERATE_USE_CPU="1")
    two = subprocess.run(launch_cmd("distadv/evaluate.py", *args, "out=two.json"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = read(tmp_path / "one.json"), read(tmp_path / "two.json")
    assert a["world_size"] == 1 and b["world_size"] == 2 and a["count"] == b["count"] == 60
    for name in ("natural", "fgsm"):
        assert a["attacks"][name]["verdicts"] == b["attacks"][name]["verdicts"]
    pa, pb = a["attacks"]["pgd_linf"]["verdicts"], b["attacks"]["pgd_linf"]["verdicts"]
    differ = sum(p != q for p, q in zip(pa, pb))
    assert differ <= 3, (pa, pb)
    print(f"PGD-L-inf: 1 process {pa.count('1')}/60, 2 processes {pb.count('1')}/60, {differ} differ")


def write_cifar10(root: Path, test_images: np.ndarray, test_labels) -> None:
    """A CIFAR-10 archive in torchvision's real layout (cifar-10-batches-py, latin1 pickles):
    the given test batch, and 4 random images per training batch."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {f"data_batch_{i}": (rng.integers(0, 256, (4, 3072), dtype=np.uint8), [0, 1, 2, 3])
               for i in range(1, 6)}
    batches["test_batch"] = (test_images.reshape(len(test_images), 3072), list(test_labels))
    for name, (data, labels) in batches.items():
        with open(base / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels,
                         "filenames": [f"{name}_{i}.png" for i in range(len(labels))]}, f, protocol=2)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f)


@pytest.mark.slow
def test_the_packages_own_checkpoint_gets_the_packages_autoattack_verdicts(tmp_path, monkeypatch, capsys):
    """pyautoattack's examples/model_test.pt (a CIFAR-10 ResNet-18 that takes [0, 1] images:
    the package's eval.py feeds it ToTensor() output) through model=/checkpoint=/data=cifar10
    end to end, against the package's own AutoAttack(...).run_standard_evaluation on the same
    16 images. The images are seeded smooth colour fields (4x4 noise, bilinearly upsampled,
    stored as uint8) labelled with the model's own clean predictions, so every example is
    clean-correct; at eps 0.001 (~1/4 of a grey level: the model is not robust) some but not
    all survive, so agreement is not 0 = 0. Both sides: the standard version (APGD-CE, APGD-T,
    FAB-T, Square) at the same cut budgets (5 iterations, 1 target class, 20 Square queries;
    ~10 s each on one thread), seed 0, one batch of 16, one process: the same calls with the
    same seeds, so the per-example verdicts must be identical. (Sharded, APGD's random starts
    are drawn per rank's batch and a boundary example may go the other way: tested on digits
    above and in test_evaluate.py.)"""
    from pyautoattack import AutoAttack as Official
    from pyautoattack.examples.resnet import ResNet18

    ckpt = AA_EXAMPLES / "model_test.pt"
    model = ResNet18()
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    model.eval()
    g = torch.Generator().manual_seed(0)
    low = torch.rand(16, 3, 4, 4, generator=g)
    images = (torch.nn.functional.interpolate(low, size=32, mode="bilinear") * 255).round().to(torch.uint8)
    x = images.float() / 255
    with torch.no_grad():
        y = model(x).argmax(1)
    write_cifar10(tmp_path / "cifar", images.numpy(), y.tolist())
    eps, budgets = 0.001, dict(n_iter=5, target_classes=1, queries=20)

    official = Official(model, norm="Linf", eps=eps, seed=0, version="standard", device="cpu")
    official.apgd.n_iter = official.apgd_targeted.n_iter = official.fab.n_iter = budgets["n_iter"]
    official.apgd_targeted.n_target_classes = official.fab.n_target_classes = budgets["target_classes"]
    official.square.n_queries = budgets["queries"]
    x_adv, _ = official.run_standard_evaluation(x, y, batch_size=16)
    with torch.no_grad():
        ref = "".join(str(int(v)) for v in (model(x_adv).argmax(1) == y).tolist())

    monkeypatch.chdir(tmp_path)
    status, out, err = evaluate([
        "model=pyautoattack.examples.resnet:ResNet18", f"checkpoint={ckpt}", "data=cifar10",
        f"data_root={tmp_path / 'cifar'}", "verify_checksums=false", f"threat.eps={eps}",
        "suite=autoattack", f"suite.aa_steps={budgets['n_iter']}",
        f"suite.aa_target_classes={budgets['target_classes']}",
        f"suite.aa_square_queries={budgets['queries']}"], capsys)
    assert status == 0, err
    res = read(tmp_path / "runs/external/ResNet18-model_test/eval/autoattack.json")
    aa = res["attacks"]["aa_linf"]
    assert res["attacks"]["natural"]["verdicts"] == "1" * 16 and res["count"] == 16
    assert "version standard; CHANGED from the package's budgets: n_iter 100 -> 5" in aa["attack"]
    assert aa["verdicts"] == ref, (aa["verdicts"], ref)
    assert 0 < ref.count("1") < 16, ref
    print(f"agreement: distadv {aa['verdicts']} vs package {ref} ({ref.count('1')}/16 robust)")
