"""A search's outputs: the Pareto front as a table (``pareto.md``, ``pareto.csv``), a plot of
every complete trial with the front highlighted (``pareto.png``), and the best trial's
configuration as a recipe that trains at full length (``best_recipe.yaml``).

The front is Optuna's ``study.best_trials`` (the non-dominated complete trials under the
objectives' directions). "Best" is the front's trial with the highest robust accuracy; ties go
to fewer parameters, then to the earlier trial.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from omegaconf import OmegaConf

from ..engine.checkpoint import atomic_write
from ..errors import SearchError
from .objectives import OBJECTIVES

MARK = "# Best trial of search"    # the header of a recipe the search wrote (may be replaced)


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one."""
    sign = [1 if d == "maximize" else -1 for d in directions]
    ge = all(s * x >= s * y for s, x, y in zip(sign, a, b))
    return ge and any(s * x > s * y for s, x, y in zip(sign, a, b))


def front_rows(study, objectives: Sequence[str], trial_dirs) -> List[Dict]:
    """One row per trial on the front, ordered by robust accuracy (best first): number, the
    trial's values of the space keys (``space``), every measured objective (from its objectives.json) and its run dir."""
    from .element import read_objectives

    rows = []
    for t in study.best_trials:
        run = trial_dirs(t.number)
        measured = (read_objectives(run) or {}).get("values", {})
        rows.append({"trial": t.number, "space": dict(t.params),
                     **{k: measured.get(k, v) for k, v in zip(objectives, t.values)},
                     **{k: v for k, v in measured.items() if k not in objectives},
                     "run_dir": str(run)})
    return sorted(rows, key=_rank)


def _rank(row: Dict):
    """Best first: robust accuracy (higher), parameters (fewer), trial number."""
    return (-row.get("robust_acc", 0.0), row.get("params", 0), row["trial"])


def _cell(key: str, v) -> str:
    if key.endswith("_acc"):
        return f"{100 * v:.2f}"
    if key in ("params", "flops"):
        return f"{int(v):,}"
    return str(v)


COLUMNS = ["robust_acc", "clean_acc", "params", "flops"]


def markdown(rows: List[Dict], objectives: Sequence[str], note: str = "") -> str:
    """The front as a markdown table (accuracies in %, the searched objectives marked *)."""
    head = ["trial"] + [f"{c}{' *' if c in objectives else ''}"
                        + (" (%)" if c.endswith("_acc") else "") for c in COLUMNS] + ["trial's values"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * (len(head) - 1) + "---|"]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["space"].items())
        lines.append("| " + " | ".join([str(r["trial"])] + [_cell(c, r[c]) if c in r else "-"
                                                            for c in COLUMNS] + [params]) + " |")
    return "\n".join(lines) + (f"\n\n{note}" if note else "")


def write_csv(rows: List[Dict], path: Path) -> None:
    """The front as CSV (raw values: accuracies as fractions), atomically."""
    buf = io.StringIO()
    keys = sorted({k for r in rows for k in r["space"]})
    w = csv.writer(buf)
    w.writerow(["trial", *COLUMNS, *keys, "run_dir"])
    for r in rows:
        w.writerow([r["trial"], *[r.get(c, "") for c in COLUMNS],
                    *[r["space"].get(k, "") for k in keys], r["run_dir"]])
    atomic_write(path, buf.getvalue().encode())


def plot(study, objectives: Sequence[str], path: Path) -> Optional[Path]:
    """Every complete trial (grey) and the front (red, numbered): robust accuracy (or the
    first maximised objective) against parameters/FLOPs (or the first minimised one). None
    with a single objective."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    ys = [o for o in objectives if OBJECTIVES[o].direction == "maximize"]
    xs = [o for o in objectives if OBJECTIVES[o].direction == "minimize"]
    if len(objectives) < 2:
        return None
    x, y = (xs[0] if xs else objectives[1]), (ys[0] if ys else objectives[0])
    ix, iy = objectives.index(x), objectives.index(y)
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    front = {t.number for t in study.best_trials}
    scale = lambda o, v: 100 * v if o.endswith("_acc") else v  # noqa: E731
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for on, style in ((False, dict(c="0.6", s=25, label="trial")),
                      (True, dict(c="tab:red", s=45, label="Pareto front"))):
        pts = [(scale(x, t.values[ix]), scale(y, t.values[iy]), t.number) for t in done
               if (t.number in front) == on]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], zorder=2 + on, **style)
        if on:
            for px, py, n in sorted(pts):
                ax.annotate(str(n), (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax.plot(*zip(*sorted((p[0], p[1]) for p in pts)), c="tab:red", lw=1, zorder=2)
    if x in ("params", "flops"):
        ax.set_xscale("log")
    ax.set_xlabel(x + (" (%)" if x.endswith("_acc") else ""))
    ax.set_ylabel(y + (" (%)" if y.endswith("_acc") else ""))
    ax.set_title(f"{study.study_name}: {len(done)} complete trials, {len(front)} on the front")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path


def recipe_text(search: str, recipe: str, row: Dict, overrides: Sequence[str]) -> str:
    """The best trial as a recipe: the base recipe plus the trial's values, without the
    search's short-training overrides (so it trains at full length)."""
    shown = ", ".join(f"{k} {_cell(k, row[k])}" for k in ("robust_acc", "params") if k in row)
    body = OmegaConf.to_yaml(OmegaConf.from_dotlist([o for o in overrides
                                                     if not o.startswith("recipe=")]))
    return (f"# @package _global_\n"
            f"{MARK} '{search}' (trial {row['trial']}: {shown} in the search's short training;"
            f" robust_acc in %), {recipe} at full length.\n"
            f"# Written by slurm/search.py from {row['run_dir']}.\n"
            f"defaults:\n  - /recipe/{recipe}@_global_\n  - _self_\n{body}")


def write_recipe(text: str, path: Path) -> Path:
    """Write a recipe atomically; an existing file is replaced only if a search wrote it."""
    if path.is_file() and MARK not in path.read_text():
        raise SearchError(f"{path} exists and was not written by a search; choose another "
                          "best_recipe= name")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode())
    return path
