"""The study's outputs: ``report.json``, ``confusion.png`` and ``roc.png`` (matplotlib, Agg:
no display needed), each written atomically, and the printed summary table."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, List

from ..engine.checkpoint import atomic_write, write_json


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def confusion_png(path: Path, panels: Dict[str, Dict]) -> None:
    """One confusion matrix per detector (rows: true type, columns: predicted), row-normalised
    with the counts written in the cells."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, m) in zip(axes[0], panels.items()):
        cm = np.array(m["confusion"], dtype=float)
        frac = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
        n = len(m["classes"])
        ax.set_xticks(range(n), m["classes"], rotation=45, ha="right")
        ax.set_yticks(range(n), m["classes"])
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if frac[i, j] > 0.5 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title}: accuracy {100 * m['accuracy']:.1f}%")
    fig.tight_layout()
    atomic_write(path, _png(fig))
    plt.close(fig)


def roc_png(path: Path, curves: Dict[str, tuple], fpr: float, title: str) -> None:
    """ROC curves, clean against each attack ('adaptive' ones dashed), the FPR line marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    for name, (x, y, area) in curves.items():
        ax.plot(x, y, "--" if name.startswith("adaptive") else "-", label=f"{name} (AUC {area:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.axvline(fpr, color="red", lw=0.8, label=f"FPR {100 * fpr:g}%")
    ax.set_xlabel("false-positive rate (clean test images)")
    ax.set_ylabel("detection rate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, _png(fig))
    plt.close(fig)


def write_report(path: Path, report: Dict) -> None:
    """``report.json``, atomically."""
    write_json(path, report)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def table(report: Dict) -> str:
    """The summary as markdown: per attack, the detector's and the baseline's figures; then
    the adaptive attacks next to PGD-L-inf at the same radius."""
    det, base = report["detector"], report["baseline"]
    lines = [f"| attack | images | type acc. (%) | detected at {_pct(report['fpr'])}% FPR (%) | "
             "detected, fooled only (%) | AUC | baseline detected (%) | baseline AUC |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in det["per_attack"].items():
        b = base["per_attack"][name]
        lines.append(f"| {name} | {r['count']} | {_pct(r['type_accuracy'])} | {_pct(r['detected'])} | "
                     f"{_pct(r['detected_fooled'])} | {r['auc']:.3f} | {_pct(b['detected'])} | "
                     f"{b['auc']:.3f} |")
    lines.append(f"| all (clean vs adversarial) | | {_pct(det['accuracy'])} (all types) | | | "
                 f"{det['auc']:.3f} | | {base['auc']:.3f} |")
    rows: List[str] = ["", "| attack on the detector too | classifier acc. (%) | detected (%) | "
                       "fooled and undetected (%) | AUC |", "|---|---:|---:|---:|---:|"]
    for name, r in report["adaptive"].items():
        rows.append(f"| {name} | {_pct(r['classifier_accuracy'])} | {_pct(r['detected'])} | "
                    f"{_pct(r['evaded'])} | {r['auc']:.3f} |")
    return "\n".join(lines + rows)
