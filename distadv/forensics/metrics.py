"""What a detector is worth on the test split: the confusion matrix over attack types, each
attack's detection rate at a fixed false-positive rate on clean images, and ROC AUC of clean
against adversarial. The adversarial score of an image is 1 - p(clean)."""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve


def adversarial_score(probs: torch.Tensor) -> np.ndarray:
    """1 - p(clean): high = the detector says 'attacked'."""
    return (1.0 - probs[:, 0].double()).numpy()


def threshold_at_fpr(clean_scores: np.ndarray, fpr: float) -> float:
    """The score above which at most ``fpr`` of the clean images lie ('higher' quantile: ties
    at the threshold count as clean, so the measured FPR never exceeds ``fpr``)."""
    return float(np.quantile(clean_scores, 1.0 - fpr, method="higher"))


def auc(clean_scores: np.ndarray, adv_scores: np.ndarray) -> float:
    """ROC AUC of clean (0) against adversarial (1); 0.5 is chance."""
    y = np.r_[np.zeros(len(clean_scores)), np.ones(len(adv_scores))]
    return float(roc_auc_score(y, np.r_[clean_scores, adv_scores]))


def roc(clean_scores: np.ndarray, adv_scores: np.ndarray):
    """(fpr, tpr) arrays of the ROC curve (sklearn's roc_curve)."""
    y = np.r_[np.zeros(len(clean_scores)), np.ones(len(adv_scores))]
    fpr, tpr, _ = roc_curve(y, np.r_[clean_scores, adv_scores])
    return fpr, tpr


def detection(scores: np.ndarray, threshold: float, fooled: np.ndarray) -> Dict:
    """Detection rate of one set of adversarial images at ``threshold``: over all of them,
    and over those that fooled the classifier (the attacks that matter)."""
    hit = scores > threshold
    return {"count": int(len(scores)), "detected": float(hit.mean()) if len(hit) else 0.0,
            "fooled": int(fooled.sum()),
            "detected_fooled": float(hit[fooled].mean()) if fooled.any() else None,
            # fooled the classifier AND passed the detector: the attack's real success
            "evaded": float((fooled & ~hit).mean()) if len(hit) else 0.0}


def evaluate_detector(probs: torch.Tensor, labelled, fpr: float) -> Dict:
    """Every figure of the report for one detector on one labelled split (a
    ``dataset.LabelledSet``: its kind, correct and classes; see the module)."""
    kind, correct, classes = labelled.kind, labelled.correct, labelled.classes
    kind_np = kind.numpy()
    pred = probs.argmax(1).numpy()
    scores = adversarial_score(probs)
    clean = scores[kind_np == 0]
    thr = threshold_at_fpr(clean, fpr)
    per_attack = {}
    for k, name in enumerate(classes[1:], start=1):
        mask = kind_np == k
        per_attack[name] = {**detection(scores[mask], thr, correct.numpy()[mask] == 0),
                            "auc": auc(clean, scores[mask]),
                            "type_accuracy": float((pred[mask] == k).mean())}
    cm = confusion_matrix(kind_np, pred, labels=list(range(len(classes))))
    return {"classes": classes, "confusion": cm.tolist(),
            "accuracy": float((pred == kind_np).mean()),
            "threshold": thr, "fpr_target": fpr, "fpr_measured": float((clean > thr).mean()),
            "auc": auc(clean, scores[kind_np > 0]), "per_attack": per_attack}
