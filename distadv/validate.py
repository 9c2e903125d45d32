"""Semantic checks of a composed config: each failure is one line naming the key and the fix."""
from __future__ import annotations

import re

import torch
from omegaconf import DictConfig, OmegaConf

from .attacks import LOSSES, NORMS
from .attacks.autoattack import check_components, check_version
from .data import DATASETS, SHAPES, image_side
from .data.digits import SIZES as DIGITS_SIZES
from .data.generated import extra_paths, split_counts
from .engine.trackers import check_tracker_names
from .errors import ConfigError
from .models import (ACTIVATIONS, LWTA_DEFAULTS, MODELS, builder_params, create_model,
                     model_activation, model_kwargs)
from .strategies import SINGLE_STEP, STRATEGIES, THREAT_COUNT
from .strategies.addons import check_addons

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")


def _one_of(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}='{value}' is not valid; choose one of: {', '.join(map(str, choices))}")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate_threat(key: str, t: DictConfig) -> None:
    """Check one ThreatConfig found at ``key``."""
    _one_of(f"{key}.norm", t.norm, list(NORMS))
    _check(t.eps > 0, f"{key}.eps must be > 0 (pixel units, e.g. 0.03), got {t.eps}")
    _check(t.norm != "linf" or t.eps <= 1, f"{key}.eps={t.eps} exceeds the [0, 1] pixel range; use e.g. 0.03")
    _check(t.alpha > 0, f"{key}.alpha must be > 0 (e.g. eps/4), got {t.alpha}")
    _check(t.steps >= 1, f"{key}.steps must be >= 1 (1 = FGSM-like), got {t.steps}")
    _check(t.restarts >= 1, f"{key}.restarts must be >= 1, got {t.restarts}")
    _check(t.eot_samples >= 1, f"{key}.eot_samples must be >= 1, got {t.eot_samples}")
    _one_of(f"{key}.loss", t.loss, list(LOSSES))
    _one_of(f"{key}.bn_mode", t.bn_mode, ["eval", "train"])


def _check_model_fits(d, m) -> None:
    """The model must accept the data set's image size (BasicNet needs >= 16 pixels, so
    digits at 8x8 is refused). Built on the meta device: no memory, no time, even for a WRN."""
    classes, channels, _ = SHAPES[d.name]
    side = image_side(d)
    try:
        with torch.device("meta"):
            create_model(m.name, classes, channels, image_size=side, **model_kwargs(m))
    except ValueError as exc:
        if any(w in str(exc) for w in ("LWTA", "widths", "block counts")):  # not the size's fault
            raise ConfigError(f"model.name={m.name} cannot be built from these model.* keys: "
                              f"{exc}; change model.widths, model.blocks or "
                              "model.lwta_competitors") from None
        raise ConfigError(f"model.name={m.name} does not fit {d.name} at {side}x{side}: {exc}; "
                          "choose another model.name or a larger data.image_size") from None


