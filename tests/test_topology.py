"""Where the ranks are (distadv/engine/topology.py): the log line and results' topology of a
real 2-process run, and the refusal of a multi-node gloo launch whose host name resolves to
loopback (it would wait runtime.timeout_s instead of failing). The two-node cluster runs are
tests/test_multinode.py."""
from __future__ import annotations

import json
import socket
import subprocess

import pytest

from conftest import NO_CHECK, ROOT, run_env
from tools.procs import launch_cmd

from distadv.engine import topology
from distadv.errors import ConfigError


@pytest.fixture
def multinode_env(monkeypatch):
    """The environment torchrun or submitit give rank 0 of 2 nodes x 1 rank."""
    for k, v in dict(WORLD_SIZE="2", LOCAL_WORLD_SIZE="1", RANK="0", MASTER_ADDR="10.77.0.11",
                     MASTER_PORT="29500").items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    return monkeypatch


def test_loopback_host_name_is_refused_on_several_nodes(multinode_env):
    multinode_env.setattr(topology, "resolve", lambda host: "127.0.1.1")
    with pytest.raises(ConfigError, match=r"resolves to 127\.0\.1\.1 \(loopback\).*GLOO_SOCKET_IFNAME"):
        topology.check_rank_network()


@pytest.mark.parametrize("fix", ["ifname", "one_node", "resolves"])
def test_loopback_check_passes_what_works(multinode_env, fix):
    """An interface named, all ranks on one node, or a host name with a real address."""
    multinode_env.setattr(topology, "resolve",
                          lambda host: "10.77.0.12" if fix == "resolves" else "127.0.1.1")
    if fix == "ifname":
        multinode_env.setenv("GLOO_SOCKET_IFNAME", "eth0")
    if fix == "one_node":
        multinode_env.setenv("LOCAL_WORLD_SIZE", "2")
    topology.check_rank_network()


def test_route_address_is_the_local_end_towards_the_rendezvous():
    assert topology.route_address("127.0.0.1", 29500) == "127.0.0.1"
    assert topology.route_address("no-such-host.invalid", 29500) is None


def test_two_process_run_logs_and_records_every_rank(tmp_path):
    """A real 2-process launch on this machine: one line naming both ranks and the
    rendezvous, and the same in results.json."""
    cmd = launch_cmd("distadv/train.py", "recipe=demo", f"run_dir={tmp_path / 'run'}",
                     "optim.epochs=1", "runtime.max_steps_per_epoch=1", "log.progress=never",
                     *NO_CHECK)
    proc = subprocess.run(cmd, env=dict(run_env(), ACCELERATE_USE_CPU="1"), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    topo = json.loads((tmp_path / "run/results.json").read_text())["topology"]
    host = socket.gethostname()
    assert topo["nodes"] == 1 and [r["host"] for r in topo["ranks"]] == [host, host]
    assert topo["ranks"][0]["addr"] == topo["ranks"][1]["addr"] is not None
    line = next(ln for ln in proc.stdout.splitlines() if "ranks on" in ln)
    assert line == topology.topology_line(topo)
    assert line.startswith(f"distadv: 2 ranks on 1 node(s), rendezvous {topo['rendezvous']} (")


def test_ranks_that_formed_no_process_group_are_refused(tmp_path):
    """The ddp launch without ACCELERATE_USE_CPU=1 on a machine without GPUs: torchrun starts 2
    ranks (WORLD_SIZE=2) but Accelerate runs each alone, and each would train its own copy
    into the same run directory (seen through slurm/train.sbatch with a DeepSpeed config
    before it dropped --multi_gpu). Refused at start with the fix; nothing written."""
    cmd = launch_cmd("distadv/train.py", "recipe=demo", f"run_dir={tmp_path / 'run'}",
                     "optim.epochs=1", "runtime.max_steps_per_epoch=1", *NO_CHECK)
    env = run_env()
    env.pop("ACCELERATE_USE_CPU", None)
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert out.count("the launcher started 2 ranks (WORLD_SIZE) but Accelerate runs this one "
                     "alone (NO, 1 process): on CPU nodes set ACCELERATE_USE_CPU=1") == 2, out[-3000:]
    assert not (tmp_path / "run").exists()
