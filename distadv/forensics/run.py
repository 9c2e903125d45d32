"""run_forensics(fcfg): the whole study, resumable at each step.

    labelled set (sharded, one chunk per split and attack) -> detector and baseline (rank 0)
    -> adaptive attacks on the test split (sharded) -> metrics, report.json, PNGs (rank 0)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import torch
from omegaconf import OmegaConf

from ..attacks.mode import is_randomised
from ..engine.checkpoint import remove_stale_temporaries
from ..engine.faults import main_writes
from ..engine.setup import make_accelerator
from ..eval.session import run_config
from ..eval.suite_run import attack_seed
from ..files import file_sha256
from .adaptive import adaptive_pgd, adaptive_transform
from .attacks import build_attacks, describe
from .dataset import CLEAN, LabelledSet, attack_shard, labelled_set, make_chunks
from .detector import new_detector, probabilities, train_detector
from .metrics import adversarial_score, auc, detection, evaluate_detector, roc
from .report import confusion_png, roc_png, table, write_report
from .source import DETECTOR_SPLITS, open_run
from .store import Store

DETECTORS = {"detector": True, "baseline": False}     # file stem -> residual filters first


@dataclass
class Study:
    """What every step of one study shares: its config, files, run, processes and log."""

    fcfg: object
    store: Store
    source: object
    accelerator: object
    log: Callable[..., None]


def _fit(study: Study, train: LabelledSet) -> Dict:
    """Both detectors, trained by rank 0 unless their files match (resume), then loaded by
    every rank (the adaptive attack needs the detector on each rank)."""
    store, accelerator, log = study.store, study.accelerator, study.log
    dcfg = study.fcfg.detector
    in_channels = train.images.shape[1]
    out = {}
    for stem, residual in DETECTORS.items():
        path = store.folder / f"{stem}.safetensors"
        extra = {"detector": OmegaConf.to_container(dcfg), "residual": residual}
        model = new_detector(in_channels, len(train.classes), dcfg, residual)
        if store.load(path, extra, recompute=True) is None:
            def fit_and_save():
                log(f"training the {stem} ({'residual filters + CNN' if residual else 'CNN on pixels'}) "
                    f"on {len(train.kind)} images")
                train_detector(model, train.images, train.kind, dcfg,
                               device=accelerator.device, log=log)
                store.save(path, model.state_dict(), extra)
            main_writes(accelerator, fit_and_save, f"rank 0 could not train or write {path}")
        else:
            log(f"{stem}: trained before, loaded from {path}")
        model.load_state_dict(store.load(path, extra))
        out[stem] = model.to(accelerator.device).eval()
    return out


def _adaptive(study: Study, detector) -> Dict[str, Dict]:
    """One adaptive attack per weight on the test split (sharded, resumable): its chunks."""
    store, source, fcfg = study.store, study.source, study.fcfg
    accelerator, log = study.accelerator, study.log
    det_sha = file_sha256(store.folder / "detector.safetensors")
    chunks = {}
    for w in fcfg.adaptive.weights:
        name = f"adaptive_w{w:g}"
        path = store.chunk_path("test", name)
        extra = {"chunk": ["test", name], "adaptive": OmegaConf.to_container(fcfg.adaptive),
                 "detector_sha256": det_sha}
        chunk = store.load(path, extra, recompute=True)
        if chunk is None:
            pgd = adaptive_pgd(source.run_cfg, fcfg.adaptive, source.num_classes, w)
            torch.manual_seed(attack_seed(fcfg.seed, f"test/{name}", 0, accelerator.process_index))
            chunk = attack_shard(source.model, source.loaders["test"], None, accelerator,
                                 num_classes=source.num_classes,
                                 transform=adaptive_transform(source.model, detector, pgd))
            main_writes(accelerator, lambda: store.save(path, chunk, extra),
                        f"rank 0 could not write {path}")
            log(f"test/{name}: classifier accuracy {100 * chunk['correct'].float().mean().item():.2f}%")
        else:
            log(f"test/{name}: done before, not recomputed")
        chunks[name] = chunk
    return chunks


def _scores(detector, images, device) -> np.ndarray:
    return adversarial_score(probabilities(detector, images, device))


def _figures(study: Study, test: LabelledSet, detectors: Dict, adaptive_chunks: Dict) -> Dict:
    """The report's numbers (rank 0): both detectors on the test split, and the adaptive
    attacks (and PGD-L-inf beside them) at the detector's clean-test threshold."""
    store, device = study.store, study.accelerator.device
    res = {}
    for stem, model in detectors.items():
        res[stem] = evaluate_detector(probabilities(model, test.images, device), test,
                                      study.fcfg.fpr)
    det = detectors["detector"]
    clean = _scores(det, test.images[test.of(CLEAN)], device)
    thr = res["detector"]["threshold"]
    kept = set(test.source[test.of(CLEAN)].tolist())      # test sources not shared with train
    adaptive, curves = {}, {}
    rows = dict(adaptive_chunks)
    if "pgd_linf" in test.classes:                     # the same attack, detector not attacked
        rows = {"pgd_linf (detector not attacked)": store.load(
            store.chunk_path("test", "pgd_linf"), {"chunk": ["test", "pgd_linf"]}), **rows}
    for name, chunk in rows.items():
        mask = torch.tensor([int(i) in kept for i in chunk["index"]], dtype=torch.bool)
        s = _scores(det, chunk["images"][mask], device)
        fooled = chunk["correct"][mask].numpy() == 0
        adaptive[name] = {**detection(s, thr, fooled), "auc": auc(clean, s),
                          "classifier_accuracy": float(1 - fooled.mean())}
    for k, name in enumerate(test.classes[1:], start=1):
        s = _scores(det, test.images[test.kind == k], device)
        curves[name] = (*roc(clean, s), res["detector"]["per_attack"][name]["auc"])
    for name, chunk in adaptive_chunks.items():
        s = _scores(det, chunk["images"], device)
        curves[name] = (*roc(clean, s), adaptive[name]["auc"])
    res["adaptive"] = adaptive
    res["curves"] = curves
    return res


