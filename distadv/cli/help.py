"""The ``--help`` texts of the entry points: recipes, config groups and every key with its type,
default and meaning (``schema_doc``: read from the schema's source). Imports neither Hydra nor
torch, so ``--help`` answers in ~0.1 s instead of the 2-5 s a composed config costs."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Iterable, List

from ..paths import clusters_dir, group_names, profile_names, recipes_dir
from .schema_doc import PACKAGE, Key, Section, run_keys, walk

WIDTH = 100
KEY_COLUMN = 42      # "key: type = default" column; longer ones put the meaning on the next line

OPTIONS = """\
Options:
  -h, --help        show this text and exit
  --cfg job         print the composed, validated config as YAML and exit (writes nothing)
  --resolve         with --cfg job: resolve ${...} interpolations
  -m, --multirun    sweep comma-separated values (recipe=a,b seed=0,1): the runs one after
                    another here, each in its own run directory named from its overrides
                    (under <runs_root>/sweeps/), or with cluster=PROFILE as one SLURM job
                    array (grid_dir=, dry_run=true, wait=true, cluster.KEY=VALUE as for
                    slurm/submit.py)"""


def _header_line(path: Path) -> str:
    """A config file's one-line description: its first comment line after Hydra's
    ``# @package`` directive (recipes), or its ``description:`` (grids)."""
    lines = path.read_text().splitlines()
    for line in lines:
        m = re.match(r"^description:\s*\"?(.*?)\"?\s*$", line)
        if m:
            return m.group(1)
    for line in lines:
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("#").strip()
    return ""


def _names_with_lines(group: str) -> str:
    names = group_names(group)
    width = max(map(len, names), default=0)
    return "\n".join(f"  {n.ljust(width)}  {_header_line(recipes_dir() / group / f'{n}.yaml')}"
                     for n in names)


def keys_text(items: Iterable[object]) -> str:
    """Sections as headings, keys as ``key: type = default   meaning`` (meaning wrapped)."""
    out: List[str] = []
    for item in items:
        if isinstance(item, Section):
            out.append(f"\n  {item.key}.*  {item.doc}")
            continue
        assert isinstance(item, Key)
        left = f"    {item.key}: {item.type} = {item.default}"
        doc = textwrap.wrap(item.doc, WIDTH - KEY_COLUMN - 2) or [""]
        if len(left) > KEY_COLUMN:
            out.append(left)
            out.extend(" " * (KEY_COLUMN + 2) + d for d in doc)
        else:
            out.append(left.ljust(KEY_COLUMN + 2) + doc[0])
            out.extend(" " * (KEY_COLUMN + 2) + d for d in doc[1:])
    return "\n".join(out)


def groups_text(groups: Iterable[str]) -> str:
    """One line per config group of recipes/: its options."""
    lines = []
    for g in groups:
        names = "(the recipes above)" if g == "recipe" else ", ".join(group_names(g))
        lines.append(f"  {g.ljust(10)} {names}")
    return "\n".join(lines)


def train_help() -> str:
    """``distadv/train.py --help``."""
    return f"""\
usage: python distadv/train.py [recipe=NAME] [KEY=VALUE ...] [--cfg job [--resolve]] [-m]
       accelerate launch distadv/train.py recipe=NAME [KEY=VALUE ...]   (also distadv-train,
       accelerate launch -m distadv.train)

Train one recipe: compose recipes/recipe/NAME.yaml with the KEY=VALUE overrides (Hydra syntax;
an unknown key or a wrong type is refused), train, validate every epoch, keep the best-robust
checkpoint, test it and cross-check its PGD figure with AutoAttack. A run directory with a
checkpoint resumes. Exit status: 0 done, 2 bad input, 3 a peer died, 4 the run failed.

{OPTIONS}

Recipes (recipe=NAME; recipes/recipe/):
{_names_with_lines("recipe")}

Config groups (recipes/):
{groups_text(["recipe", "base", "threat"])}
  (a threat adds an attack: '+threat@eval_attacks.pgd_big=linf' eval_attacks.pgd_big.eps=0.06)

Keys (KEY=VALUE; key: type = default, then its meaning). NAME: any attack name.
{keys_text(run_keys())}

See a recipe's own values with: python distadv/train.py recipe=NAME --cfg job
"""


