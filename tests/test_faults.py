"""Damaged data, unreadable folders, full disks, racing processes and absurd flags.

Each fault must end as one clear line that names the file (or flag) and the problem,
never a traceback from deep inside torch, and must never delete the user's files.
"""

from __future__ import annotations

import builtins
import errno
import gzip
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import stand_in_data
import torch

from common import cli, data
from common.device import seed_everything

REPO = Path(__file__).resolve().parents[1]


def small_mnist(root: Path, gzipped: bool = False) -> Path:
    """A tiny MNIST (50 train / 20 test images) in `root`; returns its raw folder."""
    return stand_in_data.write_mnist(root, "MNIST", train_size=50, test_size=20, gzipped=gzipped)


def load_error(root: Path, name: str = "mnist") -> str:
    """The one-line UserError that data.download(name, root) gives."""
    with pytest.raises(cli.UserError) as err:
        data.download(name, root)
    message = str(err.value)
    assert "\n" not in message
    return message


# --- 1. MNIST files with bad content --------------------------------------------------------

def test_mnist_label_out_of_range_is_named(tmp_path):
    raw = small_mnist(tmp_path)
    labels = raw / "train-labels-idx1-ubyte"
    content = bytearray(labels.read_bytes())
    content[8 + 5] = 200  # the 6th label, after the 8-byte header
    labels.write_bytes(bytes(content))
    message = load_error(tmp_path)
    assert f"{labels} has label 200 at position 5; labels must be 0 to 9" in message
    assert labels.read_bytes() == bytes(content)  # reported, never deleted


def test_mnist_label_count_differs_from_image_count(tmp_path):
    raw = small_mnist(tmp_path)
    stand_in_data.write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(19, dtype=np.uint8))
    message = load_error(tmp_path)  # the test pair is checked too
    assert f"{raw / 't10k-labels-idx1-ubyte'} has 19 labels but t10k-images-idx3-ubyte has 20 images" in message


def test_mnist_images_that_are_not_28_by_28(tmp_path):
    raw = small_mnist(tmp_path)
    stand_in_data.write_idx(raw / "train-images-idx3-ubyte", np.zeros((50, 32, 32), dtype=np.uint8))
    message = load_error(tmp_path)
    assert f"{raw / 'train-images-idx3-ubyte'} holds images of shape 50 x 32 x 32, not N x 28 x 28" in message


def test_mnist_labels_file_with_images_in_it(tmp_path):
    raw = small_mnist(tmp_path)
    shutil.copy(raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte")
    message = load_error(tmp_path)
    assert f"{raw / 'train-labels-idx1-ubyte'} has 3 dimensions; a labels file has 1" in message


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_bad_labels_end_to_end_one_line_no_traceback(tmp_path):
    raw = small_mnist(tmp_path / "data")
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:8] + bytes([10]) + labels.read_bytes()[9:])
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(REPO / "T01_mnist_nn" / "mnist_nn.py"),
                             "--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out"),
                             "--no-accel", "--epochs", "1"],
                            env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)  # from elsewhere
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {labels} has label 10 at position 0")


# --- 3. Unreadable data folder or file --------------------------------------------------------
# The tests run as root, for whom chmod 000 blocks nothing, so a monkeypatch raises the
# PermissionError that a normal user would get, at the call that would raise it.

def deny(monkeypatch, function_owner, name: str, denied: Path) -> None:
    """Make `function_owner.name(path, ...)` raise PermissionError for `denied`, as the OS would."""
    real = getattr(function_owner, name)

    def fake(path, *args, **kwargs):
        if Path(os.fsdecode(path)) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(denied))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(function_owner, name, fake)


def test_unreadable_data_folder(tmp_path, monkeypatch):
    raw = small_mnist(tmp_path)
    deny(monkeypatch, os, "listdir", raw)
    assert load_error(tmp_path) == f"cannot read {raw}: permission denied"