def _split_info(s: LabelledSet, run_split: str) -> Dict:
    return {"source_split": run_split, "source_images": int(s.of(CLEAN).sum()),
            "images": len(s.kind),
            "per_class": {c: int(s.of(c).sum()) for c in s.classes},
            "dropped_unchanged": s.dropped}


def run_forensics(fcfg, accelerator=None, log: Callable[..., None] = None) -> Dict:
    """Run the study of ``fcfg`` (a ForensicsConfig DictConfig); returns the report (rank 0;
    the other ranks get {}). Bad input (not a run, unknown attack) is a ConfigError before any work."""
    run_dir = Path(fcfg.run)
    run_cfg = run_config(run_dir)                       # not a run: one line, exit 2
    attacks = build_attacks(fcfg, run_cfg)              # unknown attack: refused before loading
    adaptive_pgd(run_cfg, fcfg.adaptive, 2, 1.0)        # no L-inf threat: refused now, not later
    accelerator = accelerator or make_accelerator(run_cfg)
    main = accelerator.is_main_process
    log = log or (print if main else (lambda *a, **k: None))
    source = open_run(fcfg, accelerator)
    out = Path(fcfg.out) if fcfg.out else run_dir / "forensics"
    if main:
        for folder in (out, out / "chunks"):
            if folder.is_dir():
                remove_stale_temporaries(folder)       # a killed writer's leftovers
    accelerator.wait_for_everyone()
    names = list(fcfg.attacks)
    store = Store(out, {"checkpoint": file_sha256(source.checkpoint), "attacks": names,
                        "max_examples": fcfg.max_examples, "seed": fcfg.seed,
                        "aa_steps": fcfg.aa_steps, "square_queries": fcfg.square_queries})
    x0 = next(iter(source.loaders["test"]))[0].to(accelerator.device)
    randomised = is_randomised(source.model, x0)
    log(f"distadv: forensics of {run_dir} ({fcfg.checkpoint}) on {accelerator.num_processes} "
        f"process(es): clean + {', '.join(names)} -> {out}")
    make_chunks(source, attacks, store, accelerator, seed=fcfg.seed, log=log)
    study = Study(fcfg, store, source, accelerator, log)

    train = labelled_set(store, "train", names)
    test = labelled_set(store, "test", names, exclude=set(train.digests))
    assert not set(train.digests) & set(test.digests), "a source image is in both splits"
    detectors = _fit(study, train)
    adaptive_chunks = _adaptive(study, detectors["detector"])

    report: Dict = {}

    def write():
        figs = _figures(study, test, detectors, adaptive_chunks)
        curves = figs.pop("curves")
        report.update({
            "run": str(run_dir), "checkpoint": str(source.checkpoint),
            "world_size": accelerator.num_processes, "fpr": fcfg.fpr, "randomised": randomised,
            "attacks": {n: describe(a, randomised) for n, a in attacks.items()},
            "attack_warnings": {n: sorted(a.warnings) for n, a in attacks.items()
                                if getattr(a, "warnings", None)},
            "splits": {"train": _split_info(train, DETECTOR_SPLITS["train"]),
                       "test": {**_split_info(test, DETECTOR_SPLITS["test"]),
                                "excluded_shared_with_train":
                                    int(len(store.load(store.chunk_path("test", CLEAN),
                                                       {"chunk": ["test", CLEAN]})["index"])
                                        - test.of(CLEAN).sum())}},
            "disjoint_sources": True,     # asserted above on the images' sha256
            "config": OmegaConf.to_container(fcfg, resolve=True), **figs})
        write_report(out / "report.json", report)
        confusion_png(out / "confusion.png", {"detector (residuals + CNN)": figs["detector"],
                                              "baseline (CNN on pixels)": figs["baseline"]})
        roc_png(out / "roc.png", curves, fcfg.fpr, f"clean vs adversarial: {run_dir.name}")
        print(table(report), flush=True)
        print(f"wrote {out}/report.json, confusion.png, roc.png", flush=True)

    main_writes(accelerator, write, f"rank 0 could not write the report in {out}")
    return report
