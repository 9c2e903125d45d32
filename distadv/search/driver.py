"""The search driver: Optuna's ask-and-tell over SLURM job arrays, resumable from a journal.

    study  = Optuna study in <search dir>/journal.log (JournalStorage + JournalFileBackend:
             a file on shared storage, no database server), NSGA-II or Optuna's default sampler
    repeat until ``trials`` trials are COMPLETE:
        ask ``parallel`` trials -> run overrides -> ONE job array (grid/submit.py submit_plan,
        elements trial000, trial001, ... in the search dir, which is a grid dir:
        slurm/status.py works on it) -> wait -> tell each trial its objectives (from
        <run>/objectives.json), or FAIL if its job ended without them

Submitting again continues: trials COMPLETE in the journal are never rerun; a trial left
RUNNING by a driver that stopped is told its objectives if its job wrote them, waited for if
SLURM still runs it, and told FAIL (and replaced by a new trial) if its job ended without them.
One driver per search at a time (the search dir's ``.search.lock``).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import ConfigError, SearchError
from ..grid.spec import Element
from ..grid.store import GridDir
from .element import DONE, SearchElement, read_objectives
from .objectives import directions
from .space import SearchFile, check_search, load_search, optuna_distributions, trial_overrides

NO_OPTUNA = "optuna is not installed; searches need the search extra: pip install -e '.[search]'"


def search_dir_default(name: str, root: str = "runs") -> Path:
    """Where a search's journal, trials and outputs go unless ``search_dir=`` says otherwise."""
    return Path(root) / "searches" / name


def trial_name(number: int) -> str:
    """The element (run directory) name of trial ``number``."""
    return f"trial{number:03d}"


def recorded(sf: SearchFile) -> Dict:
    """What a continuing submission must agree on: everything but the budget (trials,
    parallel) and the description."""
    d = json.loads(json.dumps(asdict(sf)))
    return {k: v for k, v in d.items() if k not in ("trials", "parallel", "description")}


