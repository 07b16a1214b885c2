"""T05: ddp_fashion_mnist.py on one process, under torchrun (2 processes, gloo on the CPU), and as 2 "nodes".

Every launch is a subprocess with a timeout, on a small FashionMNIST-format dataset; the network
is 127.0.0.1 only. The test set has an odd size (301): DistributedSampler's padding would show.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

from common import cli, synthetic
from common.checkpoint import load_weights
from common.lifecycle import TrainingRun
from T02_fashion_mnist import fashion_mnist as t02
from T05_ddp_torchrun import ddp_fashion_mnist as ddp

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "T05_ddp_torchrun" / "ddp_fashion_mnist.py"
TRAIN_SIZE, TEST_SIZE = 512, 301
FLAGS = ["--batch-size", "32", "--test-batch-size", "64", "--log-interval", "8", "--no-accel", "--timeout", "60"]
TORCHRUN_ENV_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                      "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("t05-data")
    synthetic.write_mnist(root, "FashionMNIST", train_size=TRAIN_SIZE, test_size=TEST_SIZE)
    return root


@pytest.fixture(scope="module")
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun gives each of its processes
    yield
    torch.set_num_threads(before)


def child_env() -> dict:
    """The environment for a launched process: one thread each, no stray torchrun variables, loopback only."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV_NAMES}
    env |= {"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo talks over the loopback interface, nothing else
    return env


def torchrun(*args: str, timeout: int = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *args], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:  # bind only: the no-network fixture forbids connecting, not listening
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_single(data_root: Path, out_dir: Path, *flags: str) -> list[dict]:
    """The script in this process, without torchrun: one process, no process group."""
    return ddp.main(["--data-dir", str(data_root), "--out-dir", str(out_dir), *FLAGS, *flags])


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model_state_dict"]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# --- One process, no torchrun -----------------------------------------------------------------

@pytest.fixture(scope="module")
def single_run(data_root, tmp_path_factory, single_thread) -> tuple[Path, list[dict]]:
    out_dir = tmp_path_factory.mktemp("single") / "run"
    return out_dir, run_single(data_root, out_dir, "--epochs", "2")


def test_one_process_without_torchrun(single_run):
    out_dir, history = single_run
    assert not dist.is_initialized()  # no process group for a single process
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(row["processes"] == 1 and row["test_images"] == TEST_SIZE for row in history)
    assert all(row["train_images"] == TRAIN_SIZE for row in history)
    assert history[-1]["test_accuracy"] > 0.8  # the synthetic classes are learnable
    # The checkpoint is the plain model's: T02's ConvNet loads it as it stands.
    load_weights(t02.ConvNet(), out_dir / "checkpoint.pt")


def test_set_epoch_gives_each_epoch_its_own_shuffle(data_root, tmp_path, monkeypatch, single_thread):
    seen_epochs: list[int] = []
    real_iter = DistributedSampler.__iter__

    def spy(sampler):
        seen_epochs.append(sampler.epoch)  # the shuffle's seed is seed + epoch
        return real_iter(sampler)

    monkeypatch.setattr(DistributedSampler, "__iter__", spy)
    run_single(data_root, tmp_path / "run", "--epochs", "2", "--model", "mlp")
    assert seen_epochs == [1, 2]  # without set_epoch: [0, 0], the same order every epoch


def test_resume_continues_exactly(data_root, tmp_path, single_run, single_thread):
    out_dir = tmp_path / "run"
    run_single(data_root, out_dir, "--epochs", "1")
    history = run_single(data_root, tmp_path / "ignored", "--epochs", "2", "--resume", str(out_dir / "checkpoint.pt"),
                         "--out-dir", str(out_dir))
    assert max_difference(weights(out_dir / "checkpoint.pt"), weights(single_run[0] / "checkpoint.pt")) == 0
    assert history[-1]["test_accuracy"] == single_run[1][-1]["test_accuracy"]


# --- Clear, fast failures: checked from the flags and torchrun's variables alone ---------------

def pretend_torchrun(monkeypatch, world_size: int = 2, local_world_size: int = 2) -> None:
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": str(world_size),
                        "LOCAL_WORLD_SIZE": str(local_world_size)}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(("flags", "message"), [
    (["--batch-size", "33"], "does not divide by 2"),
    (["--batch-size", "2"], "batch norm cannot train on one image"),
    (["--backend", "nccl"], "--backend nccl needs CUDA GPUs"),
    (["--sync-bn"], "SyncBatchNorm runs on GPUs only"),
])
def test_bad_set_ups_fail_before_joining_the_group(monkeypatch, tmp_path, flags, message):
    pretend_torchrun(monkeypatch)
    with pytest.raises(cli.UserError, match=re.escape(message)):
        ddp.main(["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "run"), "--no-accel", *flags])
    assert not dist.is_initialized() and not (tmp_path / "run").exists()


def test_more_processes_than_gpus(monkeypatch, tmp_path):
    pretend_torchrun(monkeypatch, world_size=4, local_world_size=4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(cli.UserError, match="4 processes on this machine but only 2 GPU"):
        ddp.main(["--data-dir", str(tmp_path)])
    assert not dist.is_initialized()


def test_a_failure_under_torchrun_is_one_line_and_quick(data_root, tmp_path):
    started = time.monotonic()
    result = torchrun("--standalone", "--nproc-per-node", "2", str(SCRIPT), "--data-dir", str(data_root),
                      "--out-dir", str(tmp_path / "run"), "--no-accel", "--batch-size", "33", timeout=90)
    assert result.returncode != 0
    assert time.monotonic() - started < 60
    ours = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "does not divide by 2" in ours[0]  # rank 0 only, not rank 1 as well
    assert not (tmp_path / "run").exists()


# --- Evaluation: each test image counted once -------------------------------------------------

@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shards_cover_the_test_set_once(world_size):
    dataset = list(range(TEST_SIZE))
    shards = [list(ddp.shard(dataset, ddp.Processes(rank, rank, world_size, torch.device("cpu"))))
              for rank in range(world_size)]
    assert sorted(sum(shards, [])) == dataset  # every image, none twice
    # What DistributedSampler would have given: padding repeats images to even the shards out.
    padded = sum(len(DistributedSampler(dataset, world_size, rank, shuffle=False)) for rank in range(world_size))
    assert padded == -(-TEST_SIZE // world_size) * world_size


# --- The core idea: DDP's averaged gradient is the whole batch's gradient ---------------------

def one_step_worker(rank: int, world_size: int, port: int, images: torch.Tensor, targets: torch.Tensor,
                    out_dir: str, data_root: str) -> None:
    """One process of the one-step test: this rank's half of the batch, one SGD step through the script's DDP.

    Then, as two "machines" of which the second has no data: both must stop, rank 0 saying why.
    """
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    socket.create_connection = socket.getaddrinfo = refuse  # no download from this test, ever (gloo is C++)
    os.environ |= {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                   "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    torch.set_num_threads(1)
    processes = ddp.start_processes(ddp.parse_args(["--no-accel", "--timeout", "30"]))
    torch.manual_seed(0)
    model = t02.build_model("mlp", processes.device)
    optimizer = t02.build_optimizer("sgd", model.parameters(), lr=0.1, momentum=0.9)
    ddp_model = ddp.wrap_model(model, processes)
    share = len(images) // world_size
    mine = slice(rank * share, (rank + 1) * share)
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(ddp_model(images[mine]), targets[mine]).backward()  # DDP averages here
    optimizer.step()
    torch.save(model.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    # Each process its machine's local rank 0; the second machine's data folder is empty.
    args = ddp.parse_args(["--no-accel", "--data-dir", data_root if rank == 0 else str(Path(out_dir) / "empty")])
    try:
        ddp.load_data_once_per_machine(dataclasses.replace(processes, local_rank=0), args)
        outcome = "no error"
    except cli.UserError as err:
        outcome = str(err)
    (Path(out_dir) / f"rank{rank}.txt").write_text(outcome, encoding="utf-8")
    ddp.end_processes(processes)


def test_two_halves_on_two_processes_equal_one_whole_batch(tmp_path, data_root):
    generator = torch.Generator().manual_seed(1)
    images, targets = torch.randn(16, 1, 28, 28, generator=generator), torch.randint(0, 10, (16,), generator=generator)
    env = child_env()
    saved = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "GLOO_SOCKET_IFNAME")}
    os.environ.update({k: env[k] for k in saved if k in env})  # spawned processes inherit these
    try:
        context = torch.multiprocessing.spawn(one_step_worker, args=(2, free_port(), images, targets, str(tmp_path),
                                                                    str(data_root)),
                                              nprocs=2, join=False)
        deadline = time.monotonic() + 90
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                pytest.fail("the 2 processes did not finish within 90 s")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    # One process, the whole batch, the same start.
    torch.manual_seed(0)
    model = t02.build_model("mlp", torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = t02.build_optimizer("sgd", model.parameters(), lr=0.1, momentum=0.9)
    torch.nn.functional.cross_entropy(model(images), targets).backward()
    optimizer.step()
    whole = model.state_dict()
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert max_difference(rank0, rank1) == 0  # every process took the very same step
    assert max_difference(rank0, whole) < 1e-6  # ... the step of one process on the whole batch
    assert max_difference(before, whole) > 1e-3  # and the step did move the weights
    # Data missing on the second "machine": both processes stopped; rank 0 names the rank and the problem.
    said = [(tmp_path / f"rank{r}.txt").read_text(encoding="utf-8") for r in (0, 1)]
    assert said[0].startswith("(rank 1) FashionMNIST is not in ") and "empty" in said[0]
    assert said[1].startswith("FashionMNIST is not in ")


# --- torchrun: 2 processes on one machine -------------------------------------------------------

@pytest.fixture(scope="module")
def torchrun_run(data_root, tmp_path_factory, two_nodes) -> tuple[Path, subprocess.CompletedProcess]:
    # Asks for two_nodes first, so the "two nodes" train while this run does (it waits mostly on imports).
    runs = tmp_path_factory.mktemp("torchrun-runs")
    result = torchrun("--standalone", "--nproc-per-node", "2", str(SCRIPT), "--data-dir", str(data_root),
                      "--out-dir", str(runs / "run"), "--epochs", "2", *FLAGS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return runs, result


def test_torchrun_two_processes_write_one_run_folder(torchrun_run):
    runs, result = torchrun_run
    assert [p.name for p in runs.iterdir()] == ["run"]
    folder = runs / "run"
    assert {"checkpoint.pt", "metrics.json", "metrics.csv", "train.log", "curves.png"} <= {p.name for p in
                                                                                          folder.iterdir()}
    # Rank 0 alone printed: each line once, the accuracy once per epoch.
    out = result.stdout
    assert out.count("Using device:") == 1 and out.count("Run folder:") == 1
    assert len(re.findall(r"^Test Accuracy: [\d.]+%$", out, re.M)) == 2
    assert "2 process(es), backend gloo; global batch 32 = 2 x 16 images per process" in out
    log = (folder / "train.log").read_text(encoding="utf-8")
    assert log.count("Test Accuracy:") == 2
    assert "Traceback" not in result.stderr


def test_torchrun_counts_every_test_image_once(torchrun_run):
    history = json.loads((torchrun_run[0] / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert [row["test_images"] for row in history] == [TEST_SIZE, TEST_SIZE]  # not 302: no padding duplicates
    assert [row["train_images"] for row in history] == [TRAIN_SIZE, TRAIN_SIZE]
    assert all(row["processes"] == 2 for row in history)


def test_torchrun_accuracy_is_close_to_one_process(torchrun_run, single_run):
    history = json.loads((torchrun_run[0] / "run" / "metrics.json").read_text(encoding="utf-8"))
    # Not identical: batch norm normalises each process's 16 images rather than all 32. Within noise.
    assert abs(history[-1]["test_accuracy"] - single_run[1][-1]["test_accuracy"]) < 0.05
    load_weights(t02.ConvNet(), torchrun_run[0] / "run" / "checkpoint.pt")  # no "module." prefixes


# --- Two "nodes" on localhost: the multi-machine command, simulated ------------------------------

@pytest.fixture(scope="module")
def two_nodes(data_root, tmp_path_factory):
    """Two torchrun launchers, one per "node", meeting at a c10d rendezvous on 127.0.0.1: started, not awaited."""
    out_dir = tmp_path_factory.mktemp("two-nodes") / "run"
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(r),
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--nproc-per-node", "1",
                               str(SCRIPT), "--data-dir", str(data_root), "--out-dir", str(out_dir),
                               "--model", "mlp", "--epochs", "1", *FLAGS],
                              cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    yield out_dir, nodes
    for node in nodes:
        node.kill()


def test_two_nodes_on_localhost_train_what_one_process_trains(two_nodes, data_root, tmp_path, single_thread):
    # The MLP has no batch norm, so 2 processes with 16 images each take exactly the steps one
    # process takes with 32: the DistributedSampler deals the same 32 images to the pair.
    out_dir, nodes = two_nodes
    expected = tmp_path / "single"
    run_single(data_root, expected, "--model", "mlp", "--epochs", "1")
    outputs = [node.communicate(timeout=150) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [out[1][-2000:] for out in outputs]
    assert sum(out[0].count("Run folder:") for out in outputs) == 1  # rank 0 (on either node) only
    assert max_difference(weights(out_dir / "checkpoint.pt"), weights(expected / "checkpoint.pt")) < 1e-5


# --- The lifecycle on ranks other than 0 ---------------------------------------------------------

def test_other_ranks_are_quiet_write_nothing_and_resume(tmp_path, capsys):
    import argparse

    def make(out_dir, resume=None, main=True):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        args = argparse.Namespace(out_dir=out_dir, epochs=2, resume=resume, dry_run=False, show=False, lr=0.1,
                                  command_line=[])
        return model, optimizer, TrainingRun("t05.py", args, model, optimizer, must_match=("lr",),
                                             is_main_process=main)

    def one_epoch(model, optimizer, run):
        optimizer.zero_grad()
        model(torch.ones(4, 3)).sum().backward()
        optimizer.step()
        run.end_epoch({"train_loss": 1.0}, {"test_loss": 1.0})

    model, optimizer, run = make(tmp_path / "quiet", main=False)
    with run:
        print("this line is not shown")
        for _ in run.epochs():
            one_epoch(model, optimizer, run)
        run.save_curves("x")
        run.save_weights("w.pt")
    assert capsys.readouterr().out == "" and not (tmp_path / "quiet").exists()
    assert [row["epoch"] for row in run.history] == [1, 2]
    # Resuming: rank 0 writes a checkpoint after epoch 1; another rank reads it and goes on from there.
    model, optimizer, run = make(tmp_path / "main")
    run.args.epochs = 1
    with run:
        for _ in run.epochs():
            one_epoch(model, optimizer, run)
    capsys.readouterr()
    other, other_optimizer, run = make(None, resume=tmp_path / "main" / "checkpoint.pt", main=False)
    with run:
        assert run.start_epoch == 2 and len(run.history) == 1
        assert torch.equal(other.weight, model.weight)
        assert other_optimizer.state_dict()["state"]  # the momentum buffers came too
    assert capsys.readouterr().out == ""
    assert sorted(p.name for p in (tmp_path / "main").iterdir()) == ["checkpoint.pt", "metrics.csv", "metrics.json",
                                                                      "train.log"]
