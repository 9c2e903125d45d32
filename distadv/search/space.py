"""Search files, ``recipes/search/NAME.yaml``: a base recipe, fixed (short-training) overrides,
a space of run-config keys with typed distributions, the objectives, the trial budget, the
sampler and the attack budget that measures robust accuracy.

A space key is a key of the run config (``model.activation``, ``model.input_noise``,
``optim.lr``) or one entry of a list-valued key, by index: ``model.blocks.0`` (blocks of the
first stage), ``model.widths.1`` (channels of the second). Entries of one list are assembled
into one override (``model.blocks=[2,1]``); the entries the space leaves out keep the base
config's values. Everything is checked against the composed base config before anything is
written: an unknown key, a bad distribution or an unknown objective is one line, exit 2.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..compose import load_config, recipe_names
from ..errors import ConfigError, SearchError
from ..grid.spec import NAME
from ..paths import group_names, recipes_dir
from .objectives import OBJECTIVES

SAMPLERS = ("nsga2", "default")
TYPES = ("int", "float", "categorical")
RESERVED = ("recipe", "run_dir", "name", "runs_root")   # the search sets these itself


@dataclass
class Distribution:
    """One space key's distribution (Optuna's IntDistribution, FloatDistribution or
    CategoricalDistribution)."""

    type: str = MISSING                 # int | float | categorical
    low: Optional[float] = None         # int, float: the range, both ends included
    high: Optional[float] = None        # (low <= high)
    step: Optional[float] = None        # int: default 1; float: null = continuous
    log: bool = False                   # sample on a log scale (low > 0, no step)
    choices: Optional[List[Any]] = None  # categorical: numbers, strings, booleans or null


@dataclass
class AttackBudget:
    """The budgeted official AutoAttack that measures each trial's robust accuracy, on the
    first ``max_examples`` of the VALIDATION split (never the test set), at the radius of the
    recipe's L-inf PGD (its ``eval_attacks``)."""

    components: List[str] = field(default_factory=lambda: ["apgd-ce", "apgd-t"])
                                        # AutoAttack's attacks (apgd-ce, apgd-t, apgd-dlr, ...)
    n_iter: int = 20                    # APGD iterations (the package's: 100)
    target_classes: int = 3             # APGD-T target classes (the package's: 9)
    max_examples: int = 200             # first N examples of the validation split
    also: List[str] = field(default_factory=lambda: ["pgd_linf"])
                                        # the run's own attacks (suite names: pgd_linf,
                                        # eot_pgd_linf, ...) in the per-example worst case
    repeats: int = 1                    # evaluations of a randomised model (input noise): mean
    seed: int = 0                       # attack randomness


@dataclass
class SearchFile:
    """The schema of a search file."""

    description: str = ""               # one line, shown by --help and in the manifest
    recipe: str = MISSING               # the base recipe (recipes/recipe/)
    overrides: List[str] = field(default_factory=list)  # every trial AND the best trial's
                                        # recipe (the architecture family: model.name=...)
    short: List[str] = field(default_factory=list)  # every trial only: the short training
                                        # (optim.epochs=3); the best recipe trains at full length
    space: Dict[str, Distribution] = MISSING   # run-config key (or list entry) -> distribution
    objectives: List[str] = field(default_factory=lambda: ["robust_acc", "params"])
                                        # robust_acc, clean_acc (maximised), params, flops
                                        # (minimised); see distadv/search/objectives.py
    trials: int = 8                     # complete trials to reach (failed ones do not count)
    parallel: int = 4                   # trials per job array (one array per batch)
    population: Optional[int] = None    # NSGA-II population (null: parallel, one batch = one
                                        # generation)
    sampler: str = "nsga2"              # nsga2 | default (Optuna's default: TPE)
    seed: int = 0                       # the sampler's seed
    attack: AttackBudget = field(default_factory=AttackBudget)


def search_names() -> List[str]:
    """Names of the search files in recipes/search/."""
    return group_names("search")


def load_search(name: str, overrides: Sequence[str] = ()) -> SearchFile:
    """Read ``recipes/search/<name>.yaml``, apply ``key=value`` overrides of its fields
    (``trials=16``), type-check; ``check_search`` validates it against the recipe."""
    valid = search_names()
    if not NAME.match(name or "") or name not in valid:
        raise SearchError(f"unknown search '{name}'; valid searches: {', '.join(valid) or '(none)'}"
                          f" (in {recipes_dir() / 'search'})")
    path = recipes_dir() / "search" / f"{name}.yaml"
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(SearchFile), OmegaConf.load(path),
                              OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        keys = ", ".join(SearchFile.__dataclass_fields__)
        raise SearchError(f"search '{name}': {str(exc).splitlines()[0]} (search keys: {keys}; "
                          f"distribution keys: {', '.join(Distribution.__dataclass_fields__)})"
                          ) from None


