"""Two nodes for real: the tests' cluster (slurm/local/start.sh --nodes 2) has node1 and node2,
each a slurmd in its own network namespace, hostname and /etc/hosts, joined by a bridge
(10.77.0.0/24). A rank on node2 reaches node1 only over that network, never over loopback.
Nothing is mocked: the grid element and the sbatch template span both nodes, node2 is lost in
the middle of an epoch (slurm/local/node.sh lose 2), and a 2-node element is preempted."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import NO_CHECK, ROOT, SAME_BATCH, SLURM_START, slurm_cluster
from test_slurm import (env_with, final_state, last_jobs, recipes_with, sacct_states, same_run,
                        submit, wait_epoch)

from distadv.engine.checkpoint import load_state
from distadv.grid.status import ACTIVE
from distadv.grid.submit import wait

NODE = str(ROOT / "slurm/local/node.sh")
ADDR = {"node1": "10.77.0.11", "node2": "10.77.0.12"}
TWO_NODES = ["cluster=local", "cluster.nodes=2"]
# Runs long enough to be interrupted at epoch 2 of 8 (BasicNet at 32x32, ~3 s per epoch).
TIMEOUT_S = 20
LONG = ["optim.epochs=8", "model.name=basicnet", "data.image_size=32", "seed=3",
        f"runtime.timeout_s={TIMEOUT_S}", "log.progress=never", *NO_CHECK]
pytestmark = pytest.mark.slow


@pytest.fixture
def two_nodes(slurm):
    """The tests' cluster (shared with the other SLURM tests), both nodes up and idle."""
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True,
                           check=True).stdout.split()
    assert sorted(nodes) == ["node1", "node2"], nodes


PROBE = """
import errno, socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        print(target, "ok")
    except OSError as e:
        print(target, errno.errorcode.get(e.errno, type(e).__name__))
"""


def test_nodes_reach_each_other_and_the_controller_only(two_nodes):
    """From node2: node1's slurmd (10.77.0.11:6818) and the controller's slurmctld
    (10.77.0.1:6817) answer; the machine's own addresses off the bridge and the world do not
    (no route), and node2's loopback is its own (the controller's port is closed there)."""
    own = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    outside = [a for a in own if "." in a and not a.startswith("10.77.0.")]
    targets = ["10.77.0.11:6818", "10.77.0.1:6817", "127.0.0.1:6817", "192.0.2.1:80",
               "8.8.8.8:53", *(f"{a}:6817" for a in outside)]
    out = subprocess.run([NODE, "exec", "2", sys.executable, "-c", PROBE, *targets],
                         capture_output=True, text=True, check=True).stdout
    got = dict(line.split() for line in out.splitlines())
    assert got["10.77.0.11:6818"] == "ok" and got["10.77.0.1:6817"] == "ok", got
    assert got["127.0.0.1:6817"] == "ECONNREFUSED", got   # node2's own loopback
    for t in targets[3:]:
        assert got[t] == "ENETUNREACH", (t, got)   # no route leaves the bridge


@pytest.fixture(scope="session")
def uninterrupted(two_process_run):
    """The reference of the interrupted runs: LONG as 2 processes on one node, uninterrupted."""
    return two_process_run(*LONG)


@contextmanager
def readonly_on_node2(path: Path, writable=()):
    """``path`` read-only for every process of node2 (a bind mount in node2's own mount
    namespace), except the ``writable`` folders in it. A write from node2 fails with EROFS,
    so a rank there that writes the run directory fails the run."""
    p = shlex.quote(str(path))
    subs = [shlex.quote(str(w)) for w in writable]
    mount = " && ".join([f"mount --bind {p} {p}", *(f"mount --bind {w} {w}" for w in subs),
                         f"mount -o remount,bind,ro {p}"])
    subprocess.run([NODE, "exec", "2", "sh", "-c", mount], check=True)
    probe = subprocess.run([NODE, "exec", "2", "touch", str(path / "probe")], capture_output=True)
    assert probe.returncode != 0 and not (path / "probe").exists()   # the check has teeth
    try:
        yield
    finally:
        subprocess.run([NODE, "exec", "2", "sh", "-c",
                        " ; ".join(f"umount {m}" for m in [*subs[::-1], p])], check=False)


