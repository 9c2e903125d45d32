"""A model trained elsewhere: ``model=package.module:factory`` and its ``checkpoint=`` file.

The factory is imported by name (from the current directory or sys.path; a file path is not
a module name), called with no arguments, and must return an ``nn.Module`` that takes images
in [0, 1] and does its own normalisation (RobustBench's models do). Weights are read without
running code: ``.pt``/``.pth`` with ``torch.load(weights_only=True)``, ``.safetensors`` with
safetensors. Every failure is one ConfigError line.
"""
from __future__ import annotations

import importlib
import inspect
import os
import pickle
import sys
from pathlib import Path
from typing import Callable, Dict

import torch
from torch import nn

from ..engine import checkpoint as ck
from ..errors import CheckpointError, ConfigError

SPEC_HELP = "model= takes package.module:factory, e.g. mymodels.resnet:ResNet18"
TORCH_SUFFIXES = (".pt", ".pth")


def import_factory(spec: str) -> Callable[[], nn.Module]:
    """The callable named by ``package.module:factory``; the current directory is searched
    after sys.path (``python distadv/evaluate.py`` puts the repository first, not the cwd)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr or "/" in module_name or module_name.endswith(".py"):
        raise ConfigError(f"model='{spec}' is not module:factory; {SPEC_HELP} (a module name "
                          "importable from the current directory or PYTHONPATH, not a file path)")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())     # last: an installed package is never shadowed
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"no module '{module_name}' importable from {os.getcwd()} or "
                              f"sys.path (model={spec}); run from the folder that holds it or "
                              "add it to PYTHONPATH") from None
        raise ConfigError(f"importing {module_name} (model={spec}) failed: {exc}") from None
    except ImportError as exc:
        raise ConfigError(f"importing {module_name} (model={spec}) failed: {exc}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ConfigError(f"{module_name} has no callable '{attr}' (model={spec}); callables "
                          f"there: {', '.join(public[:12]) or 'none'}")
    try:
        inspect.signature(fn).bind()
    except TypeError:
        raise ConfigError(f"{spec} needs arguments; the factory is called with none: write a "
                          "function that returns the model, e.g. def wrn(): return "
                          "WideResNet(depth=28, widen_factor=10)") from None
    except ValueError:                    # builtins without a signature: let the call decide
        pass
    return fn


def build_model(spec: str) -> nn.Module:
    """Call the factory (same weights on every rank only if it is deterministic or loads its
    own; checkpoint= overwrites them anyway) and check it returned a module."""
    model = import_factory(spec)()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module; "
                          "the factory must return the model itself")
    return model


def _plain(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def read_state(path: Path) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: a state dict, or the ``state_dict``/``model`` entry
    of a dict (the layouts RobustBench's load_model reads); nothing in the file is run."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}; with model= checkpoint= takes a .pt, .pth "
                          "or .safetensors file, or none (the factory loads its own weights)")
    if path.suffix == ".safetensors":
        return ck.load_weights(path)
    if path.suffix not in TORCH_SUFFIXES:
        raise ConfigError(f"checkpoint={path}: unknown kind '{path.suffix}'; use a .pt/.pth "
                          "(torch.save of a state dict) or a .safetensors file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise CheckpointError(f"refused to load {path}: it holds pickled objects other than "
                              f"tensors ({first}); save model.state_dict(), not the model") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:   # truncated or not torch's
        raise CheckpointError(f"cannot read {path} with torch.load ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); is it "
                              "complete?", corrupt=True) from None
    for key in (None, "state_dict", "model"):
        state = obj if key is None else obj.get(key) if isinstance(obj, dict) else None
        if _plain(state):
            return state
    keys = sorted(obj)[:8] if isinstance(obj, dict) else []
    raise ConfigError(f"{path} holds no state dict (a {type(obj).__name__}"
                      + (f" with keys {keys}" if keys else "") + "); expected name -> tensor, "
                      "or a dict with one under 'state_dict' or 'model'")


def load_checkpoint(model: nn.Module, path: Path) -> None:
    """Load ``path`` into ``model`` strictly. A 'module.' prefix on every key (saved from a
    DataParallel/DDP wrapper) is removed, as RobustBench's load_model does; missing or
    unexpected keys are one line naming the first few."""
    state = read_state(path)
    own = model.state_dict()
    if all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in own):
        state = {k[len("module."):]: v for k, v in state.items()}
    ck.check_keys(model, state, path)
    model.load_state_dict(state)


def weights_digest(model: nn.Module) -> str:
    """sha256 of the model's tensors (``checkpoint=none``: the weights the factory loaded
    identify the model in the results' fingerprint). Cost: one pass over the weights."""
    return ck._tensor_digest({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