@pytest.mark.parametrize("file", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte.gz"])
def test_unreadable_data_file(tmp_path, monkeypatch, file):
    raw = small_mnist(tmp_path, gzipped=file.endswith(".gz"))
    deny(monkeypatch, builtins, "open", raw / file)
    assert load_error(tmp_path) == f"cannot read {raw / file}: permission denied"
    assert (raw / file).exists()


def test_unreadable_cifar_batch(tmp_path, monkeypatch):
    stand_in_data.write_cifar10(tmp_path, train_size=50, test_size=10)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    deny(monkeypatch, builtins, "open", batch)  # torchvision's MD5 check opens every file
    assert load_error(tmp_path, "cifar10") == f"cannot read {batch}: permission denied"


# --- 4. Several processes unpacking the same .gz files at once --------------------------------

def unpack_in_step(folders: list[str], barrier, errors) -> None:
    """Worker: for each folder, wait for the others, then unpack it together with them."""
    for folder in folders:
        barrier.wait(timeout=30)  # a worker that died must not leave the others waiting forever
        try:
            data._gunzip(Path(folder))
        except BaseException as err:  # report it to the test instead of dying quietly
            errors.put(f"{folder}: {type(err).__name__}: {err}")


def test_processes_unpacking_the_same_folder_all_succeed(tmp_path):
    # One set of .gz files, big enough (6 MB unpacked) that four unpacks overlap for a while.
    source = tmp_path / "source"
    rng = np.random.default_rng(0)
    stand_in_data.write_idx(source / "train-images-idx3-ubyte", rng.integers(0, 256, (8000, 28, 28)), gzipped=True)
    stand_in_data.write_idx(source / "train-labels-idx1-ubyte", rng.integers(0, 10, 8000), gzipped=True)
    expected = {name: gzip.decompress((source / (name + ".gz")).read_bytes())
                for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")}
    rounds = [shutil.copytree(source, tmp_path / f"round{i}") for i in range(4)]

    # Separate processes (each with its own pid), started by fork where there is one: a spawned
    # process would spend 3 s importing torch before it could race. Windows has only spawn.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    barrier, errors = context.Barrier(4), context.Queue()
    workers = [context.Process(target=unpack_in_step, args=([str(f) for f in rounds], barrier, errors))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == [] and [w.exitcode for w in workers] == [0] * 4
    for folder in rounds:
        for name, content in expected.items():
            assert (folder / name).read_bytes() == content  # byte-identical, whoever won
        assert list(folder.glob("*.partial")) == []  # every process cleaned up after itself


def test_stale_partial_files_are_removed_fresh_ones_kept(tmp_path):
    raw = small_mnist(tmp_path, gzipped=True)
    stale = raw / "train-images-idx3-ubyte.4242.partial"  # left by a process killed two hours ago
    fresh = raw / "train-images-idx3-ubyte.4243.partial"  # another process, writing right now
    old_style = raw / "t10k-labels-idx1-ubyte.partial"  # the name older versions used
    for path in (stale, fresh, old_style):
        path.write_bytes(b"half")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(stale, (two_hours_ago, two_hours_ago))
    os.utime(old_style, (two_hours_ago, two_hours_ago))
    data.download("mnist", tmp_path)
    assert not stale.exists() and not old_style.exists() and fresh.exists()


# --- 5. Flags past what PyTorch can hold ------------------------------------------------------

def parse_error(capsys, words: list[str]) -> str:
    parser = cli.ArgumentParser(prog="prog")
    parser.add_argument("--lr", type=cli.positive_float)
    parser.add_argument("--batch-size", type=cli.positive_int)
    parser.add_common_flags()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(words)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err


@pytest.mark.parametrize(("words", "message"), [
    (["--lr", "1e39"], "--lr: must be a number greater than 0 and at most about 3.4e38, got 1e39"),
    (["--lr", "3.41e38"], "at most about 3.4e38"),
    (["--batch-size", "99999999999999999999"], "--batch-size: must be from 1 to 2147483647, got 99999999999999999999"),
    (["--seed", "18446744073709551616"],
     "--seed: must be from 0 to 18446744073709551615 (2**64 - 1), got 18446744073709551616"),
    (["--seed", "-1"], "--seed: must be from 0 to 18446744073709551615 (2**64 - 1), got -1"),
    (["--seed", "1.5"], "--seed: expected a whole number, got '1.5'"),
])
def test_flags_past_the_limits_give_one_line(capsys, words, message):
    assert message in parse_error(capsys, words)


def test_flags_at_the_limits_are_accepted_and_work():
    assert cli.positive_float("3.4e38") == 3.4e38
    assert torch.tensor(cli.positive_float("3.4028234e38"), dtype=torch.float32).isfinite()
    assert cli.positive_int("2147483647") == 2**31 - 1
    parser = cli.ArgumentParser(prog="prog")
    parser.add_common_flags()
    seed_everything(parser.parse_args(["--seed", "18446744073709551615"]).seed)  # the largest seed torch takes


# --- 6. Full disk or read-only folder while unpacking .gz -------------------------------------

def fail_mid_copy(monkeypatch, code: int) -> None:
    """Make unpacking write some bytes, then fail as a full or read-only disk does."""
    def copy(src, dst, *args, **kwargs):
        dst.write(src.read(100))
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(shutil, "copyfileobj", copy)


@pytest.mark.parametrize(("code", "message"), [
    (errno.ENOSPC, "cannot unpack train-images-idx3-ubyte.gz into {plain}: No space left on device"),
    (errno.EDQUOT, "cannot unpack train-images-idx3-ubyte.gz into {plain}: Disk quota exceeded"),
    (errno.EROFS, "cannot unpack train-images-idx3-ubyte.gz into {plain}: Read-only file system"),
    (errno.EACCES, "cannot unpack train-images-idx3-ubyte.gz into {plain}: Permission denied"),
])
def test_full_or_read_only_disk_while_unpacking(tmp_path, monkeypatch, code, message):
    raw = small_mnist(tmp_path, gzipped=True)
    fail_mid_copy(monkeypatch, code)
    plain = raw / "train-images-idx3-ubyte"
    assert load_error(tmp_path).startswith(message.format(plain=plain))
    assert sorted(p.name for p in raw.iterdir()) == sorted(f + ".gz" for f in data.MNIST_FILES)  # no leftovers


def test_folder_where_no_file_may_be_created(tmp_path, monkeypatch):
    raw = small_mnist(tmp_path, gzipped=True)
    real_open = builtins.open

    def open_but_not_partial(path, *args, **kwargs):  # what a read-only folder does to a new file
        if str(path).endswith(".partial"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_but_not_partial)
    message = load_error(tmp_path)
    plain = raw / "train-images-idx3-ubyte"
    assert message == f"cannot unpack train-images-idx3-ubyte.gz into {plain}: Permission denied"


# --- 5. T02: a validation split that leaves (almost) nothing to train on (issue 18 #15) -------------

@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_a_validation_split_leaving_fewer_than_a_batch_trains_or_is_refused(tmp_path, capsys, model):
    from T02_fashion_mnist import fashion_mnist

    stand_in_data.write_mnist(tmp_path / "data", "FashionMNIST", train_size=100, test_size=20)
    flags = ["--data-dir", str(tmp_path / "data"), "--epochs", "1", "--no-accel", "--model", model]
    history = fashion_mnist.main([*flags, "--val-size", "98", "--out-dir", str(tmp_path / "two")])
    assert history[0]["train_images"] == 2  # fewer than one batch of 64: trained, not dropped
    if model == "mlp":  # no batch norm: even one image trains
        history = fashion_mnist.main([*flags, "--val-size", "99", "--out-dir", str(tmp_path / "one")])
        assert history[0]["train_images"] == 1
    with pytest.raises(SystemExit) as exit_info:  # the real datasets' 60,000 training images
        fashion_mnist.parse_args(["--model", model, "--val-size", "59999"])
    assert exit_info.value.code == 2
    assert "at least 2 must be left to train on" in capsys.readouterr().err


# --- 6. T05 started by hand, without torchrun (issue 18 #16) -----------------------------------------

@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_t05_started_by_hand_with_a_busy_master_port_is_one_line_naming_torchrun(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(busy.getsockname()[1]), "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, str(REPO / "T05_ddp_torchrun" / "ddp_fashion_mnist.py"),
                                 "--no-accel", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "run")],
                                env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    # torch 2.0's c10d also logs native lines ("[W socket.cpp:426] ... Address already in use") before
    # our line; 2.1 and newer do not. No Python traceback either way, and ours is the one line that explains.
    ours = [line for line in result.stderr.splitlines() if not re.match(r"\[[WEI] \w+\.cpp:\d+\]", line)]
    assert len(ours) == 1 and "Start the processes with torchrun" in ours[0] and "Traceback" not in result.stderr
    assert ("address already in use" in ours[0] or "failed to listen" in ours[0]) and not (tmp_path / "run").exists()


# --- 7. predict.py: images of more than 8 bits a pixel (issue 18 #12) --------------------------------

@pytest.mark.parametrize("mode, paper", [("F", 1.0), ("I;16", 65535), ("I", 4095)])
def test_a_float_or_16_bit_image_is_read_by_its_range_not_as_one_flat_colour(tmp_path, mode, paper):
    from PIL import Image

    from common import images

    values = np.full((64, 64), paper, dtype=np.float32)
    values[12:52, 28:36] = paper // 4  # a dark grey "1" on white paper
    path = tmp_path / "digit.tif"
    Image.fromarray(values.astype({"F": np.float32, "I;16": np.uint16, "I": np.int32}[mode])).save(path)
    assert Image.open(path).mode == mode
    digit = images.preprocess_digit(images.open_image(path))  # was "no ink found: ... one flat colour"
    assert digit.max() == pytest.approx(1.0) and (digit > 0.5).sum() > 20


# --- 8. Paths the file system refuses, wherever a flag names one (issue 18 #14) -----------------------

@pytest.mark.parametrize("flag, name", [("--data-dir", ""), ("--resume", "checkpoint.pt")])
def test_a_path_too_long_for_the_file_system_is_one_line(tmp_path, capsys, flag, name):
    from T01_mnist_nn import mnist_nn

    path = tmp_path / ("a" * 300) / name
    with pytest.raises(SystemExit) as exit_info:  # the script's own entry point, in this process
        cli.run_main(lambda: mnist_nn.main(["--no-accel", flag, str(path), "--out-dir", str(tmp_path / "run")]))
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(stderr.splitlines()) == 1 and "File name too long" in stderr
    assert not (tmp_path / "run").exists()