def cross_node_connection(until) -> bool:
    """Poll node2's sockets until one of its TCP connections runs from node2's address to
    node1's (the ranks' gloo pairs and the rendezvous store), or ``until()`` is true."""
    while not until():
        out = subprocess.run([NODE, "exec", "2", "ss", "-tnH", "state", "established"],
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            cols = line.split()
            if any(c.startswith(ADDR["node2"] + ":") for c in cols) and any(
                    c.startswith(ADDR["node1"] + ":") for c in cols):
                return True
        time.sleep(0.2)
    return False


def ended(job: str) -> bool:
    """SLURM has recorded an end of ``job`` (sacct; no record yet is not an end)."""
    states = sacct_states(job)
    return bool(states) and states[-1] not in ACTIVE


def assert_two_nodes(results: dict) -> None:
    """One rank on each node, each using its node's bridge address; the rendezvous on node1."""
    topo = results["topology"]
    assert results["world_size"] == 2 and topo["nodes"] == 2, topo
    assert [(r["host"], r["addr"]) for r in topo["ranks"]] == list(ADDR.items()), topo
    assert topo["rendezvous_addr"] == ADDR["node1"], topo


def assert_same_batch(reference: Path, run: Path) -> None:
    """The 2-vs-1 test's tolerance (tests/test_training.py): weights within 1e-6 (float
    rounding of the all-reduce), natural test accuracy within one of 359 examples."""
    a = load_state(reference / "checkpoints/latest")["model"]
    b = load_state(run / "checkpoints/latest")["model"]
    assert a.keys() == b.keys()
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert diff < 1e-6, diff
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (reference, run))
    assert ra["test_examples"] == rb["test_examples"] == 359
    assert abs(ra["test"]["natural"] - rb["test"]["natural"]) <= 1 / 359


def test_two_node_element_trains_with_one_rank_per_node(two_nodes, two_process_same_batch,
                                                         tmp_path):
    """cluster.nodes=2, one CPU task per node: world size 2, rank 0 on node1 and rank 1 on
    node2 connected over the bridge (seen in node2's sockets), results equal to 2 processes
    on one node, and node2 cannot write the grid directory (only its SLURM logs)."""
    env = env_with(recipes_with(tmp_path, {"one": "recipes: [demo]\n"}))
    gd = tmp_path / "g"
    # Held (begin in 10 min) until node2's view of the grid directory is read-only.
    r = submit("grid=one", *TWO_NODES, "cluster.additional.begin=now+600", f"grid_dir={gd}",
               *SAME_BATCH, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    job = last_jobs(gd)["00-demo-s0"]
    with readonly_on_node2(gd, writable=[gd / ".submitit"]):
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
        seen = cross_node_connection(lambda: ended(job))
        assert wait(str(gd), poll_s=1, timeout_s=400) is True, (gd / f".submitit/{job}_1_log.err")
    assert final_state(job) == "COMPLETED"
    assert seen, "no TCP connection from node2's address to node1's while the job ran"
    run = gd / "00-demo-s0"
    res = json.loads((run / "results.json").read_text())
    assert_two_nodes(res)
    logs = [(gd / ".submitit" / f"{job}_{t}_log.out").read_text() for t in (0, 1)]
    for rank, (host, addr) in enumerate(ADDR.items()):
        assert f"rank {rank}/2 on {host} ({addr}), rendezvous node1:" in logs[rank], logs[rank]
    assert "(10.77.0.11)" in logs[1].split("rendezvous", 1)[1].splitlines()[0]
    assert "2 ranks on 2 node(s)" in logs[0]
    assert_same_batch(two_process_same_batch, run)


def sbatch_on_two_nodes(out: Path, run: Path, env: dict) -> None:
    """slurm/train.sbatch --nodes=2 (one CPU per task) training SAME_BATCH into ``run``, its
    log in ``out``; returns once SLURM has recorded the job COMPLETED."""
    job = subprocess.run(["sbatch", "--parsable", "--nodes=2", "--cpus-per-task=1",
                          f"--output={out}", str(ROOT / "slurm/train.sbatch"), "recipe=demo",
                          *SAME_BATCH, f"run_dir={run}"], capture_output=True, text=True,
                         env=env, cwd=ROOT, check=True).stdout.strip()
    assert final_state(job) == "COMPLETED", out.read_text()[-3000:]


def test_sbatch_template_on_two_nodes(two_nodes, two_process_same_batch, tmp_path):
    """slurm/train.sbatch --nodes=2: srun starts one `accelerate launch` per node, each one
    rank; they meet at node1 and train like 2 processes on one node. node2 cannot write the
    run directory."""
    env = dict(env_with(), DISTADV_PROCS_PER_NODE="1", ACCELERATE_USE_CPU="1")
    out, shared = tmp_path / "out.txt", tmp_path / "shared"
    shared.mkdir()
    with readonly_on_node2(shared):
        sbatch_on_two_nodes(out, shared / "run", env)
    log = out.read_text()
    assert "distadv: 2 node(s) x 1 rank(s), rendezvous node1:" in log
    assert "2 ranks on 2 node(s), rendezvous node1:" in log and "(10.77.0.11)" in log
    res = json.loads((shared / "run/results.json").read_text())
    assert_two_nodes(res)
    assert_same_batch(two_process_same_batch, shared / "run")


def test_sbatch_deepspeed_zero2_on_two_nodes(two_nodes, two_process_same_batch, tmp_path):
    """slurm/train.sbatch --nodes=2 with DISTADV_LAUNCH_ARGS naming the DeepSpeed ZeRO-2
    config: DeepSpeed really runs (not DDP: `--multi_gpu` would override the config's
    distributed_type), one launcher per node (not DeepSpeed's pdsh), each rank writes its own
    ZeRO partition into the shared run directory, and the weights equal DDP's on one node
    (the DeepSpeed-vs-DDP test's tolerance, tests/test_distributed.py)."""
    env = dict(env_with(), DISTADV_PROCS_PER_NODE="1",   # no ACCELERATE_USE_CPU: DeepSpeed
               DISTADV_LAUNCH_ARGS="--config_file recipes/accelerate/deepspeed_zero2.yaml")
    env.pop("ACCELERATE_USE_CPU", None)
    run = tmp_path / "run"
    sbatch_on_two_nodes(tmp_path / "out.txt", run, env)
    res = json.loads((run / "results.json").read_text())
    assert res["distributed"]["type"] == "DEEPSPEED" and res["distributed"]["zero_stage"] == 2
    assert_two_nodes(res)
    assert sorted(p.name for p in (run / "checkpoints").glob("zero-*")) == [
        "zero-e1-rank0", "zero-e1-rank1"]
    assert_same_batch(two_process_same_batch, run)


def error_time(err: Path, start: float, limit: float) -> float:
    """Seconds from ``start`` until the toolkit's one-line error is in ``err``."""
    while time.monotonic() - start < limit:
        if err.is_file() and "distadv: error: a collective failed" in err.read_text():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"no error line in {err} after {limit} s")