def _check_architecture(m) -> None:
    """model.blocks / model.widths (generic nets) and the LWTA keys, one line each."""
    for key in ("blocks", "widths"):
        value = m.get(key)
        if value is None:
            continue
        _check(key in builder_params(m.name), f"model.{key} is only for preact_resnet and "
               f"resnet (per-stage architecture), not '{m.name}'; remove model.{key}")
        _check(len(value) > 0 and all(int(v) > 0 for v in value),
               f"model.{key} must be a non-empty list of integers > 0, got {list(value)}")
    if m.get("blocks") is not None and m.get("widths") is not None:
        _check(len(m.blocks) == len(m.widths), f"model.blocks has {len(m.blocks)} stages and "
               f"model.widths {len(m.widths)}; give one block count and one width per stage")
    elif m.get("blocks") is not None:
        default = 4 if m.name == "preact_resnet" else 3
        _check(len(m.blocks) == default, f"model.blocks has {len(m.blocks)} stages but the "
               f"default widths have {default}; set model.widths too (one per stage)")
    lwta = model_activation(m.name, m.activation) == "lwta"
    changed = [k for k, v in LWTA_DEFAULTS.items() if m.get(k, v) != v]
    _check(lwta or not changed, f"model.{changed[0] if changed else ''} is for LWTA models "
           f"(model.activation=lwta or an lwta_* model), not '{m.name}' with "
           f"{model_activation(m.name, m.activation) or 'its own'} activation; remove it")
    _check(m.lwta_kl >= 0, f"model.lwta_kl must be >= 0 (0 = off, 1 = the ELBO), got {m.lwta_kl}")
    _check(lwta or m.lwta_kl == 0, f"model.lwta_kl is for LWTA models (model.activation=lwta "
           f"or an lwta_* model), not '{m.name}'; remove it")
    _check(m.lwta_competitors >= 2, f"model.lwta_competitors must be >= 2 (units competing "
           f"in each block; the paper: 2), got {m.lwta_competitors}")
    _check(m.lwta_temperature > 0, f"model.lwta_temperature must be > 0 (the paper: 0.67), "
           f"got {m.lwta_temperature}")
    if lwta and m.get("widths") is not None:
        bad = [int(w) for w in m.widths if int(w) % m.lwta_competitors]
        _check(not bad, f"model.widths {bad} do not divide into LWTA blocks of "
               f"model.lwta_competitors={m.lwta_competitors}; use multiples of it")


def _check_extra(d) -> None:
    """data.extra and its keys (the files themselves are checked when they are opened)."""
    paths = extra_paths(d)
    if not paths:
        _check(d.epoch_samples is None, "data.epoch_samples is for runs with data.extra "
               "(generated images); remove it")
        return
    _check(d.extra is None or isinstance(d.extra, str) or OmegaConf.is_list(d.extra),
           f"data.extra must be a folder or a list of folders, got {d.extra!r}")
    _check(d.loader in ("torch", "device"), f"data.extra works with data.loader=torch or "
           f"device (it reads memory-mapped .npy sets), not '{d.loader}'")
    _check(0 < d.extra_fraction < 1, f"data.extra_fraction must be in (0, 1) (the generated "
           f"share of each batch; DM-AT: 0.7), got {d.extra_fraction}")
    g = int(d.batch_size * d.extra_fraction)
    _check(0 < g < d.batch_size, f"data.batch_size={d.batch_size} at data.extra_fraction="
           f"{d.extra_fraction} gives {g} generated and {d.batch_size - g} real images per batch; "
           "both must be >= 1: raise data.batch_size")
    if d.extra_shares is not None:
        _check(len(d.extra_shares) == len(paths), f"data.extra_shares has {len(d.extra_shares)} "
               f"entries for {len(paths)} set(s) in data.extra; give one weight per set")
        _check(all(w > 0 for w in d.extra_shares), f"data.extra_shares must be > 0, got "
               f"{list(d.extra_shares)}")
        counts = split_counts(g, list(d.extra_shares))
        _check(min(counts) > 0, f"data.extra_shares={list(d.extra_shares)} split the {g} "
               f"generated images per batch as {counts}: a set that gets none is never used; "
               "raise its share or data.batch_size")
    _check(d.epoch_samples is None or d.epoch_samples >= d.batch_size,
           f"data.epoch_samples={d.epoch_samples} is less than one batch ({d.batch_size}); "
           "use e.g. 50000 (DM-AT) or null (the training split's size)")


