"""The results of a grid in the seed's layout: rows = attacks, columns = configurations
(seeds of one configuration averaged), best of each row in bold, in percent."""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Dict, List

from ..engine.checkpoint import atomic_write
from ..engine.report import LABELS as ROW_LABELS
from .store import GridDir

FLAG_MARK = " (FLAG)"   # a cell whose PGD figure AutoAttack contradicts in at least one seed


def collect(gd: GridDir) -> Dict:
    """Per-element results and progress, plus the configurations in grid order:
    {'grid', 'x', 'elements': [...], 'configs': [...], 'metrics': [...]}."""
    manifest = gd.read_manifest()
    elements = []
    for e in manifest.get("elements", []):
        run = gd.run_dir(e["name"])
        res = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else None
        prog = json.loads((run / "progress.json").read_text()) if (run / "progress.json").is_file() else None
        elements.append({**e, "results": res, "progress": prog, "run_dir": str(run)})
    configs = list(dict.fromkeys(e["config"] for e in elements))
    seen = [k for e in elements if e["results"] for k in e["results"]["test"]]
    metrics = [k for k in ROW_LABELS if k in seen] + [k for k in dict.fromkeys(seen) if k not in ROW_LABELS]
    return {"grid": manifest.get("grid"), "x": manifest.get("x"), "elements": elements,
            "configs": configs, "metrics": metrics}


def flagged(e: Dict) -> List[str]:
    """The metrics of an element that its AutoAttack check flagged (PGD overstates)."""
    return list(((e.get("results") or {}).get("autoattack") or {}).get("flagged", []))


def summary(data: Dict) -> Dict[str, Dict[str, Dict]]:
    """config -> metric -> {'mean', 'std', 'n', 'of', 'flagged'} in percent (std over seeds,
    0 if n=1; flagged: seeds whose AutoAttack check flagged this metric)."""
    out: Dict[str, Dict[str, Dict]] = {}
    for c in data["configs"]:
        members = [e for e in data["elements"] if e["config"] == c]
        done = [e for e in members if e["results"]]
        out[c] = {}
        for m in data["metrics"]:
            vals = [100 * e["results"]["test"][m] for e in done if m in e["results"]["test"]]
            out[c][m] = {"mean": statistics.fmean(vals) if vals else None,
                         "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                         "n": len(vals), "of": len(members),
                         "flagged": sum(m in flagged(e) for e in done)}
    return out


def markdown_table(data: Dict) -> str:
    """The seed's table: the best mean of each row in bold; mean ± std when seeds > 1."""
    s = summary(data)
    head = "| | " + " | ".join(data["configs"]) + " |"
    lines = [head, "|---" * (len(data["configs"]) + 1) + "|"]
    for m in data["metrics"]:
        means = [s[c][m]["mean"] for c in data["configs"] if s[c][m]["mean"] is not None]
        best = max(means) if means else None
        cells = []
        for c in data["configs"]:
            v = s[c][m]
            if v["mean"] is None:
                cells.append("–")
                continue
            text = f"{v['mean']:.2f}" + (f" ± {v['std']:.2f}" if v["n"] > 1 else "")
            text = f"**{text}**" if round(v["mean"], 2) == round(best, 2) else text
            cells.append(text + (FLAG_MARK if v["flagged"] else ""))
        lines.append(f"| {ROW_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    missing = [e["name"] for e in data["elements"] if not e["results"]]
    caption = f"Test accuracies (%) of grid '{data['grid']}'"
    seeds = max((s[c][m]["n"] for c in s for m in s[c]), default=0)
    caption += f", mean ± std over {seeds} seeds" if seeds > 1 else ""
    if missing:
        caption += f"; {len(missing)} element(s) without results: {', '.join(missing)}"
    if any(s[c][m]["flagged"] for c in s for m in s[c]):
        caption += (f"; {FLAG_MARK.strip()}: in at least one seed the end-of-run AutoAttack check "
                    "found this PGD figure overstated (gradient masking?): quote the AutoAttack row")
    unchecked = [e["name"] for e in data["elements"]
                 if e["results"] and not (e["results"].get("autoattack") or {}).get("enabled")]
    if unchecked:
        caption += f"; not cross-checked by AutoAttack: {', '.join(unchecked)}"
    return "\n".join(lines) + f"\n\n{caption}.\n"


def write_csv(data: Dict, path: Path) -> None:
    """One row per configuration and metric: mean, std, seeds with results, seeds in all."""
    s = summary(data)
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["config", "metric", "mean_pct", "std_pct", "n", "of", "flagged"])
    for c in data["configs"]:
        for m in data["metrics"]:
            v = s[c][m]
            w.writerow([c, m, "" if v["mean"] is None else f"{v['mean']:.4f}",
                        f"{v['std']:.4f}", v["n"], v["of"], v["flagged"]])
    atomic_write(path, f.getvalue().encode())


def element_csv(data: Dict, path: Path) -> None:
    """One row per element: its config, seed, best epoch and every test metric (fractions)."""
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["element", "config", "seed", "best_epoch", "epochs_run", *data["metrics"], "flags"])
    for e in data["elements"]:
        r = e["results"] or {}
        w.writerow([e["name"], e["config"], e["seed"], r.get("best_epoch", ""),
                    r.get("epochs_run", ""), *[r.get("test", {}).get(m, "") for m in data["metrics"]],
                    " | ".join(r.get("flags", []))])
    atomic_write(path, f.getvalue().encode())