def open_study(gd: GridDir, name: str, sf: SearchFile):
    """The study in ``<search dir>/journal.log``, created or loaded (same name, directions)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if sf.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(population_size=sf.population or max(2, sf.parallel),
                                                seed=sf.seed)
    else:   # Optuna's default sampler for create_study (TPE in Optuna 4 and 5), seeded
        sampler = optuna.samplers.TPESampler(seed=sf.seed)
    storage = JournalStorage(JournalFileBackend(str(gd.path / "journal.log")))
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # our lines say what happens
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                               directions=directions(sf.objectives), load_if_exists=True)


def run_search(name: str, cluster: str, search_dir: Optional[str] = None,
               file_overrides: Sequence[str] = (), recipe_overrides: Sequence[str] = (),
               cluster_overrides: Sequence[str] = (), best_recipe: Optional[str] = None,
               poll_s: float = 2.0) -> Dict:
    """Run (or continue) search ``name`` on ``cluster`` until ``trials`` trials are complete;
    write the outputs. Returns {'search_dir', 'complete', 'failed', 'arrays', 'outputs'}.
    Everything that can be refused is refused before anything is written."""
    from ..grid.cluster import load_profile

    sf = load_search(name, file_overrides)
    sf.overrides = list(sf.overrides) + list(recipe_overrides)
    base = check_search(name, sf)
    if best_recipe is not None:
        check_recipe_name(best_recipe)
    profile = load_profile(cluster, cluster_overrides)
    try:
        import optuna  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError(NO_OPTUNA) from None
    import submitit  # noqa: F401  (the slurm extra; the command line names it)

    gd = GridDir(Path(search_dir) if search_dir else search_dir_default(name))
    info = {"description": sf.description or f"search {name}", "x": None, "done": DONE,
            "search": recorded(sf)}
    with gd.lock("search"):
        old = gd.read_manifest()
        if old and old.get("search") != info["search"]:
            raise SearchError(f"{gd.path} holds search '{old.get('grid')}' with another "
                              "configuration (recipe, overrides, space, objectives, sampler or "
                              "attack); nothing was submitted. Use the same search file and "
                              "overrides to continue it (trials= may grow), or another search_dir=")
        gd.adopt(name, [], info, extend=True)   # a grid dir before the journal is in it
        study = open_study(gd, name, sf)
        arrays = _loop(gd, study, name, sf, base, profile, info, poll_s)
        outputs = write_outputs(gd, study, name, sf, base, best_recipe)
    counts = _counts(study)
    return {"search_dir": str(gd.path), "complete": counts["COMPLETE"], "failed": counts["FAIL"],
            "arrays": arrays, "outputs": outputs}


def _counts(study) -> Dict[str, int]:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {s.name: states.count(s) for s in TrialState}


def _reconcile(gd: GridDir, study, sf: SearchFile) -> int:
    """Tell Optuna about every RUNNING trial whose job has ended; return how many SLURM still
    runs."""
    from optuna.trial import TrialState

    from ..grid.status import element_rows, outcome

    rows = {r["name"]: r for r in element_rows(gd)}
    active = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        el = trial_name(t.number)
        found = read_objectives(gd.run_dir(el))
        if found is not None:
            study.tell(t.number, [found["values"][o] for o in sf.objectives])
        elif el in rows and outcome(rows[el]) == "active":
            active += 1
        else:
            state = rows[el]["state"] if el in rows else "never submitted"
            print(f"distadv: trial {t.number} ended without objectives ({state}); told FAIL, "
                  f"a new trial takes its place (logs: {gd.logs})")
            study.tell(t.number, state=TrialState.FAIL)
    return active


REDRAWS = 50   # draws per slot before a small discrete space counts as exhausted


def _ask_new(study, dists):
    """A trial whose values no complete or running trial has: a repeat would retrain the same
    run (NSGA-II's children often repeat a parent in small discrete spaces). Repeats are told
    PRUNED (tagged ``repeat_of``), which the samplers skip. None after REDRAWS repeats."""
    from optuna.trial import TrialState

    key = lambda params: tuple(sorted((k, repr(v)) for k, v in params.items()))  # noqa: E731
    seen = {key(t.params): t.number for t in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))}
    for _ in range(REDRAWS):
        trial = study.ask(dists)
        if key(trial.params) not in seen:
            return trial
        trial.set_user_attr("repeat_of", seen[key(trial.params)])
        study.tell(trial.number, state=TrialState.PRUNED)
    return None


def _loop(gd: GridDir, study, name: str, sf: SearchFile, base, profile, info: Dict,
          poll_s: float) -> List[str]:
    """Ask, submit, wait and tell until ``trials`` are complete; the job arrays submitted."""
    from optuna.trial import TrialState

    from ..compose import load_config
    from ..grid.submit import Plan, submit_plan, wait

    dists, arrays = optuna_distributions(sf.space), []
    while True:
        active = _reconcile(gd, study, sf)
        counts = _counts(study)
        print(f"distadv: search '{name}': {counts['COMPLETE']}/{sf.trials} trials complete, "
              f"{counts['FAIL']} failed, {active} running, {counts['PRUNED']} repeats skipped")
        if counts["COMPLETE"] >= sf.trials:
            return arrays
        if counts["FAIL"] > sf.trials:
            raise SearchError(f"search '{name}': {counts['FAIL']} trials failed (more than "
                              f"trials={sf.trials}); see the jobs' logs in {gd.logs}")
        if active:
            wait(str(gd.path), poll_s)
            continue
        elements = []
        for _ in range(min(sf.parallel, sf.trials - counts["COMPLETE"])):
            trial = _ask_new(study, dists)
            if trial is None:
                print(f"distadv: search '{name}': no configuration the search has not tried in "
                      f"{REDRAWS} draws; the space looks exhausted, stopping here")
                return arrays
            overrides = trial_overrides(sf, trial.params, base)
            trial.set_user_attr("run_dir", str(gd.run_dir(trial_name(trial.number))))
            trial.set_user_attr("overrides", overrides)
            try:
                load_config(overrides)       # a combination the run config refuses: FAIL
            except ConfigError as exc:
                print(f"distadv: trial {trial.number} does not compose ({exc}); told FAIL")
                study.tell(trial.number, state=TrialState.FAIL)
                continue
            shown = ", ".join(f"{k}={v}" for k, v in trial.params.items())
            elements.append(Element(name=trial_name(trial.number), config=shown,
                                    seed=int(base.seed), values=tuple(trial.params.items()),
                                    overrides=tuple(overrides)))
        if not elements:
            continue
        plan = Plan(name, elements, info, gd.path, element=SearchElement(sf.attack), extend=True)
        summary = submit_plan(plan, profile)
        if summary["array"]:
            arrays.append(summary["array"])
        wait(str(gd.path), poll_s)


def check_recipe_name(name: str) -> None:
    """``best_recipe=NAME``: a plain name, and not a recipe a person wrote."""
    from ..compose import recipes_dir
    from ..grid.spec import NAME
    from .pareto import MARK

    if not NAME.match(name):
        raise SearchError(f"best_recipe must be a recipe name (letters, digits, _ . -), got "
                          f"'{name}'")
    path = recipes_dir() / "recipe" / f"{name}.yaml"
    if path.is_file() and MARK not in path.read_text():
        raise SearchError(f"recipe '{name}' exists and was not written by a search; choose "
                          "another best_recipe= name")


def write_outputs(gd: GridDir, study, name: str, sf: SearchFile, base,
                  best_recipe: Optional[str] = None) -> Dict[str, str]:
    """pareto.md, pareto.csv, pareto.png and best_recipe.yaml in the search dir (and
    recipes/recipe/<best_recipe>.yaml if asked); prints the table."""
    from ..compose import recipes_dir
    from ..engine.checkpoint import atomic_write
    from .pareto import front_rows, markdown, plot, recipe_text, write_csv, write_recipe

    rows = front_rows(study, sf.objectives, lambda n: gd.run_dir(trial_name(n)))
    if not rows:
        raise SearchError(f"search '{name}' has no complete trial yet; nothing to report")
    a = sf.attack
    c = _counts(study)
    note = (f"Pareto front of search '{name}' ({c['COMPLETE']} complete, {c['FAIL']} failed "
            f"trials; objectives {', '.join(sf.objectives)}, * = searched). robust_acc: per "
            f"example, the worst of the official AutoAttack {', '.join(a.components)} "
            f"({a.n_iter} iterations, {a.target_classes} target classes) and "
            f"{', '.join(a.also) or 'no other attack'}, on the first {a.max_examples} validation "
            f"examples, best checkpoint, after the search's short training "
            f"({' '.join(sf.short) or 'no short-training overrides'}).")
    table = markdown(rows, sf.objectives, note)
    out = {"pareto.md": gd.path / "pareto.md", "pareto.csv": gd.path / "pareto.csv"}
    atomic_write(out["pareto.md"], (table + "\n").encode())
    write_csv(rows, out["pareto.csv"])
    png = plot(study, sf.objectives, gd.path / "pareto.png")
    if png:
        out["pareto.png"] = png
    best = rows[0]
    text = recipe_text(name, sf.recipe, best, trial_overrides(sf, best["space"], base, short=False))
    out["best_recipe.yaml"] = write_recipe(text, gd.path / "best_recipe.yaml")
    if best_recipe:
        check_recipe_name(best_recipe)
        out["recipe"] = write_recipe(text, recipes_dir() / "recipe" / f"{best_recipe}.yaml")
    print(table)
    print(f"best: trial {best['trial']} -> {out['best_recipe.yaml']}")
    print("wrote " + ", ".join(str(p) for p in out.values()))
    return {k: str(v) for k, v in out.items()}
