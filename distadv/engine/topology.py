"""Where the ranks of a run are: host names and the addresses they reach the rendezvous from.

On several nodes the ranks must meet over the nodes' network, not loopback; a host name that
resolves to the wrong interface (or to 127.0.1.1, as on many Debian installs) is the classic
silent trap. Every multi-process run logs one line and records the same in results.json, so a
user (and the multi-node tests) can see which address each rank really uses. The launch
checks that refuse a run whose ranks cannot meet, or did not, live here too.
"""
from __future__ import annotations

import os
import socket
from typing import Dict, List, Optional, Tuple

from ..errors import ConfigError


def resolve(host: str) -> str:
    """``host``'s IPv4 address, or ``host`` itself if it does not resolve here."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def route_address(host: str, port: int) -> Optional[str]:
    """The local address this process reaches ``host:port`` from: a UDP ``connect`` picks the
    route and the source address without sending a packet."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((resolve(host), port))
            return s.getsockname()[0]
    except OSError:
        return None


def this_rank() -> Tuple[str, Optional[str]]:
    """(host name, address towards MASTER_ADDR:MASTER_PORT) of this process."""
    master, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT", "0")
    addr = route_address(master, int(port) or 1) if master else None
    return socket.gethostname(), addr


def check_rank_network() -> None:
    """Refuse a multi-node CPU (gloo) launch whose host name resolves to loopback (Debian's
    127.0.1.1, a container's 127.0.0.1): gloo binds its pairs to that address, and the ranks
    of the other nodes then wait ``runtime.timeout_s`` (30 min by default) before failing.
    Multi-node: WORLD_SIZE above LOCAL_WORLD_SIZE (torchrun and submitit set both)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= int(os.environ.get("LOCAL_WORLD_SIZE", world)) or os.environ.get("GLOO_SOCKET_IFNAME"):
        return
    host = socket.gethostname()
    addr = resolve(host)
    if addr.startswith("127."):
        raise ConfigError(f"this node's host name {host} resolves to {addr} (loopback): gloo "
                          "would listen there and the ranks on other nodes could not connect; "
                          "set GLOO_SOCKET_IFNAME to the interface of the nodes' network "
                          "(`ip -br addr` lists them, e.g. eth0 or ib0) or fix /etc/hosts")


def check_world(accelerator) -> None:
    """Refuse a launch whose ranks did not form one process group (``accelerator``: an
    Accelerator or Accelerate's PartialState): the launcher (torchrun, submitit) says
    WORLD_SIZE=N but Accelerate runs each rank alone, e.g. `--multi_gpu` on a node without GPUs
    and without ACCELERATE_USE_CPU=1. Each rank would otherwise train its own copy into the
    same run directory. Before anything is written."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > accelerator.num_processes:
        raise ConfigError(
            f"the launcher started {launched} ranks (WORLD_SIZE) but Accelerate runs this one "
            f"alone ({accelerator.distributed_type.value}, {accelerator.num_processes} process): "
            "on CPU nodes set ACCELERATE_USE_CPU=1 for DDP over gloo; for DeepSpeed pass its "
            "config with --config_file and no --multi_gpu (slurm/train.sbatch does so when "
            "DISTADV_LAUNCH_ARGS names a config)")


def rank_topology(world_size: int) -> Optional[Dict]:
    """Every rank's host and address, in rank order, plus the rendezvous (a collective: every
    rank calls it). None for a single process. Costs one small all-gather."""
    if world_size <= 1:
        return None
    import torch.distributed as dist

    ranks: List = [None] * world_size
    dist.all_gather_object(ranks, this_rank())
    master = os.environ.get("MASTER_ADDR", "?")
    return {"nodes": len({h for h, _ in ranks}),
            "rendezvous": f"{master}:{os.environ.get('MASTER_PORT', '?')}",
            "rendezvous_addr": resolve(master),
            "gloo_socket_ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
            "ranks": [{"host": h, "addr": a} for h, a in ranks]}


def topology_line(topo: Dict) -> str:
    """One log line: ``2 ranks on 2 node(s), rendezvous node1:29500 (10.77.0.11): rank 0
    node1 10.77.0.11, rank 1 node2 10.77.0.12``."""
    ranks = ", ".join(f"rank {i} {r['host']} {r['addr']}" for i, r in enumerate(topo["ranks"]))
    return (f"distadv: {len(topo['ranks'])} ranks on {topo['nodes']} node(s), rendezvous "
            f"{topo['rendezvous']} ({topo['rendezvous_addr']}): {ranks}")