def rank_processes(node: int, folder: Path) -> dict:
    """Node ``node``'s rank processes of the jobs in ``folder`` (pid -> command line): the
    Python of `python -m submitit.core._submit FOLDER`. Not the batch step's `srun` with the
    same arguments: it waits for the lost node's step until the controller marks it DOWN."""
    ns = f"dslurm-n{node}"
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    found = {}
    for pid in pids.split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if ("submitit.core._submit" in argv and Path(argv[0]).name != "srun"
                and any(str(folder) in a for a in argv)):
            found[pid] = " ".join(argv)
    return found


def test_node_lost_mid_epoch_fails_fast_and_resumes_exactly(uninterrupted, tmp_path):
    """node2 is lost during epoch 3 (link down, then every process in it SIGKILLed, as in a
    power cut): each element's rank on node1 prints the one-line error within
    runtime.timeout_s and exits; SLURM marks the node DOWN and the job NODE_FAIL, and requeues
    the element of the default profile (requeue: true) but not that of requeue=false. Once
    node2 is back, the requeued element resumes by itself, the other on re-submission, and
    both end identical to an uninterrupted run. The cluster is this test's alone meanwhile:
    the other tests' jobs on node2 would be lost with it."""
    with slurm_cluster(exclusive=True):
        _lose_node2_and_resume(tmp_path, uninterrupted)


