"""The printed results table (the seed's layout: rows = attacks, values in percent), with the
AutoAttack cross-check's rows and its FLAG lines."""
from __future__ import annotations

from typing import Dict

LABELS = {"natural": "Natural examples", "pgd_linf": "L-inf PGD attack",
          "pgd_l2": "L2 PGD attack", "fgsm": "L-inf FGSM attack",
          "aa_linf": "L-inf AutoAttack", "aa_l2": "L2 AutoAttack"}


def results_table(results: Dict) -> str:
    """Markdown table of the test accuracies (and best validation ones) of a results.json,
    then what the AutoAttack check ran and one ``FLAG:`` line per flag."""
    test, val = results["test"], results.get("val_best", {})
    check = results.get("autoattack", {})
    lines = [f"best epoch {results['best_epoch']} | {results.get('recipe', '')}",
             "| | test (%) | val at best epoch (%) |", "|---|---:|---:|"]
    for key, acc in test.items():
        v = val.get(key)
        label = LABELS.get(key, key)
        if key.startswith("aa_"):
            label += f" (first {check.get('examples', '?')} test examples)"
        lines.append(f"| {label} | {100 * acc:.2f} | {'' if v is None else f'{100 * v:.2f}'} |")
    if check.get("enabled"):
        same = check["same_examples"]
        pgd = ", ".join(f"{k} {100 * v:.2f}%" for k, v in same.items() if not k.startswith("aa_"))
        lines.append(f"AutoAttack check: {check['attack']}; on the same {check['examples']} "
                     f"examples: {pgd}")
    lines += [f"FLAG: {f}" for f in results.get("flags", [])]
    return "\n".join(lines)