def _check_single_step(cfg) -> None:
    """strategy.step / noise / grad_align_lambda / free_replays and the single-step threat."""
    s = cfg.strategy
    fast = s.name in SINGLE_STEP
    for key in ("step", "noise"):
        _check(s[key] is None or fast, f"strategy.{key} is for strategy.name in "
               f"{', '.join(SINGLE_STEP)}, not '{s.name}'; remove strategy.{key}")
    _check(s.step is None or s.step > 0, f"strategy.step must be > 0 (in units of eps, e.g. "
           f"1.25 for fgsm_rs), got {s.step}")
    _check(s.noise is None or s.noise >= 0, f"strategy.noise must be >= 0 (in units of eps, e.g. "
           f"2 for n_fgsm), got {s.noise}")
    _check(s.noise is None or s.name != "free", "strategy.noise is not used by free (its "
           "perturbation starts at 0 and is carried over the replays); remove it")
    _check(s.grad_align_lambda >= 0, f"strategy.grad_align_lambda must be >= 0 (e.g. 0.2), got "
           f"{s.grad_align_lambda}")
    _check(s.free_replays >= 1, f"strategy.free_replays must be >= 1 (e.g. 4), got {s.free_replays}")
    _check(s.free_replays == 4 or s.name == "free", f"strategy.free_replays is for "
           f"strategy.name=free, not '{s.name}'; remove it")
    if not fast:
        return
    (name, t), = cfg.train_attacks.items()
    _check(t.steps == 1, f"strategy '{s.name}' makes one step of strategy.step x eps; set "
           f"train_attacks.{name}.steps=1 (its alpha and random_start are not used), got "
           f"steps={t.steps}")
    _check(not t.targeted and t.restarts == 1 and t.eot_samples == 1, f"strategy '{s.name}' "
           f"needs an untargeted train_attacks.{name} without restarts or EOT")
    _check(s.name != "free" or not cfg.awp.enabled, "awp.enabled=true does not work with "
           "strategy free: AWP's proxy backward would reach the carried perturbation; use "
           "fgsm_rs or n_fgsm with AWP, or awp.enabled=false")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first invalid value in ``cfg`` (a composed RunConfig)."""
    for key in ("name", "recipe"):
        value = cfg[key]
        _check(value is None or bool(_NAME.match(str(value))) and ".." not in str(value),
               f"{key}='{value}' is not a safe run name; use letters, digits, '.', '_', '-'")
    d, m, o, s = cfg.data, cfg.model, cfg.optim, cfg.strategy
    _one_of("data.name", d.name, DATASETS.names())
    _check(d.val_size >= 1, f"data.val_size must be >= 1, got {d.val_size}")
    _check(d.test_size is None or d.test_size >= 1,
           f"data.test_size must be >= 1 (or null for the whole test split), got {d.test_size}")
    _check(d.image_size is None or d.name == "digits",
           f"data.image_size is only for digits, not '{d.name}'; remove data.image_size")
    _check(d.image_size is None or d.image_size in DIGITS_SIZES,
           f"data.image_size must be one of {', '.join(map(str, DIGITS_SIZES))} (multiples of the "
           f"native 8x8), got {d.image_size}")
    _check(d.batch_size >= 1 and d.eval_batch_size >= 1, "data.batch_size and data.eval_batch_size must be >= 1")
    _one_of("data.loader", d.loader, ["torch", "device", "ffcv"])
    _check_extra(d)
    _one_of("model.name", m.name, MODELS.names())
    _check(m.width is None or "width" in builder_params(m.name),
           f"model.width is only for preact_resnet18, not '{m.name}'; remove model.width")
    _check(m.width is None or m.width > 0, f"model.width must be > 0, got {m.width}")
    _check(m.activation is None or "activation" in builder_params(m.name),
           f"model.activation is only for smallcnn, resnet20, resnet, preact_resnet18, "
           f"preact_resnet and the wrn* models, not '{m.name}'; remove model.activation")
    if m.activation is not None:
        _one_of("model.activation", m.activation, list(ACTIVATIONS))
    _check_architecture(m)
    _check(m.input_noise >= 0, f"model.input_noise must be >= 0, got {m.input_noise}")
    _check_model_fits(d, m)
    _check(o.epochs >= 1, f"optim.epochs must be >= 1, got {o.epochs}")
    _check(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    _check(0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}")
    _check(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    _one_of("optim.schedule", o.schedule, ["multistep", "cosine", "onecycle", "constant"])
    # Milestones past the last epoch are allowed (short debug runs of a recipe): never reached.
    _check(all(e >= 1 for e in o.milestones), f"optim.milestones {list(o.milestones)} must be >= 1")
    _check(0 < o.pct_start < 1, f"optim.pct_start must be in (0, 1), got {o.pct_start}")
    _check(0 <= o.warmup < 1, f"optim.warmup must be in [0, 1) (a fraction of the steps), got {o.warmup}")
    _check(o.warmup == 0 or o.schedule == "cosine",
           f"optim.warmup is for optim.schedule=cosine (onecycle has pct_start), not '{o.schedule}'")
    _check(o.grad_clip >= 0, f"optim.grad_clip must be >= 0 (0 = off), got {o.grad_clip}")
    _one_of("strategy.name", s.name, STRATEGIES.names())
    _one_of("strategy.mode", s.mode, ["rand", "max"])
    _check(0 <= s.natural_fraction < 1, f"strategy.natural_fraction must be in [0, 1), got {s.natural_fraction}")
    _check(s.eps_warmup_epochs >= 0, f"strategy.eps_warmup_epochs must be >= 0, got {s.eps_warmup_epochs}")
    _check(s.trades_beta >= 0, f"strategy.trades_beta must be >= 0, got {s.trades_beta}")
    _check(0 <= s.label_smoothing < 1, f"strategy.label_smoothing must be in [0, 1), got {s.label_smoothing}")
    _check(s.label_smoothing == 0 or s.name == "trades",
           f"strategy.label_smoothing is for strategy.name=trades, not '{s.name}'")
    _one_of("strategy.trades_start", s.trades_start, ["uniform", "normal"])
    lo, hi = THREAT_COUNT[s.name]
    n = len(cfg.train_attacks)
    _check(lo <= n <= hi, f"strategy '{s.name}' takes {lo}-{hi} train_attacks, the config has {n} "
                          f"({', '.join(cfg.train_attacks) or 'none'})")
    for group in ("train_attacks", "eval_attacks"):
        for name, t in cfg[group].items():
            validate_threat(f"{group}.{name}", t)
    _check_single_step(cfg)
    metrics = ["natural", *cfg.eval_attacks]
    _one_of("early_stop.metric", cfg.early_stop.metric, metrics)
    _check(cfg.early_stop.patience >= 0, f"early_stop.patience must be >= 0, got {cfg.early_stop.patience}")
    problem = check_addons(cfg)            # ema.*, ...: each add-on checks its own block
    _check(not problem, problem or "")
    a = cfg.autoattack
    if a.attacks is not None:
        check_components(list(a.attacks), "autoattack.attacks")
    check_version(a.version, "autoattack.version")
    _check(a.max_examples >= 1, f"autoattack.max_examples must be >= 1 (test examples to "
                                f"attack), got {a.max_examples}; autoattack.enabled=false skips the check")
    for key in ("steps", "target_classes"):
        _check(a[key] is None or a[key] >= 1, f"autoattack.{key} must be >= 1 (or null for the "
                                               f"package's budget), got {a[key]}")
    _check(a.tolerance >= 0, f"autoattack.tolerance must be >= 0 (accuracy, e.g. 0.015), got {a.tolerance}")
    _one_of("runtime.precision", cfg.runtime.precision, ["fp32", "bf16", "fp16", "auto"])
    _one_of("log.progress", cfg.log.progress, ["auto", "always", "never"])
    check_tracker_names(list(cfg.log.trackers))   # names only: installs are the run's check
    # runtime.sync_bn=true is not checked here: a GPU grid is composed on a CPU login node.
    # The run itself refuses it on a machine without GPUs (engine/setup.py check_devices).
    _check(cfg.runtime.timeout_s > 0, f"runtime.timeout_s must be > 0, got {cfg.runtime.timeout_s}")