def check_search(name: str, sf: SearchFile) -> DictConfig:
    """Refuse a bad search before anything is written: the recipe, the objectives, the
    sampler and sizes, every space key (against the composed base config) and distribution,
    and one point of the space composed as a trial would be. Returns the base config."""
    fail = lambda msg: SearchError(f"search '{name}': {msg}")  # noqa: E731
    if sf.recipe not in recipe_names():
        raise fail(f"unknown recipe '{sf.recipe}'; valid recipes: {', '.join(recipe_names())}")
    unknown = [o for o in sf.objectives if o not in OBJECTIVES]
    if unknown or not sf.objectives:
        raise fail(f"unknown objective(s) {unknown or '(empty list)'}; valid objectives: "
                   + ", ".join(f"{k} ({v.direction})" for k, v in OBJECTIVES.items()))
    if len(set(sf.objectives)) != len(sf.objectives):
        raise fail(f"objectives are listed twice: {sf.objectives}; list each once")
    if sf.sampler not in SAMPLERS:
        raise fail(f"unknown sampler '{sf.sampler}'; valid samplers: {', '.join(SAMPLERS)}")
    for key, low in (("trials", 1), ("parallel", 1), ("population", 2),
                     ("attack.max_examples", 1), ("attack.n_iter", 1),
                     ("attack.target_classes", 1), ("attack.repeats", 1)):
        v = OmegaConf.select(OmegaConf.structured(sf), key)
        if v is not None and v < low:
            raise fail(f"{key} must be >= {low}, got {v}")
    if not sf.space:
        raise fail("the space is empty; give at least one key under space:")
    try:
        base = load_config([f"recipe={sf.recipe}", *sf.overrides, *sf.short])
    except ConfigError as exc:
        raise fail(f"the fixed overrides do not compose: {exc}") from None
    fixed = {_key(o) for o in [*sf.overrides, *sf.short]}
    from ..attacks.autoattack import check_components
    from ..eval.suites import reference_threat
    try:
        check_components(sf.attack.components, "attack.components")
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if not reference_threat(base, "linf"):
        raise fail(f"recipe '{sf.recipe}' has no multi-step L-inf eval attack, whose radius the "
                   "robust accuracy is measured at; add one (eval_attacks.pgd_linf)")
    from ..eval.suites import valid_names
    bad = [a for a in sf.attack.also if a not in valid_names(base) or a in ("natural", "aa_linf")]
    if bad:
        raise fail(f"unknown attack.also {bad}; the run's attacks: "
                   + ", ".join(n for n in valid_names(base) if n not in ("natural", "aa_linf")))
    for key, dist in sf.space.items():
        locate(base, key, fail)
        if key.split(".")[0] in RESERVED or key in fixed:
            raise fail(f"space key '{key}' is set by the search itself or fixed in overrides; "
                       "remove it from one of them")
        check_distribution(key, dist, fail)
    lists = _list_entries(sf.space, base)
    for prefix, (value, indices) in lists.items():
        if value is None and sorted(indices) != list(range(len(indices))):
            raise fail(f"'{prefix}' is not set in recipe '{sf.recipe}', so the space must give "
                       f"every entry from 0 on; it gives {sorted(indices)}")
    point = {k: (d.choices[0] if d.type == "categorical" else
                 int(d.low) if d.type == "int" else float(d.low)) for k, d in sf.space.items()}
    try:
        load_config(trial_overrides(sf, point, base))
    except ConfigError as exc:
        raise fail(f"a trial at the space's first point does not compose: {exc}") from None
    return base


def locate(base: DictConfig, key: str, fail) -> Tuple[str, Optional[int]]:
    """(config key, list index or None) of a space key; an unknown key names the valid ones."""
    parts, node = key.split("."), base
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the top level"
        if isinstance(node, ListConfig):
            if i != len(parts) - 1 or not part.isdigit():
                raise fail(f"unknown space key '{key}': '{where}' is a list; index one entry "
                           f"by number ({where}.0)")
            if not node._is_none() and int(part) >= len(node):
                raise fail(f"space key '{key}': '{where}' has {len(node)} entries in the base "
                           f"config; index {part} is out of range")
            return where, int(part)
        if not isinstance(node, DictConfig) or part not in node:
            choices = ", ".join(map(str, node.keys())) if isinstance(node, DictConfig) else "none"
            raise fail(f"unknown space key '{key}': '{part}' is not in {where}; valid keys "
                       f"there: {choices}")
        node = node._get_node(part)
    if isinstance(node, DictConfig):
        raise fail(f"space key '{key}' is a group of keys, not a value; search one of: "
                   + ", ".join(f"{key}.{k}" for k in node.keys()))
    return key, None


