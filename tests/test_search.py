"""Robust architecture search (distadv/search/, slurm/search.py): the digits search's 8 trials
on the real local SLURM in two submissions (the second continues from the journal without
rerunning a trial, and replaces a trial a stopped driver left behind), a third that submits
nothing, the Pareto table against a brute-force dominance check, the best trial's recipe
composed and trained, and bad search files refused with one line and exit 2."""
from __future__ import annotations

import csv
import itertools
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_env, slurm_cluster

from distadv.errors import SearchError

PY = sys.executable


def recipes_copy(tmp: Path, searches: dict = None) -> Path:
    """A copy of recipes/ with extra search files (name -> YAML text)."""
    root = tmp / "recipes"
    shutil.copytree(ROOT / "recipes", root)
    for name, text in (searches or {}).items():
        (root / "search" / f"{name}.yaml").write_text(text)
    return root


def env_for(recipes: Path) -> dict:
    """Environment for the driver; the trial jobs inherit it (sbatch exports it)."""
    env = run_env()
    env["PATH"] = f"{Path(PY).parent}:{env['PATH']}"
    env["DISTADV_RECIPES"] = str(recipes)
    return env


def search(*args, env, timeout=900):
    """Run slurm/search.py; returns the CompletedProcess."""
    return subprocess.run([PY, str(ROOT / "slurm/search.py"), *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


def load_study(sd: Path):
    """The search's study, read from its journal."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(sd / "journal.log")))
    return optuna.load_study(study_name="digits", storage=storage)


def brute_front(points: dict, directions) -> set:
    """Keys of the points no other point dominates (O(n^2), no Optuna)."""
    from distadv.search.pareto import dominates

    return {k for k, p in points.items()
            if not any(dominates(q, p, directions) for j, q in points.items() if j != k)}


# --- the search on the local SLURM --------------------------------------------------------

@pytest.fixture(scope="module")
def digits_search(tmp_path_factory):
    """The digits search (8 trials) in two submissions of 4, with a trial left RUNNING in the
    journal in between (a driver that stopped after asking it), then a third submission."""
    with slurm_cluster():
        tmp = tmp_path_factory.mktemp("search")
        recipes = recipes_copy(tmp)
        env, sd = env_for(recipes), tmp / "digits"
        args = ["search=digits", "cluster=local", f"search_dir={sd}"]
        first = search(*args, "search.trials=4", env=env)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        after_first = {p.name: (p / "objectives.json").stat().st_mtime_ns
                       for p in sd.glob("trial*")}
        from distadv.search.driver import open_study
        from distadv.search.space import load_search
        from distadv.grid.store import GridDir
        import os
        os.environ["DISTADV_RECIPES"] = str(recipes)
        try:
            orphan = open_study(GridDir(sd), "digits", load_search("digits")).ask().number
        finally:
            del os.environ["DISTADV_RECIPES"]
        second = search(*args, env=env)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        third = search(*args, "best_recipe=digits_best", env=env)
        assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    return dict(sd=sd, recipes=recipes, env=env, first=first, second=second, third=third,
                after_first=after_first, orphan=orphan)


@pytest.mark.slow
def test_digits_search_runs_and_continues(digits_search):
    """8 complete trials as two job arrays; the second submission reran none of the first
    4 (their objectives untouched), told the orphaned trial FAIL and replaced it; the third
    submitted nothing."""
    from optuna.trial import TrialState

    sd = digits_search["sd"]
    study = load_study(sd)
    states = {t.number: t.state for t in study.trials}
    complete = sorted(n for n, s in states.items() if s == TrialState.COMPLETE)
    assert len(complete) == 8 and states[digits_search["orphan"]] == TrialState.FAIL
    assert list(states.values()).count(TrialState.FAIL) == 1
    records = [json.loads(line) for line in (sd / "submissions.jsonl").read_text().splitlines()]
    arrays = [r for r in records if "array" in r]
    assert len(arrays) == 2 and [len(r["jobs"]) for r in arrays] == [4, 4]
    submitted = [name for r in arrays for name in r["jobs"]]
    assert len(set(submitted)) == 8                       # no trial submitted twice
    assert f"trial{digits_search['orphan']:03d}" not in submitted
    for name, mtime in digits_search["after_first"].items():  # not retrained, not remeasured
        assert (sd / name / "objectives.json").stat().st_mtime_ns == mtime
    assert "told FAIL" in digits_search["second"].stdout
    assert "8/8 trials complete" in digits_search["third"].stdout
    for n in complete:
        t = study.trials[n]
        got = json.loads((sd / f"trial{n:03d}" / "objectives.json").read_text())
        assert t.values == [got["values"]["robust_acc"], got["values"]["params"]]
        assert got["examples"] == 100 and got["split"] == "val"
        assert "apgd-ce, apgd-t" in got["attack"] and "n_iter 100 -> 10" in got["attack"]
        assert got["values"]["robust_acc"] <= min(got["per_attack"][a] for a in
                                                  ("aa_linf", "pgd_linf")) + 1e-6  # fp32 acc
    status = subprocess.run([PY, str(ROOT / "slurm/status.py"), str(sd)], capture_output=True,
                            text=True, env=digits_search["env"])
    assert status.returncode == 0 and status.stdout.count("(results)") == 8


@pytest.mark.slow
def test_pareto_table_lists_only_non_dominated_trials(digits_search):
    """pareto.csv / pareto.md hold exactly the trials no other complete trial dominates
    (checked by brute force on every trial's objectives.json); the plot is a PNG."""
    sd = digits_search["sd"]
    points = {}
    for p in sd.glob("trial*/objectives.json"):
        v = json.loads(p.read_text())["values"]
        points[int(p.parent.name[5:])] = (v["robust_acc"], v["params"])
    assert len(points) == 8
    front = brute_front(points, ["maximize", "minimize"])
    with open(sd / "pareto.csv") as f:
        listed = [int(r["trial"]) for r in csv.DictReader(f)]
    assert sorted(listed) == sorted(front)
    md = (sd / "pareto.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert sorted(int(r.split("|")[1]) for r in rows) == sorted(front)
    assert (sd / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_best_recipe_composes_and_trains(digits_search, tmp_path):
    """The best trial's recipe (the front's most robust trial; ties: fewer parameters) is
    the demo at full length plus the trial's architecture; it composes and trains."""
    from distadv.compose import load_config

    sd, env = digits_search["sd"], digits_search["env"]
    with open(sd / "pareto.csv") as f:
        rows = list(csv.DictReader(f))
    best = max(rows, key=lambda r: (float(r["robust_acc"]), -int(r["params"]), -int(r["trial"])))
    written = digits_search["recipes"] / "recipe" / "digits_best.yaml"
    assert written.read_text() == (sd / "best_recipe.yaml").read_text()
    import os
    os.environ["DISTADV_RECIPES"] = str(digits_search["recipes"])
    try:
        cfg = load_config(["recipe=digits_best"])
    finally:
        del os.environ["DISTADV_RECIPES"]
    assert cfg.optim.epochs == 20 and cfg.autoattack.enabled     # not the search's 3 epochs
    assert list(cfg.model.blocks) == [int(best["model.blocks.0"]), int(best["model.blocks.1"])]
    assert list(cfg.model.widths) == [int(best["model.widths.0"]), int(best["model.widths.1"])]
    assert cfg.model.activation == best["model.activation"] and cfg.model.name == "preact_resnet"
    run = tmp_path / "best"
    r = subprocess.run([PY, str(ROOT / "distadv/train.py"), "recipe=digits_best",
                        "optim.epochs=1", "runtime.max_steps_per_epoch=3",
                        "autoattack.enabled=false", f"run_dir={run}"],
                       capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run / "results.json").read_text())["best_epoch"] == 1


# --- bad input: one line, exit 2, nothing written (fast) ----------------------------------

def bad_file(space: str, objectives: str = "[robust_acc, params]") -> str:
    """A search file with one space entry (YAML text) and the given objectives."""
    return ("recipe: demo\n"
            "overrides: [model.name=preact_resnet, 'model.blocks=[1,1]', 'model.widths=[8,16]']\n"
            f"space:\n  {space}\nobjectives: {objectives}\n")


@pytest.mark.parametrize("key,objectives,needle", [
    ("model.depthh", "[robust_acc, params]",
     "unknown space key 'model.depthh': 'depthh' is not in model; valid keys there: name,"),
    ("model.blocks.0", "[robust_acc, latency]",
     "unknown objective(s) ['latency']; valid objectives: robust_acc (maximize)"),
])
def test_bad_search_is_one_line_exit_2(tmp_path, key, objectives, needle):
    """An unknown space key or objective: one line naming it and the valid ones, exit 2,
    nothing submitted or written."""
    recipes = recipes_copy(tmp_path, {"bad": bad_file(f"{key}: {{type: int, low: 1, high: 2}}",
                                                      objectives)})
    sd = tmp_path / "sd"
    r = search("search=bad", "cluster=local", f"search_dir={sd}", env=env_for(recipes))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distadv: error: search 'bad': "), r.stderr
    assert needle in lines[0]
    assert not sd.exists()


@pytest.mark.parametrize("space,needle", [
    ("model.blocks.2: {type: int, low: 1, high: 2}", "has 2 entries in the base config"),
    ("model.blocks.x: {type: int, low: 1, high: 2}", "is a list; index one entry by number"),
    ("model: {type: int, low: 1, high: 2}", "is a group of keys, not a value"),
    ("model.blocks.0: {type: int, low: 3, high: 2}", "int needs low <= high"),
    ("model.blocks.0: {type: int, low: 1, high: 2.5}", "int needs whole low, high and step"),
    ("optim.lr: {type: float, low: 0.0, high: 0.1, log: true}", "log needs low > 0 and no step"),
    ("model.activation: {type: categorical, choices: []}", "categorical needs a non-empty list"),
    ("model.activation: {type: choice, choices: [relu]}", "unknown type 'choice'"),
    ("model.activation: {type: categorical, choices: [relu], low: 1}", "takes choices only"),
    ("model.activation: {type: categorical, chioces: [relu]}", "Key 'chioces' not in 'Distribution'"),
    ("run_dir: {type: categorical, choices: [a]}", "set by the search itself"),
    ("model.activation: {type: categorical, choices: [tanh]}", "does not compose"),
])
def test_bad_space_is_refused(tmp_path, monkeypatch, space, needle):
    """Each bad space entry is one SearchError naming the key and the fix (in-process)."""
    from distadv.search.space import check_search, load_search

    monkeypatch.setenv("DISTADV_RECIPES", str(recipes_copy(tmp_path, {"bad": bad_file(space)})))
    with pytest.raises(SearchError) as exc:
        check_search("bad", load_search("bad"))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_list_entries_become_one_override():
    """Entries of one list key join into one override; entries the space leaves out keep the
    fixed values; the best recipe's overrides keep the fixed ones but not the short training."""
    from distadv.search.space import check_search, load_search, trial_overrides

    sf = load_search("digits")
    base = check_search("digits", sf)
    assert sf.overrides == ["model.name=preact_resnet", "model.blocks=[1,1]", "model.widths=[8,16]"]
    ov = trial_overrides(sf, {"model.blocks.1": 2, "model.widths.0": 16,
                              "model.activation": "silu"}, base)
    assert ov == ["recipe=demo", "model.name=preact_resnet", *sf.short, "model.activation=silu",
                  "model.blocks=[1,2]", "model.widths=[16,16]"]
    assert trial_overrides(sf, {"model.blocks.0": 2}, base, short=False) == [
        "recipe=demo", "model.name=preact_resnet", "model.widths=[8,16]", "model.blocks=[2,1]"]


def test_optuna_front_matches_brute_force():
    """study.best_trials (what pareto.md lists) is the brute-force non-dominated set, ties
    and duplicates included, for 2 and 3 objectives."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(0)
    for dirs in (["maximize", "minimize"], ["maximize", "maximize", "minimize"]):
        study = optuna.create_study(directions=dirs)
        for _ in range(60):
            t = study.ask()
            study.tell(t, [rng.choice([0.1, 0.2, 0.3, 0.4]) if d == "maximize"
                           else rng.randint(1, 6) for d in dirs])
        points = {t.number: tuple(t.values) for t in study.trials}
        assert {t.number for t in study.best_trials} == brute_front(points, dirs)


def test_dominance():
    """The brute-force check itself: better in one and no worse in any, per direction."""
    from distadv.search.pareto import dominates

    d = ["maximize", "minimize"]
    assert dominates((0.5, 10), (0.4, 10), d) and dominates((0.5, 9), (0.5, 10), d)
    assert not dominates((0.5, 10), (0.5, 10), d) and not dominates((0.6, 11), (0.5, 10), d)
    assert brute_front({i: p for i, p in enumerate(itertools.product([0, 1], [1, 2]))},
                       d) == {2}                             # (1, 1): most robust, cheapest


def test_extend_keeps_recorded_elements(tmp_path):
    """A search's grid dir grows: new trials are appended, recorded ones keep their overrides,
    a trial recorded with other overrides is refused, and a plain grid still must match."""
    from distadv.errors import GridError
    from distadv.grid.spec import Element
    from distadv.grid.store import GridDir

    gd = GridDir(tmp_path / "g")
    gd.path.mkdir()                                  # submit_plan's lock makes it
    e = lambda n, o: Element(f"trial{n:03d}", "c", 0, (), (o,))  # noqa: E731
    gd.adopt("s", [e(0, "a=1")], {"done": "objectives.json"}, extend=True)
    gd.adopt("s", [e(1, "a=2"), e(0, "a=1")], {"done": "objectives.json"}, extend=True)
    assert [x["name"] for x in gd.elements()] == ["trial000", "trial001"]
    assert gd.done_file() == "objectives.json"
    with pytest.raises(GridError, match="recorded with other overrides"):
        gd.adopt("s", [e(1, "a=3")], {"done": "objectives.json"}, extend=True)
    with pytest.raises(GridError, match="with other elements"):
        gd.adopt("s", [e(0, "a=1")], {"done": "objectives.json"})


def test_help_lists_searches_and_keys():
    """--help answers without SLURM: the searches, the keys, the objectives."""
    r = search("--help", env=run_env())
    assert r.returncode == 0
    for needle in ("search=NAME", "digits", "objectives", "attack.n_iter", "robust_acc (maximise)"):
        assert needle in r.stdout


def test_bad_attack_budget_is_refused():
    """An unknown AutoAttack component or a zero budget: one SearchError naming the key."""
    from distadv.search.space import check_search, load_search

    for override, needle in (("attack.components=[apgd-x]", "unknown attack.components"),
                             ("attack.n_iter=0", "attack.n_iter must be >= 1"),
                             ("sampler=random", "unknown sampler 'random'"),
                             ("attack.also=[pgd_linf2]", "unknown attack.also")):
        with pytest.raises(SearchError, match=needle):
            check_search("digits", load_search("digits", [override]))


def test_worst_case_counts_an_example_only_if_every_attack_fails_to_fool_it():
    """robust_acc over AutoAttack and PGD: per example (verdicts), not the better attack's
    figure; with repeats, the lower mean."""
    from distadv.search.element import worst_case

    one = {"aa_linf": {"acc": 0.75, "runs": [0.75], "verdicts": "1101"},
           "pgd_linf": {"acc": 0.75, "runs": [0.75], "verdicts": "1011"}}
    assert worst_case(one, ["aa_linf", "pgd_linf"]) == 0.5 and worst_case(one, ["aa_linf"]) == 0.75
    rep = {"aa_linf": {"acc": 0.7, "runs": [0.6, 0.8], "verdicts": "11"},
           "pgd_linf": {"acc": 0.65, "runs": [0.65, 0.65], "verdicts": "11"}}
    assert worst_case(rep, ["aa_linf", "pgd_linf"]) == 0.65
