"""Hydra's own command-line conventions on top of ``key=value`` overrides: ``--help``,
``--cfg job [--resolve]`` and ``-m/--multirun``. We compose with Hydra's compose API (no
``@hydra.main``: see distadv/compose.py), so these flags are handled here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional

from ..errors import ConfigError

HELP = ("-h", "--help")
MULTIRUN = ("-m", "--multirun")


@dataclass
class Command:
    """What the command line asks for: help, the config printed, a sweep, or a plain run."""

    help: bool = False
    cfg: Optional[str] = None        # "job": print the composed config and exit
    resolve: bool = False            # with cfg: resolve interpolations
    multirun: bool = False
    overrides: List[str] = field(default_factory=list)


def parse_command(argv: List[str], multirun: bool = True) -> Command:
    """Split ``argv`` into the flags and the overrides; an unknown flag is one clear line."""
    cmd, i = Command(), 0
    supported = "-h/--help, --cfg job, --resolve" + (", -m/--multirun" if multirun else "")
    while i < len(argv):
        a = argv[i]
        if a in HELP:
            cmd.help = True
        elif a in ("--cfg", "-c") or a.startswith("--cfg="):
            value = a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 0 if "=" in a else 1
            if value != "job":
                raise ConfigError(f"--cfg takes 'job' (the run's config), got '{value}': distadv "
                                  "composes with Hydra's compose API, so there is no hydra "
                                  "section to print; use --cfg job [--resolve]")
            cmd.cfg = value
        elif a == "--resolve":
            cmd.resolve = True
        elif a in MULTIRUN and multirun:
            cmd.multirun = True
        elif a.startswith("-"):                 # overrides start with a key, + or ~
            raise ConfigError(f"unknown option '{a}'; options: {supported}; everything else is "
                              "key=value")
        else:
            cmd.overrides.append(a)
        i += 1
    if cmd.resolve and not cmd.cfg:
        raise ConfigError("--resolve only applies to --cfg job; add --cfg job")
    if cmd.multirun and cmd.cfg:
        raise ConfigError("--cfg job prints one config; drop -m, or print one element of the "
                          "sweep with its own values")
    return cmd


def answer_help(argv: List[str], text: Callable[[], str]) -> Optional[int]:
    """Print ``text()`` and return 0 when ``argv`` asks for help, before anything heavy is
    imported (the script entries call it first); None otherwise."""
    if any(a in HELP for a in argv):
        print(text())
        return 0
    return None


def print_config(cfg, resolve: bool) -> None:
    """The composed config as YAML on stdout (``--cfg job``); nothing is written."""
    from omegaconf import OmegaConf

    print(OmegaConf.to_yaml(cfg, resolve=resolve), end="")