def check_distribution(key: str, d: Distribution, fail) -> None:
    """Refuse a distribution Optuna would refuse or that samples nothing, naming the fix."""
    if d.type not in TYPES:
        raise fail(f"space key '{key}': unknown type '{d.type}'; valid types: {', '.join(TYPES)}")
    if d.type == "categorical":
        if not d.choices or any(not isinstance(c, (str, int, float, bool)) and c is not None
                                for c in d.choices):
            raise fail(f"space key '{key}': categorical needs a non-empty list of choices "
                       f"(numbers, strings, booleans, null), got {d.choices}")
        if len(set(map(repr, d.choices))) != len(d.choices):
            raise fail(f"space key '{key}': choices are listed twice: {d.choices}")
        if d.low is not None or d.high is not None or d.step is not None or d.log:
            raise fail(f"space key '{key}': categorical takes choices only, not low/high/step/log")
        return
    if d.choices is not None:
        raise fail(f"space key '{key}': {d.type} takes low and high, not choices "
                   "(use type: categorical)")
    if d.low is None or d.high is None or d.low > d.high:
        raise fail(f"space key '{key}': {d.type} needs low <= high, got low={d.low} high={d.high}")
    if d.log and (d.low <= 0 or d.step is not None):
        raise fail(f"space key '{key}': log needs low > 0 and no step")
    if d.step is not None and d.step <= 0:
        raise fail(f"space key '{key}': step must be > 0, got {d.step}")
    if d.type == "int" and any(v is not None and float(v) != int(v) for v in (d.low, d.high, d.step)):
        raise fail(f"space key '{key}': int needs whole low, high and step, got "
                   f"low={d.low} high={d.high} step={d.step}")


def optuna_distributions(space: Dict[str, Distribution]) -> Dict[str, Any]:
    """The space as Optuna distributions (for ``study.ask(fixed_distributions)``)."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    out = {}
    for key, d in space.items():
        if d.type == "categorical":
            out[key] = CategoricalDistribution(list(d.choices))
        elif d.type == "int":
            out[key] = IntDistribution(int(d.low), int(d.high), log=d.log,
                                       step=int(d.step or 1))
        else:
            out[key] = FloatDistribution(float(d.low), float(d.high), log=d.log, step=d.step)
    return out


def _list_entries(space, base: DictConfig) -> Dict[str, Tuple[Optional[List], List[int]]]:
    """List key -> (its base value or None, the indices the space gives)."""
    out: Dict[str, Tuple[Optional[List], List[int]]] = {}
    for key in space:
        prefix, index = locate(base, key, SearchError)
        if index is not None:
            value = OmegaConf.select(base, prefix)
            value = None if value is None else OmegaConf.to_container(value)
            out.setdefault(prefix, (value, []))[1].append(index)
    return out


def override_value(v: Any) -> str:
    """A parameter value as Hydra override text (booleans lower-case, None as null)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ",".join(override_value(x) for x in v) + "]"
    return str(v)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def trial_overrides(sf: SearchFile, params: Dict[str, Any], base: DictConfig,
                    short: bool = True) -> List[str]:
    """The run overrides of one trial: the recipe, the fixed ``overrides``, the ``short``
    training ones (unless ``short`` is False: the best trial's recipe trains at full length),
    then the trial's values, list entries assembled into one list per key. A fixed override
    of a key the trial sets is dropped (the trial's value wins either way)."""
    out = _trial_values(params, base)
    mine = {_key(o) for o in out}
    fixed = [o for o in [*sf.overrides, *(sf.short if short else [])] if _key(o) not in mine]
    return [f"recipe={sf.recipe}", *fixed, *out]


def _trial_values(params: Dict[str, Any], base: DictConfig) -> List[str]:
    """The trial's values as overrides, list entries joined into one list per key."""
    out: List[str] = []
    lists: Dict[str, List] = {}
    for key, value in params.items():
        prefix, index = locate(base, key, SearchError)
        if index is None:
            out.append(f"{key}={override_value(value)}")
            continue
        if prefix not in lists:
            current = OmegaConf.select(base, prefix)
            n = 1 + max(locate(base, k, SearchError)[1] for k in params
                        if locate(base, k, SearchError)[0] == prefix)
            lists[prefix] = (list(OmegaConf.to_container(current)) if current is not None
                             else [None] * n)
        lists[prefix][index] = value
    out += [f"{k}={override_value(v)}" for k, v in lists.items()]
    return out