def _lose_node2_and_resume(tmp_path: Path, uninterrupted: Path) -> None:
    env = env_with(recipes_with(tmp_path, {"one": "recipes: [demo]\nseeds: [3]\n"}))
    dirs = {"requeue": tmp_path / "requeue", "fail": tmp_path / "fail"}
    extra = {"requeue": [], "fail": ["cluster.requeue=false"]}
    for k, d in dirs.items():
        r = submit("grid=one", *TWO_NODES, *extra[k], f"grid_dir={d}", *LONG, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
    name = "00-demo-s3"
    jobs = {k: last_jobs(d)[name] for k, d in dirs.items()}
    done = {k: wait_epoch(d / name, 2) for k, d in dirs.items()}
    assert all(rank_processes(1, d / ".submitit") for d in dirs.values())   # what is watched
    lost = subprocess.run([NODE, "lose", "2"], capture_output=True, text=True, check=True)
    start = time.monotonic()
    assert "node2 lost" in lost.stdout
    for k, d in dirs.items():
        assert done[k] < 8, f"{k}: the run finished before node2 was lost"
        took = error_time(d / ".submitit" / f"{jobs[k]}_0_log.err", start, TIMEOUT_S + 30)
        assert took <= TIMEOUT_S + 5, f"{k}: the error came {took:.1f} s after node2 was lost"
        print(f"{k}: node1's rank reported the lost peer after {took:.1f} s")
    deadline = time.monotonic() + 10
    while left := {p: c for d in dirs.values() for p, c in rank_processes(1, d / ".submitit").items()}:
        assert time.monotonic() < deadline, f"node1's rank still runs after its error line: {left}"
        time.sleep(0.2)   # no hang
    assert final_state(jobs["fail"], timeout=120) == "NODE_FAIL"
    deadline = time.monotonic() + 120
    while sacct_states(jobs["requeue"])[-2:] != ["NODE_FAIL", "PENDING"]:   # requeued, waits
        assert time.monotonic() < deadline, sacct_states(jobs["requeue"])
        time.sleep(1)
    print(f"SLURM: node2 DOWN, jobs ended after {time.monotonic() - start:.1f} s")

    back = time.monotonic()
    r = subprocess.run(SLURM_START, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"node2 back in {time.monotonic() - back:.1f} s: {r.stdout.strip()}")
    r = submit("grid=one", *TWO_NODES, *extra["fail"], f"grid_dir={dirs['fail']}", *LONG, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resubmitting elements that ended without results: {name} (NODE_FAIL)" in r.stdout
    jobs["resubmitted"] = last_jobs(dirs["fail"])[name]
    for d in dirs.values():
        assert wait(str(d), poll_s=1, timeout_s=400) is True
    for k, job in (("requeue", jobs["requeue"]), ("fail", jobs["resubmitted"])):
        assert final_state(job) == "COMPLETED"
        log = (dirs[k] / ".submitit" / f"{job}_0_log.out").read_text()
        assert "(resume, epoch " in log, log[-2000:]
        same_run(uninterrupted, dirs[k] / name)


def test_two_node_element_preempted_requeues_and_resumes_exactly(two_nodes, uninterrupted,
                                                                  tmp_path):
    """scancel --signal=USR2 of a 2-node element mid-training: submitit's checkpoint path on
    rank 0 requeues it, and it resumes on both nodes to the weights, history and test metrics
    of an uninterrupted run. The ranks are told their interface (GLOO_SOCKET_IFNAME, what a
    real cluster with several networks needs; sbatch exports it to the job)."""
    env = env_with(recipes_with(tmp_path, {"one": "recipes: [demo]\nseeds: [3]\n"}))
    env["GLOO_SOCKET_IFNAME"] = "eth0"        # each node's veth (slurm/local/netns.sh)
    gd, name = tmp_path / "g", "00-demo-s3"
    r = submit("grid=one", *TWO_NODES, f"grid_dir={gd}", *LONG, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    job = last_jobs(gd)[name]
    done = wait_epoch(gd / name, 2)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    assert wait(str(gd), poll_s=1, timeout_s=400) is True
    assert done < 8, "the run finished before it was preempted"
    assert final_state(job) == "COMPLETED" and "REQUEUED" in sacct_states(job)
    logs = [(gd / ".submitit" / f"{job}_{t}_log.out").read_text() for t in (0, 1)]
    assert "Requeued job" in logs[0] and "(resume, epoch " in logs[0], logs[0][-2000:]
    assert "rank 1/2 on node2" in logs[1]
    res = json.loads((gd / name / "results.json").read_text())
    assert_two_nodes(res)
    assert res["topology"]["gloo_socket_ifname"] == "eth0"
    same_run(uninterrupted, gd / name)
