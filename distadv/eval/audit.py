"""The gradient-masking audit (Carlini et al. 2019, "On Evaluating Adversarial Robustness";
Athalye et al. 2018): sanity checks that a real robustness number passes and an obfuscated
one fails. Each check is PASS or FLAG with the numbers behind it.

Checks, all at the run's L-inf evaluation threat (``ref``):
  monotone_in_eps        accuracy does not increase with eps (eps x factors, then large eps)
  zero_at_large_eps      accuracy at a large radius (default 0.5) is about 0
  more_steps_not_better  PGD with more steps, restarts and the CW loss does not do worse
  square_not_stronger    black-box Square is not stronger than white-box PGD
  eot_gap                randomised models: EOT-PGD is not much stronger than plain PGD
  pgd_ge_autoattack      PGD and AutoAttack agree within the tolerance, in either direction:
                         PGD far above AutoAttack = PGD is fooled (masking); far below =
                         AutoAttack is the weaker one (a broken evaluation either way)
Differences below ``audit_tol`` (plus 2 std for randomised models) count as noise.
"""
from __future__ import annotations

from typing import Callable, Dict, List

from ..attacks import PGD
from .suites import SuiteConfig, autoattack, reference_threat, resolve


def audit_attacks(run_cfg, suite: SuiteConfig, randomised: bool, seed: int) -> Dict[str, Callable]:
    """The extra attacks the checks need (results of the suite's own attacks are reused)."""
    ref_name, t = reference_threat(run_cfg, "linf")
    base = dict(norm="linf", steps=t.steps, loss=t.loss, random_start=True)
    out: Dict[str, Callable] = {}
    for f in suite.audit_eps_factors:
        if f != 1.0:
            out[f"audit/eps_x{f:g}"] = PGD(eps=t.eps * f, alpha=t.alpha * f, **base)
    large = suite.audit_large_eps
    out["audit/large_eps"] = PGD(eps=large, alpha=large / 4, **base)
    # Stronger in every way the literature asks for: more steps, restarts, and the CW margin
    # loss, which does not saturate like cross-entropy on confident models.
    out["audit/strong_pgd"] = PGD(eps=t.eps, alpha=t.alpha, restarts=suite.audit_restarts,
                                  **{**base, "loss": "cw", "steps": t.steps * suite.audit_steps_factor})
    square = autoattack(suite, "linf", t.eps, seed, ["square"])
    square.square_queries = suite.audit_square_queries   # named in its output as a change
    out["audit/square"] = square
    # The suite's own attacks the checks compare against, built by the suite's resolver.
    shared = [ref_name, "aa_linf"] + ([f"eot_{ref_name}"] if randomised else [])
    out.update(resolve(shared, run_cfg, suite, seed))
    return out


def _check(name: str, ok: bool, detail: str, **values) -> Dict:
    return {"check": name, "status": "PASS" if ok else "FLAG", "detail": detail, **values}


def checks(run_cfg, suite: SuiteConfig, res: Dict[str, Dict], randomised: bool) -> List[Dict]:
    """Evaluate the checks on the suite's results (accuracies as fractions)."""
    ref_name, t = reference_threat(run_cfg, "linf")
    acc = {k: v["acc"] for k, v in res.items()}

    def tol(*names):  # noise allowance: fixed, plus 2 std of randomised repeats
        return suite.audit_tol + 2 * max(res[n]["std"] for n in names)

    out = []
    curve = sorted([(t.eps * f, f"audit/eps_x{f:g}") for f in suite.audit_eps_factors if f != 1.0]
                   + [(t.eps, ref_name), (suite.audit_large_eps, "audit/large_eps")])
    rises = [(a, b) for (_, a), (_, b) in zip(curve, curve[1:]) if acc[b] > acc[a] + tol(a, b)]
    out.append(_check("monotone_in_eps", not rises,
                      "accuracy never increases with eps" if not rises else
                      "accuracy increases with eps: " + ", ".join(f"{a} -> {b}" for a, b in rises),
                      curve={f"{e:g}": acc[n] for e, n in curve}))
    big = acc["audit/large_eps"]
    out.append(_check("zero_at_large_eps", big <= suite.audit_zero_acc + tol("audit/large_eps"),
                      f"accuracy {100 * big:.2f}% at L-inf eps {suite.audit_large_eps:g} "
                      f"(about 0 means <= {100 * suite.audit_zero_acc:g}%)", acc=big))
    strong = acc["audit/strong_pgd"]
    out.append(_check("more_steps_not_better", strong <= acc[ref_name] + tol("audit/strong_pgd", ref_name),
                      f"PGD {t.steps} steps: {100 * acc[ref_name]:.2f}%; "
                      f"CW-PGD {t.steps * suite.audit_steps_factor} steps x {suite.audit_restarts} "
                      f"restarts: {100 * strong:.2f}%", ref=acc[ref_name], strong=strong))
    white = min(acc[ref_name], strong)
    sq = acc["audit/square"]
    out.append(_check("square_not_stronger", sq >= white - tol("audit/square", ref_name, "audit/strong_pgd"),
                      f"Square ({suite.audit_square_queries} queries) {100 * sq:.2f}% vs best "
                      f"white-box PGD {100 * white:.2f}%", square=sq, pgd=white))
    if randomised:
        eot = acc[f"eot_{ref_name}"]
        gap = acc[ref_name] - eot
        out.append(_check("eot_gap", gap <= tol(ref_name, f"eot_{ref_name}"),
                          f"plain PGD {100 * acc[ref_name]:.2f}% vs EOT-PGD ({suite.eot_samples} "
                          f"samples) {100 * eot:.2f}%: gap {100 * gap:.2f} points", gap=gap))
    else:
        out.append(_check("eot_gap", True, "deterministic model: EOT changes nothing", gap=0.0))
    aa = acc["aa_linf"]
    gap = acc[ref_name] - aa
    limit = tol(ref_name, "aa_linf")
    out.append(_check("pgd_ge_autoattack", abs(gap) <= limit,
                      f"PGD {100 * acc[ref_name]:.2f}% vs AutoAttack {100 * aa:.2f}%: gap "
                      f"{100 * gap:.2f} points (tolerance {100 * limit:.2f})"
                      + ("; PGD overstates robustness (gradient masking?): quote AutoAttack"
                         if gap > limit else "; AutoAttack is weaker than PGD" if gap < -limit
                         else ""), gap=gap))
    return out
