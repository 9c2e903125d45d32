"""Cluster profiles, ``slurm/clusters/NAME.yaml``: where and how big each element's job is.

Profiles are typed by ``ClusterProfile`` and checked by ``validate_profile`` before anything
is submitted; ``executor`` turns one into a submitit executor for a job array.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import GridError
from ..paths import clusters_dir, profile_names  # noqa: F401  (re-exported)
from .spec import NAME

@dataclass
class ClusterProfile:
    """The schema of a cluster profile (one SLURM job per grid element)."""

    partition: Optional[str] = None  # sbatch --partition (null: the cluster's default)
    account: Optional[str] = None    # sbatch --account
    qos: Optional[str] = None        # sbatch --qos
    constraint: Optional[str] = None  # sbatch --constraint (node features, e.g. a100)
    nodes: int = 1                   # nodes per element (ranks: nodes x tasks per node)
    gpus_per_node: int = 0           # > 0: one task (one rank) per GPU
    cpu_tasks_per_node: int = 1      # ranks per node when gpus_per_node == 0 (CPU clusters)
    cpus_per_task: int = 1           # also the rank's OMP_NUM_THREADS
    mem_gb: Optional[float] = None   # per node; None: the cluster's default
    time_min: int = 60               # time limit per job (the element requeues and resumes)
    signal_delay_s: int = 120        # USR2 this long before the time limit (checkpoint + requeue)
    array_parallelism: int = 16      # elements running at once
    max_requeues: int = 3            # time-limit requeues per element (preemptions: unlimited)
    # True (sbatch --requeue): SLURM requeues an element whose node failed, and preemption or
    # the time limit requeues it (submitit); each requeue resumes from `latest`. False
    # (--no-requeue): the job ends (NODE_FAIL, PREEMPTED, TIMEOUT) and a re-submission resumes.
    requeue: bool = True
    setup: List[str] = field(default_factory=list)   # shell lines run first (module load ...)
    additional: Dict[str, str] = field(default_factory=dict)  # other sbatch options

    @property
    def tasks_per_node(self) -> int:
        """Ranks per node: one per GPU, or ``cpu_tasks_per_node`` on CPU-only nodes."""
        return self.gpus_per_node or self.cpu_tasks_per_node


def load_profile(name: str, overrides: Sequence[str] = ()) -> ClusterProfile:
    """Read ``slurm/clusters/<name>.yaml``, apply ``key=value`` overrides, type-check, validate."""
    valid = profile_names()
    if not NAME.match(name or "") or name not in valid:
        raise GridError(f"unknown cluster profile '{name}'; valid profiles: {', '.join(valid)} "
                        f"(in {clusters_dir()})")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(ClusterProfile),
                              OmegaConf.load(clusters_dir() / f"{name}.yaml"),
                              OmegaConf.from_dotlist(list(overrides)))
        profile = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        keys = ", ".join(ClusterProfile.__dataclass_fields__)
        raise GridError(f"cluster profile '{name}': {str(exc).splitlines()[0]} "
                        f"(profile keys: {keys})") from None
    validate_profile(name, profile)
    return profile


def validate_profile(name: str, p: ClusterProfile) -> None:
    """Refuse values SLURM would reject or that would lose work, naming the key and the fix."""
    checks = [
        (p.nodes >= 1, "nodes must be >= 1"),
        (p.gpus_per_node >= 0, "gpus_per_node must be >= 0 (0: CPU nodes)"),
        (p.cpu_tasks_per_node >= 1, "cpu_tasks_per_node must be >= 1"),
        (p.cpus_per_task >= 1, "cpus_per_task must be >= 1"),
        (p.mem_gb is None or p.mem_gb > 0, "mem_gb must be > 0 (or null for the default)"),
        (p.time_min >= 1, "time_min must be >= 1"),
        (p.signal_delay_s >= 1, "signal_delay_s must be >= 1"),
        # USR2 at/after the start would requeue the job at once, forever.
        (p.signal_delay_s < p.time_min * 60,
         f"signal_delay_s ({p.signal_delay_s}) must be below the time limit "
         f"({p.time_min} min = {p.time_min * 60} s)"),
        (p.array_parallelism >= 1, "array_parallelism must be >= 1"),
        (p.max_requeues >= 0, "max_requeues must be >= 0"),
    ]
    for key in ("partition", "account", "qos", "constraint"):
        v = getattr(p, key)
        checks.append((v is None or (v.strip() and not any(c.isspace() for c in v)),
                       f"{key} must be a name without spaces, got {v!r}"))
    for ok, message in checks:
        if not ok:
            raise GridError(f"cluster profile '{name}': {message}; nothing was submitted")


def executor(profile: ClusterProfile, folder: Path, name: str):
    """A submitit executor whose every job is one element: nodes x tasks_per_node ranks."""
    import submitit  # the `slurm` extra; checked by the submit entry point

    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm",
                               slurm_max_num_timeout=profile.max_requeues)
    setup = [f"export OMP_NUM_THREADS={profile.cpus_per_task}"]
    if profile.gpus_per_node == 0:
        # Accelerate must not look for CUDA on CPU nodes (a CUDA build of torch would try).
        setup.append("export ACCELERATE_USE_CPU=1")
    additional = {"requeue" if profile.requeue else "no-requeue": True, **profile.additional}
    params = dict(nodes=profile.nodes, tasks_per_node=profile.tasks_per_node,
                  cpus_per_task=profile.cpus_per_task, timeout_min=profile.time_min,
                  slurm_signal_delay_s=profile.signal_delay_s,
                  slurm_array_parallelism=profile.array_parallelism,
                  name=name,
                  slurm_setup=setup + list(profile.setup),
                  slurm_additional_parameters=additional)
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    if profile.mem_gb is not None:
        params["mem_gb"] = profile.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            params[f"slurm_{key}"] = getattr(profile, key)
    ex.update_parameters(**params)
    return ex


def as_dict(profile: ClusterProfile) -> dict:
    """Plain dict of a profile (recorded with every submission)."""
    return asdict(profile)
