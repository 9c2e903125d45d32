"""The seed's figures from a grid: robust accuracy against the training eps (Fig. 1) and the
per-epoch train / validation robust accuracy of each element (Figs. 2 and 3)."""
from __future__ import annotations

import io
import math
import statistics
from pathlib import Path
from typing import Dict, Optional

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster login nodes
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from ..engine.checkpoint import atomic_write  # noqa: E402
from .report import ROW_LABELS  # noqa: E402


def _save(fig, path: Path, dpi: int) -> None:
    """Render ``fig`` as PNG and write it atomically (a killed report never leaves half a file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def eps_plot(data: Dict, path: Path) -> Optional[Path]:
    """Test accuracy of every attack against the swept ``x`` key (mean ± std over seeds), one
    line per attack and base recipe. None if the grid sweeps no ``x``."""
    x = data["x"]
    if not x:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    recipes = list(dict.fromkeys(_recipe(e) for e in data["elements"]))
    for m in data["metrics"]:
        for recipe in recipes:
            by_x: Dict[float, list] = {}
            for e in data["elements"]:
                if e["results"] and _recipe(e) == recipe:
                    by_x.setdefault(float(dict(e["values"])[x]), []).append(100 * e["results"]["test"][m])
            if not by_x:
                continue
            xs = sorted(by_x)
            label = ROW_LABELS.get(m, m) + (f" ({recipe})" if len(recipes) > 1 else "")
            ax.errorbar(xs, [statistics.fmean(by_x[v]) for v in xs],
                        yerr=[statistics.stdev(by_x[v]) if len(by_x[v]) > 1 else 0 for v in xs],
                        marker="o", capsize=3, label=label)
    attack_eps = _attack_eps(data)
    if attack_eps is not None:
        ax.axvline(attack_eps, color="grey", ls=":", label=f"PGD L-inf attack eps {attack_eps}")
    ax.set_xlabel(x)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{data['grid']}: test accuracy against the training radius")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path, 120)
    return path


def curves_plot(data: Dict, path: Path) -> Optional[Path]:
    """One panel per element: train (adversarial) accuracy and validation accuracies per
    epoch, the best-robust epoch marked. None if no element has finished an epoch."""
    runs = [e for e in data["elements"] if e["progress"]]
    if not runs:
        return None
    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    for ax, e in zip(axes.flat, runs):
        hist, metric = e["progress"]["history"], e["progress"]["metric"]
        epochs = [h["epoch"] for h in hist]
        ax.plot(epochs, [100 * h["train/acc"] for h in hist], label="train (attacked)")
        ax.plot(epochs, [100 * h[f"val/{metric}"] for h in hist], label=f"val {metric}")
        if "val/natural" in hist[0] and metric != "natural":
            ax.plot(epochs, [100 * h["val/natural"] for h in hist], label="val natural", alpha=0.6)
        best = e["progress"]["best_epoch"]
        ax.axvline(best, color="k", ls="--", lw=1)
        ax.plot([best], [100 * e["progress"]["best"]], "k*", ms=10, label=f"best epoch {best}")
        ax.set_title(e["name"], fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path, 110)
    return path


def _attack_eps(data: Dict) -> Optional[float]:
    """The evaluation PGD-L-inf radius of the first element that has a config (Fig. 1's
    fixed attacker), or None."""
    for e in data["elements"]:
        cfg = Path(e["run_dir"]) / "config.yaml" if "run_dir" in e else None
        if cfg is not None and cfg.is_file():
            attacks = OmegaConf.load(cfg).eval_attacks
            return float(attacks.pgd_linf.eps) if "pgd_linf" in attacks else None
    return None


def _recipe(e: Dict) -> str:
    return next(o.split("=", 1)[1] for o in e["overrides"] if o.startswith("recipe="))