def evaluate_help() -> str:
    """``distadv/evaluate.py --help``."""
    return f"""\
usage: python distadv/evaluate.py run=runs/NAME [suite=NAME] [KEY=VALUE ...] [--cfg job]
       python distadv/evaluate.py model=MODULE:FACTORY checkpoint=FILE.pt|.safetensors
                                  data=cifar10 [threat.eps=0.031] [suite=NAME] [KEY=VALUE ...]
       accelerate launch distadv/evaluate.py run=runs/NAME suite=full   (also distadv-evaluate)

Attack a run's best (or latest) checkpoint, or a model trained elsewhere (a factory returning
an nn.Module on [0, 1] images, its weights loaded with weights_only=True or from safetensors),
with a suite on the test (or val) split, each rank its own shard; results in
<run>/eval/<suite>.json (external: runs/external/<factory>-<checkpoint>/eval/<suite>.json) and a
printed table. An interrupted evaluation resumes. Exit status: 0 done, 2 bad input, 3 a peer
died.

Options:
  -h, --help        show this text and exit
  --cfg job         print the composed config as YAML and exit (writes nothing)
  --resolve         with --cfg job: resolve ${{...}} interpolations

Suites (suite=NAME; recipes/suite/):
{_names_with_lines("suite")}

Keys (KEY=VALUE; key: type = default, then its meaning):
{keys_text(walk(PACKAGE / "eval" / "config.py", "EvalConfig"))}
"""


def submit_help() -> str:
    """``slurm/submit.py --help``."""
    profiles = "\n".join(f"  {n}" for n in profile_names())
    return f"""\
usage: python slurm/submit.py grid=NAME cluster=PROFILE [grid_dir=DIR] [wait=true]
                              [dry_run=true] [cluster.KEY=VALUE ...] [KEY=VALUE ...]
       (also distadv-submit; a command-line sweep: distadv/train.py -m ... cluster=PROFILE)

Submit a grid (recipes x sweeps x seeds) as ONE SLURM job array through submitit. Re-running
the same command skips finished and running elements and resubmits failed ones.

  grid=NAME         a grid file, recipes/grid/NAME.yaml
  cluster=PROFILE   a cluster profile, {clusters_dir()}/PROFILE.yaml
  grid_dir=DIR      where the grid's runs and records go (default runs/grids/NAME)
  wait=true         block until SLURM runs none of its jobs; exit 1 if one ended without results
  dry_run=true      expand and check everything, submit nothing, write nothing
  cluster.KEY=V     override a profile key (below)
  KEY=VALUE         a recipe override for every element (see distadv/train.py --help)

Grids (recipes/grid/):
{_names_with_lines("grid")}

Cluster profiles:
{profiles}

Profile keys (cluster.KEY=VALUE):
{keys_text(walk(PACKAGE / "grid" / "cluster.py", "ClusterProfile"))}
"""


def search_help() -> str:
    """``slurm/search.py --help``."""
    searches = _names_with_lines("search") if (recipes_dir() / "search").is_dir() else "  (none)"
    return f"""\
usage: python slurm/search.py search=NAME cluster=PROFILE [search_dir=DIR] [best_recipe=NAME]
                              [search.KEY=VALUE ...] [cluster.KEY=VALUE ...] [KEY=VALUE ...]
       (also distadv-search; needs the search and slurm extras: pip install -e '.[search,slurm]')

A multi-objective robust architecture search with Optuna (NSGA-II by default): each trial is a
short training run of the search's recipe with the trial's values, then the budgeted official
AutoAttack on the validation split; trials run as SLURM job arrays of `parallel` trials. The
study lives in SEARCH_DIR/journal.log (Optuna's journal file storage): running the same command
again continues the search, never repeating a complete trial. Outputs in SEARCH_DIR:
pareto.md / pareto.csv (the non-dominated trials), pareto.png, best_recipe.yaml (the front's
most robust trial, at full length). slurm/status.py SEARCH_DIR shows the trials' jobs.

  search=NAME       a search file, recipes/search/NAME.yaml
  cluster=PROFILE   a cluster profile, {clusters_dir()}/PROFILE.yaml
  search_dir=DIR    where the journal, trials and outputs go (default runs/searches/NAME)
  best_recipe=NAME  also write the best trial's recipe as recipes/recipe/NAME.yaml
  search.KEY=V      override a search-file key (below), e.g. search.trials=16
  cluster.KEY=V     override a profile key (see slurm/submit.py --help)
  KEY=VALUE         a recipe override for every trial, added to the search's fixed overrides

Searches (recipes/search/):
{searches}

Search-file keys (search.KEY=VALUE):
{keys_text(walk(PACKAGE / "search" / "space.py", "SearchFile"))}

Distribution keys (space.KEY.*): type (int | float | categorical), low, high, step, log, choices.
Objectives: robust_acc (maximise), clean_acc (maximise), params (minimise), flops (minimise).
"""


def status_help() -> str:
    """``slurm/status.py --help``."""
    return """\
usage: python slurm/status.py GRID_DIR [--json]      (also distadv-status)

Where each element of a grid stands: its SLURM job id and state (squeue, then sacct), epoch,
best validation robust accuracy and its epoch, run directory. GRID_DIR is what
slurm/submit.py or a train.py -m sweep made (default runs/grids/NAME, runs/sweeps/NAME).

  --json            the rows as JSON instead of a table
  -h, --help        show this text and exit

Exit status: 0, or 2 with one line if GRID_DIR is not a grid directory.
"""
