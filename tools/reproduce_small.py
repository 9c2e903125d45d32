"""Reproduce the seed report's claims at small scale on digits (CPU, ~20-30 min):

    python tools/reproduce_small.py [--out runs/reproduce_small] [--quick]

Trains BasicNet / ResNet20 / NoiseNet20 variants of the demo recipe (digits, eps 0.2, L2 2.0),
evaluates them with distadv/evaluate.py and writes REPORT.md plus plots that say, for each
claim, what was measured, whatever it shows. --quick: 3 epochs per run (a smoke test of the
script, not evidence). Runs are resumable: a rerun skips finished runs and evaluations.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

L2 = ["+threat@train_attacks.l2=l2", "train_attacks.l2.eps=2.0", "train_attacks.l2.alpha=0.5",
      "train_attacks.l2.steps=7"]   # the demo's L2 radius, 7 steps like its L-inf attack
# The demo recipe as it was when the README's figures were measured (BasicNet on 32x32
# digits, eps 0.2, L2 2.0); the demo itself now trains SmallCNN on the native 8x8 scans at eps
# 0.1 (README: "the demo model's masking").
DEMO_EPS02 = ["model.name=basicnet", "data.image_size=32", "train_attacks.linf.eps=0.2", "train_attacks.linf.alpha=0.05",
              "eval_attacks.pgd_linf.eps=0.2", "eval_attacks.pgd_linf.alpha=0.05",
              "eval_attacks.pgd_l2.eps=2.0", "eval_attacks.pgd_l2.alpha=0.5",
              "eval_attacks.fgsm.eps=0.2", "eval_attacks.fgsm.alpha=0.2"]
SHORT = ["optim.epochs=10", "optim.milestones=[7,9]", "strategy.eps_warmup_epochs=3"]
RUNS = {  # name -> overrides of the demo recipe (digits, BasicNet, PGD-L-inf eps 0.2)
    "linf": [],
    "l2": ["~train_attacks.linf", *L2],
    "fgsm": ["train_attacks.linf.steps=1", "train_attacks.linf.alpha=0.2",
             "train_attacks.linf.random_start=false"],
    "eps0.05": ["train_attacks.linf.eps=0.05", "train_attacks.linf.alpha=0.0125"],
    "eps0.1": ["train_attacks.linf.eps=0.1", "train_attacks.linf.alpha=0.025"],
    "eps0.3": ["train_attacks.linf.eps=0.3", "train_attacks.linf.alpha=0.075"],
    "mat": ["strategy.name=mat", *L2],
    "overfit": ["optim.epochs=60", "optim.milestones=[30,45]", "early_stop.patience=0"],
    "noise": ["model.input_noise=0.2"],
    # ResNet20s cost ~10x a BasicNet epoch on CPU: 10 epochs keep the script under 30 min.
    "resnet20": ["model.name=resnet20", *SHORT],
    "noisenet20": ["model.name=noisenet20", *SHORT],
}
EPS_CURVE = [("eps0.05", 0.05), ("eps0.1", 0.1), ("linf", 0.2), ("eps0.3", 0.3)]


def sh(args, log):
    """Run a command (one process, 2 threads), appending its output to ``log``."""
    with open(log, "a") as f:
        r = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(args)}; see {log}")


def train(out, name, quick, log):
    """Train one run (skipped if finished); returns its directory. --quick: 3 epochs."""
    overrides = RUNS[name]
    if quick:
        overrides = [o for o in overrides if not o.startswith(("optim.", "strategy.eps"))] + [
            "optim.epochs=3", "optim.milestones=[2]", "strategy.eps_warmup_epochs=1"]
    sh([sys.executable, "distadv/train.py", "recipe=demo", f"runs_root={out}", f"name={name}",
        *DEMO_EPS02, *overrides], log)
    return out / name


def evaluate(run, suite, log, *extra):
    """Evaluate a run with a suite; returns {attack: acc} (and stds)."""
    sh([sys.executable, "distadv/evaluate.py", f"run={run}", f"suite={suite}", *extra], log)
    tag = next((e.split("=", 1)[1] for e in extra if e.startswith("out=")), None)
    res = json.loads(Path(tag).read_text() if tag else (run / "eval" / f"{suite}.json").read_text())
    return {k: (v["acc"], v["std"]) for k, v in res["attacks"].items()}


def _verdict(plain: float, with_eot: float) -> str:
    """Claim 5's reading of a randomised model's gain over its deterministic twin."""
    if plain <= 0:
        return "no gain to shrink: the randomised model is not more robust even without EOT"
    return "the gain shrinks or vanishes, as claimed" if with_eot < plain else "the gain does not shrink"


def pct(v):
    return f"{100 * v:.1f}"


def main(argv=None) -> int:
    """Train, evaluate, plot, write the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/reproduce_small")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log, start = out / "log.txt", time.time()
    runs = {n: train(out, n, args.quick, log) for n in RUNS}
    print(f"trained {len(runs)} runs in {(time.time() - start) / 60:.1f} min", flush=True)
    seed = {n: evaluate(r, "seed", log) for n, r in runs.items()}
    eot = {n: evaluate(r, "eot", log, "suite.attacks=[natural,pgd_linf,eot_pgd_linf]",
                       "suite.eot_samples=5", "suite.repeats=3")
           for n, r in runs.items() if n in ("linf", "noise", "resnet20", "noisenet20")}
    last = evaluate(runs["overfit"], "seed", log, "checkpoint=latest",
                    f"out={runs['overfit'] / 'eval' / 'seed_last_epoch.json'}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = {n: {k: v[0] for k, v in r.items()} for n, r in seed.items()}
    lines = ["# Seed claims at small scale (digits, CPU)", "",
             f"Measured by `python tools/reproduce_small.py{' --quick' if args.quick else ''}` "
             f"(this invocation: {(time.time() - start) / 60:.1f} min; runs and evaluations "
             "finished earlier are reused, a first full run takes about 16 min on 2 cores). Demo recipe: BasicNet, digits, PGD-L-inf "
             f"eps 0.2 (L2 2.0), {'3 (--quick: not evidence)' if args.quick else '20'} epochs, "
             "best-robust checkpoint on validation, test split (359 images). Accuracies in %. "
             "PGD = 10 steps, cross-entropy. Caveat: `suite=full` flags the L-inf-trained "
             "BasicNet for gradient masking on digits (AutoAttack ~30 points below PGD), so "
             "PGD numbers here overstate robustness; the comparisons are between models "
             "attacked the same way.", ""]
    # Claim 1: Table 1
    rows = [("natural", "natural"), ("pgd_linf", "PGD-L-inf"), ("pgd_l2", "PGD-L2"), ("fgsm", "FGSM")]
    trained = [("linf", "L-inf PGD training"), ("l2", "L2 PGD training"), ("fgsm", "FGSM training")]
    lines += ["## 1. Each training norm is strongest against its own attack (Table 1)", "",
              "| | " + " | ".join(t for _, t in trained) + " |", "|---" * 4 + "|"]
    for k, label in rows:
        lines.append(f"| {label} | " + " | ".join(pct(acc[n][k]) for n, _ in trained) + " |")
    own = {"pgd_linf": "linf", "pgd_l2": "l2", "fgsm": "fgsm"}
    held = {k: max(trained, key=lambda t: acc[t[0]][k])[0] == n for k, n in own.items()}
    lines += ["", "Measured: " + "; ".join(f"against {k} the best training is "
                                              f"{max(trained, key=lambda t: acc[t[0]][k])[0]} "
                                              f"({'as claimed' if ok else 'not as claimed'})"
                                              for k, ok in held.items()) + ".", ""]
    # Claim 2: Fig. 1
    xs = [e for _, e in EPS_CURVE]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k, label in rows:
        ax.plot(xs, [100 * acc[n][k] for n, _ in EPS_CURVE], "o-", label=label)
    ax.axvline(0.2, color="grey", ls=":", label="attack eps 0.2")
    ax.set_xlabel("training eps (L-inf)"), ax.set_ylabel("test accuracy (%)"), ax.legend(fontsize=7)
    fig.tight_layout(), fig.savefig(out / "fig1_eps.png", dpi=120), plt.close(fig)
    curve = {e: acc[n]["pgd_linf"] for n, e in EPS_CURVE}
    best_eps = max(curve, key=curve.get)
    lines += ["## 2. Training at the attack's eps is best; over-training hurts less than "
              "under-training (Fig. 1)", "", "![](fig1_eps.png)", "",
              "PGD-L-inf (eps 0.2) accuracy by training eps: " + ", ".join(
                  f"{e}: {pct(v)}" for e, v in curve.items()) + ".",
              f"Measured: the best training eps is {best_eps} "
              f"({'as claimed' if best_eps == 0.2 else 'not as claimed'}); over-training (0.3: "
              f"{pct(curve[0.3])}) vs under-training (0.1: {pct(curve[0.1])}): "
              f"{'over-training hurts less, as claimed' if curve[0.3] > curve[0.1] else 'under-training hurts less, not as claimed'}.", ""]
    # Claim 3: Table 2
    lines += ["## 3. MAT trades a little L-inf robustness for L2 robustness (Table 2)", "",
              "| | L-inf PGD training | MAT-Rand (L-inf/L2) |", "|---|---|---|"]
    lines += [f"| {label} | {pct(acc['linf'][k])} | {pct(acc['mat'][k])} |" for k, label in rows]
    d_inf = acc["mat"]["pgd_linf"] - acc["linf"]["pgd_linf"]
    d_l2 = acc["mat"]["pgd_l2"] - acc["linf"]["pgd_l2"]
    lines += ["", f"Measured: MAT changes PGD-L-inf by {100 * d_inf:+.1f} points and PGD-L2 by "
              f"{100 * d_l2:+.1f} points ({'as claimed' if d_inf <= 0 < d_l2 else 'not as claimed'}).", ""]
    # Claim 4: Fig. 2
    prog = json.loads((runs["overfit"] / "progress.json").read_text())
    hist = prog["history"]
    ep = [h["epoch"] for h in hist]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ep, [100 * h["train/acc"] for h in hist], label="train (attacked)")
    ax.plot(ep, [100 * h["val/pgd_linf"] for h in hist], label="val PGD-L-inf")
    for m in [m for m in (30, 45) if m <= ep[-1]]:
        ax.axvline(m, color="grey", ls=":")
    ax.axvline(prog["best_epoch"], color="k", ls="--", label=f"best epoch {prog['best_epoch']}")
    ax.set_xlabel("epoch"), ax.set_ylabel("accuracy (%)"), ax.legend(fontsize=7)
    fig.tight_layout(), fig.savefig(out / "fig2_overfit.png", dpi=120), plt.close(fig)
    res = json.loads((runs["overfit"] / "results.json").read_text())["test"]
    best_val, final_val = prog["best"], hist[-1]["val/pgd_linf"]
    lines += ["## 4. Robust overfitting after the LR drop; early stopping catches it (Fig. 2)", "",
              "![](fig2_overfit.png)", "",
              f"{ep[-1]} epochs, no early stopping. Best validation PGD-L-inf "
              f"{pct(best_val)} at epoch {prog['best_epoch']}, {pct(final_val)} at epoch "
              f"{ep[-1]}. Test PGD-L-inf: best checkpoint {pct(res['pgd_linf'])}, last epoch "
              f"{pct(last['pgd_linf'][0])}.",
              f"Measured: {'the robust accuracy falls after its peak' if final_val < best_val - 0.01 else 'no clear fall after the peak'}"
              f" (peak {'after' if prog['best_epoch'] > 30 else 'before'} the first LR drop); "
              f"early stopping {'gains' if res['pgd_linf'] > last['pgd_linf'][0] else 'does not gain'} "
              f"{100 * (res['pgd_linf'] - last['pgd_linf'][0]):+.1f} test points.", ""]
    # Claim 5: Tables 4 and 5 with EOT
    lines += ["## 5. With EOT, the noise-injection and PNI gains shrink or vanish (Tables 4, 5)",
              "", "Randomised models: mean ± std of 3 evaluations; EOT-PGD: 5 samples per step. "
              "ResNet20 and NoiseNet20: 10 epochs (LR / 10 at 7 and 9).", "",
              "| model | natural | PGD-L-inf | EOT-PGD-L-inf |", "|---|---|---|---|"]
    for n in ("linf", "noise", "resnet20", "noisenet20"):
        e = eot[n]
        lines.append(f"| {n} | " + " | ".join(f"{pct(e[k][0])} ± {pct(e[k][1])}" for k in
                                              ("natural", "pgd_linf", "eot_pgd_linf")) + " |")
    for rnd, base in (("noise", "linf"), ("noisenet20", "resnet20")):
        plain = eot[rnd]["pgd_linf"][0] - eot[base]["pgd_linf"][0]
        with_eot = eot[rnd]["eot_pgd_linf"][0] - eot[base]["eot_pgd_linf"][0]
        lines.append(f"\nMeasured: {rnd} vs {base}: gain {100 * plain:+.1f} points under plain PGD, "
                     f"{100 * with_eot:+.1f} under EOT-PGD ({_verdict(plain, with_eot)}).")
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'REPORT.md'} ({(time.time() - start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
