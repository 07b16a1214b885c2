"""The console and signals, as a real process meets them: a pipe closed early (`| head -1`), a full
stdout (`> /dev/full`), Ctrl-C while torch is still loading, two Ctrl-C in a row, and SIGTERM.

Each must end quietly or with one line, never a traceback, and keep the last finished epoch.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import stand_in_data
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "T01_mnist_nn" / "mnist_nn.py"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and /dev/full")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream-data")
    stand_in_data.write_mnist(root, "MNIST", train_size=640, test_size=100)
    return root


def start(data_dir: Path, out_dir: Path, *flags: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(SCRIPT), "--no-accel", "--log-interval", "1", "--data-dir",
                             str(data_dir), "--out-dir", str(out_dir), *flags], text=True, env=env,
                            stderr=subprocess.PIPE, **kwargs)


def wait_for(process: subprocess.Popen, prefix: str) -> None:
    deadline = time.monotonic() + 120
    for line in process.stdout:
        if line.startswith(prefix) or time.monotonic() > deadline:
            return


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_a_pipe_closed_early_ends_quietly(data_dir, tmp_path):
    """`mnist_nn.py | head -1`: the reader has gone; stop as a Unix tool stops, without a word."""
    process = start(data_dir, tmp_path / "run", "--epochs", "3", stdout=subprocess.PIPE)
    process.stdout.readline()
    process.stdout.close()  # what head does after its one line
    err = process.stderr.read()
    assert process.wait(timeout=120) == 141  # what a shell shows for a tool that SIGPIPE stopped
    assert err == ""


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_a_full_stdout_is_one_line(data_dir, tmp_path):
    with open("/dev/full", "w") as full:
        process = start(data_dir, tmp_path / "run", "--epochs", "1", stdout=full)
        err = process.stderr.read()
    assert process.wait(timeout=120) == 2
    assert err.splitlines() == ["error: the output: No space left on device"]


SCRIPTS = sorted(path.relative_to(REPO).as_posix() for path in REPO.glob("T0*/*.py")
                 if "cli.run_main(main)" in path.read_text())


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_while_torch_loads_ends_without_a_traceback(script):
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, script, "--help"], cwd=REPO, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)  # torch takes a second or more to import
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode in (130, -signal.SIGINT)  # a shell shows both as 130
    assert err == "" and out == ""


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
@pytest.mark.parametrize("signals", [[signal.SIGINT, signal.SIGINT], [signal.SIGTERM]], ids=["ctrl-c-twice", "sigterm"])
def test_a_second_ctrl_c_and_sigterm_stop_as_one_ctrl_c_does(data_dir, tmp_path, signals):
    process = start(data_dir, tmp_path / "run", "--epochs", "50", "--batch-size", "16", stdout=subprocess.PIPE)
    wait_for(process, "Train Epoch: 2 ")
    for number in signals:
        process.send_signal(number)
        time.sleep(0.01)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err == "Interrupted.\n"  # no "Exception ignored in: <module 'threading'>", no traceback
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    interrupted = int(re.search(r"Interrupted in epoch (\d+)", out).group(1))
    assert f"run the same command again with --resume {checkpoint}" in out
    assert torch.load(checkpoint, weights_only=True)["epoch"] == interrupted - 1
