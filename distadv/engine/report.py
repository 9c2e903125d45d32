"""The printed results table (the seed's layout: rows = attacks, values in percent)."""
from __future__ import annotations

from typing import Dict

LABELS = {"natural": "Natural examples", "pgd_linf": "L-inf PGD attack",
          "pgd_l2": "L2 PGD attack", "fgsm": "L-inf FGSM attack"}


def results_table(results: Dict) -> str:
    """Markdown table of the test accuracies (and best validation ones) of a results.json."""
    test, val = results["test"], results.get("val_best", {})
    lines = [f"best epoch {results['best_epoch']} | {results.get('recipe', '')}",
             "| | test (%) | val at best epoch (%) |", "|---|---:|---:|"]
    for key, acc in test.items():
        v = val.get(key)
        lines.append(f"| {LABELS.get(key, key)} | {100 * acc:.2f} | "
                     f"{'' if v is None else f'{100 * v:.2f}'} |")
    return "\n".join(lines)
