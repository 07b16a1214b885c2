"""T01: mnist_nn.py and get_mnist_statistics.py, end to end on small MNIST-format data."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import stand_in_data
import torch

from common import cli
from T01_mnist_nn import get_mnist_statistics, mnist_nn
from tests.lesson_tools import (
    RecordingSGD,
    count_single_image_reads,
    expected_gradients,
    extract_definitions,
    record_modes,
    run_copied_code,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "T01_mnist_nn" / "mnist_nn.py"
TIMING_KEYS = {"seconds", "train_images_per_second"}


def run(mnist_root: Path, out_dir: Path, *flags: str) -> list[dict]:
    return mnist_nn.main(["--data-dir", str(mnist_root), "--out-dir", str(out_dir), "--no-accel", *flags])


def safe_load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def test_simple_nn_matches_the_post():
    model = mnist_nn.SimpleNN()
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {"fc1.weight": (128, 784), "fc1.bias": (128,), "fc2.weight": (10, 128), "fc2.bias": (10,)}
    out = model(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)  # log-probabilities


# The MNIST post's class, written as the post writes it (the name and the attribute names are what a
# state_dict carries). Reconstructed: the post's text is not available here, so this follows issue 19's
# description of it (fc1 784 -> 128, fc2 128 -> 10, x.view(-1, 28*28), log_softmax for nll_loss),
# not a copy of the post.
POSTS_SIMPLE_NN = textwrap.dedent("""
    import torch.nn as nn
    import torch.nn.functional as F

    class SimpleNN(nn.Module):
        def __init__(self):
            super(SimpleNN, self).__init__()
            self.fc1 = nn.Linear(28*28, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = x.view(-1, 28*28)
            x = F.relu(self.fc1(x))
            x = self.fc2(x)
            return F.log_softmax(x, dim=1)
""")


def test_the_posts_simple_nn_weights_load_strictly_into_simple_nn():
    post = {}
    exec(POSTS_SIMPLE_NN, post)
    torch.manual_seed(0)
    theirs = post["SimpleNN"]()
    ours = mnist_nn.SimpleNN()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()) == 101_770
    images = torch.randn(4, 1, 28, 28)
    assert torch.allclose(ours.eval()(images), theirs.eval()(images), atol=1e-6)

def test_gamma_1_keeps_the_learning_rate_constant_as_the_post_does(mnist_root, tmp_path, capsys):
    """StepLR(gamma=0.7) is pytorch/examples'; the post has no schedule, which --gamma 1 reproduces."""
    history = run(mnist_root, tmp_path, "--epochs", "2", "--gamma", "1", "--log-interval", "100")
    assert [row["lr"] for row in history] == [1.0, 1.0]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        mnist_nn.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "from pytorch/examples, not the post; --gamma 1 keeps the lr constant" in help_text


def test_trains_end_to_end(mnist_root, tmp_path, capsys):
    history = run(mnist_root, tmp_path, "--epochs", "3", "--test-batch-size", "200")
    out = capsys.readouterr().out
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"] * 0.8  # the loss falls
    assert history[-1]["test_accuracy"] > 0.6  # ten classes: chance is 0.1
    assert history[-1]["test_images"] == 500  # every test image, the last partial batch included
    # The post's output lines, with percentages that reach 100%.
    assert "Train Epoch: 1 [640/2000 (32%)]\tLoss: " in out
    assert "Train Epoch: 3 [2000/2000 (100%)]\tLoss: " in out
    assert re.search(r"Test set: Average loss: \d+\.\d{4}, Accuracy: \d+/500 \(\d+%\)", out)
    assert re.search(r"Epoch 3 took \d+\.\d s \(training: [\d,]+ images/s\)", out)
    assert "Using device: cpu" in out
    for name in ("metrics.json", "metrics.csv", "curves.png", "checkpoint.pt", "train.log"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "metrics.json").read_text()) == history
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    log = (tmp_path / "train.log").read_text()  # the run's own record: one line per epoch, time-stamped
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d Epoch 3 took .*test_accuracy", log, re.MULTILINE)
    assert "Using device: cpu" in log and "'epochs': 3" in log


def test_training_reads_whole_batches_that_equal_torchvisions_transform(mnist_root, tmp_path, monkeypatch):
    """The tensors made once in main() are what ToTensor() + Normalize() give image by image, and the
    training loader takes them a whole batch at a time (no image is read alone)."""
    from torchvision import datasets, transforms

    made = {}
    real_loader = mnist_nn.DataLoader

    def keep(dataset, *args, **kwargs):
        made.setdefault("train" if "sampler" in kwargs else "test", dataset)
        return real_loader(dataset, *args, **kwargs)

    monkeypatch.setattr(mnist_nn, "DataLoader", keep)
    reads = count_single_image_reads(monkeypatch)
    real_train, while_training = mnist_nn.train, []

    def counting_train(*args, **kwargs):
        before = len(reads)
        result = real_train(*args, **kwargs)
        while_training.extend(reads[before:])
        return result

    monkeypatch.setattr(mnist_nn, "train", counting_train)
    run(mnist_root, tmp_path, "--epochs", "1", "--log-interval", "100")
    monkeypatch.undo()
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    for part, train in (("train", True), ("test", False)):
        reference = datasets.MNIST(mnist_root, train=train, transform=transform)
        images, labels = made[part].tensors
        for i in (0, 1, len(reference) - 1):
            assert torch.equal(images[i], reference[i][0]) and labels[i] == reference[i][1]  # bit for bit
    assert while_training == []  # whole batches only, while training


def test_same_seed_same_metrics_other_seed_differs(mnist_root, tmp_path):
    first = run(mnist_root, tmp_path / "a", "--epochs", "1", "--seed", "3")
    second = run(mnist_root, tmp_path / "b", "--epochs", "1", "--seed", "3")
    other = run(mnist_root, tmp_path / "c", "--epochs", "1", "--seed", "4")
    assert without_timing(first) == without_timing(second)
    assert without_timing(first) != without_timing(other)


def test_dry_run_is_one_batch_each(mnist_root, tmp_path, capsys):
    history = run(mnist_root, tmp_path, "--dry-run", "--epochs", "5", "--test-batch-size", "100")
    out = capsys.readouterr().out
    assert len(history) == 1
    assert history[0]["train_images"] == 64 and history[0]["test_images"] == 100
    assert "Dry run: stopping after one batch of training." in out
    assert "Accuracy: " in out and "/100 (" in out  # the accuracy of the batch it tested, not of 10,000


def test_save_model_reloads_to_identical_outputs(mnist_root, tmp_path):
    run(mnist_root, tmp_path, "--epochs", "1", "--save-model")
    state = safe_load(tmp_path / "mnist_simple_nn.pt")
    reloaded = mnist_nn.SimpleNN()
    reloaded.load_state_dict(state)
    trained = mnist_nn.SimpleNN()
    trained.load_state_dict(safe_load(tmp_path / "checkpoint.pt")["model_state_dict"])
    images = torch.randn(16, 1, 28, 28)
    assert torch.equal(reloaded(images), trained(images))


def test_resume_continues_and_matches_an_uninterrupted_run(mnist_root, tmp_path, capsys):
    straight = run(mnist_root, tmp_path / "straight", "--epochs", "2")
    run(mnist_root, tmp_path / "split", "--epochs", "1")
    resumed = mnist_nn.main(["--data-dir", str(mnist_root), "--no-accel", "--epochs", "2",
                             "--resume", str(tmp_path / "split" / "checkpoint.pt")])
    assert "Resuming from" in capsys.readouterr().out
    assert [row["epoch"] for row in resumed] == [1, 2]  # the history carries on in the same folder
    assert without_timing(resumed) == without_timing(straight)
    weights_straight = safe_load(tmp_path / "straight" / "checkpoint.pt")["model_state_dict"]
    weights_resumed = safe_load(tmp_path / "split" / "checkpoint.pt")["model_state_dict"]
    assert all(torch.equal(weights_straight[k], weights_resumed[k]) for k in weights_straight)


def test_ctrl_c_mid_epoch_then_the_printed_command_equals_an_uninterrupted_run(mnist_root, tmp_path, monkeypatch,
                                                                              capsys):
    flags = ["--epochs", "3", "--lr", "0.8", "--gamma", "0.5", "--batch-size", "50", "--log-interval", "100"]
    straight = run(mnist_root, tmp_path / "straight", *flags)
    real_step, calls = torch.optim.Adadelta.step, {"n": 0}

    def step_then_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 40 + 7:  # 40 batches make an epoch here: Ctrl-C 7 batches into epoch 2
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adadelta, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(mnist_root, tmp_path / "split", *flags)
    monkeypatch.undo()
    out = capsys.readouterr().out
    checkpoint = tmp_path / "split" / "checkpoint.pt"
    assert safe_load(checkpoint)["epoch"] == 1  # the last finished epoch, untouched
    assert f"{checkpoint} holds epoch 1" in out and f"run the same command again with --resume {checkpoint}" in out
    assert json.loads((tmp_path / "split" / "metrics.json").read_text()) == safe_load(checkpoint)["metrics"]
    command = ["--data-dir", str(mnist_root), "--out-dir", str(tmp_path / "split"), "--no-accel", *flags]
    resumed = mnist_nn.main([*command, "--resume", str(checkpoint)])  # the same command, with --resume
    assert without_timing(resumed) == without_timing(straight)
    assert [row["lr"] for row in resumed] == [0.8, 0.4, 0.2]  # StepLR once per epoch: lr x gamma each time
    weights = safe_load(tmp_path / "split" / "checkpoint.pt")["model_state_dict"]
    expected = safe_load(tmp_path / "straight" / "checkpoint.pt")["model_state_dict"]
    assert all(torch.equal(weights[k], expected[k]) for k in expected)  # bit for bit


def test_resume_with_other_settings_names_each(mnist_root, tmp_path, capsys):
    run(mnist_root, tmp_path, "--epochs", "1")
    capsys.readouterr()
    err = user_error(["--data-dir", str(mnist_root), "--epochs", "2", "--lr", "0.5", "--gamma", "0.9",
                      "--batch-size", "32", "--resume", str(tmp_path / "checkpoint.pt")], capsys)
    for words in ("--lr 1.0 (this run: 0.5)", "--gamma 0.7 (this run: 0.9)", "--batch-size 64 (this run: 32)"):
        assert words in err
    err = user_error(["--data-dir", str(mnist_root), "--epochs", "2", "--seed", "2",
                      "--resume", str(tmp_path / "checkpoint.pt")], capsys)
    assert "--seed 1 (this run: 2)" in err


def test_diverging_run_stops_and_saves_no_weights(mnist_root, tmp_path, capsys):
    err = user_error(["--data-dir", str(mnist_root), "--out-dir", str(tmp_path / "run"), "--no-accel",
                      "--lr", "3e38", "--epochs", "2", "--save-model"], capsys)
    assert "training diverged in epoch 1" in err and "learning rate 3e+38" in err and "smaller --lr" in err
    assert not (tmp_path / "run").exists()  # no NaN weights, no checkpoint, no half-made folder


# --- the lesson itself: mistakes a beginner makes must turn these red ---------------------------

def small_loader(count: int = 96, batch_size: int = 32) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    images, targets = torch.randn(count, 1, 28, 28, generator=generator), torch.randint(0, 10, (count,))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, targets), batch_size=batch_size)


def test_every_step_uses_this_batchs_gradient_alone(capsys):
    """Catches a missing optimizer.zero_grad() (gradients pile up) and a loss that is not the batch mean."""
    torch.manual_seed(0)
    model, loader = mnist_nn.SimpleNN(), small_loader()
    optimizer = RecordingSGD(model.parameters())
    mnist_nn.train(model, torch.device("cpu"), loader, optimizer, epoch=1, log_interval=100)
    expected = expected_gradients(model, torch.nn.functional.nll_loss, loader)
    assert len(optimizer.gradients) == len(expected) == 3
    for got, want in zip(optimizer.gradients, expected):
        assert all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got, want))


def test_train_runs_in_training_mode_and_test_in_eval_mode(capsys):
    model, loader = mnist_nn.SimpleNN(), small_loader()
    modes = record_modes(model)
    model.eval()  # left in the wrong mode on purpose: train() must switch
    mnist_nn.train(model, torch.device("cpu"), loader, torch.optim.Adadelta(model.parameters()), epoch=1)
    assert modes == [True, True, True]
    modes.clear()
    mnist_nn.test(model, torch.device("cpu"), loader)
    assert modes == [False, False, False]


def test_test_loss_is_the_mean_over_every_image_with_a_partial_last_batch(capsys):
    torch.manual_seed(0)
    model, loader = mnist_nn.SimpleNN(), small_loader(count=90, batch_size=40)  # batches of 40, 40, 10
    metrics = mnist_nn.test(model, torch.device("cpu"), loader)
    images, targets = loader.dataset.tensors
    with torch.no_grad():
        output = model(images)
    assert metrics["test_loss"] == pytest.approx(torch.nn.functional.nll_loss(output, targets).item(), rel=1e-5)
    assert metrics["test_correct"] == (output.argmax(1) == targets).sum().item() and metrics["test_images"] == 90


def test_training_set_is_shuffled_every_epoch_and_test_set_never(mnist_root, tmp_path, monkeypatch):
    """Catches the blog's bug: shuffle=True only in the CUDA options (never shuffled on a CPU)."""
    seen = {"train": [], "test": []}
    real_train, real_test = mnist_nn.train, mnist_nn.test

    def spy_train(model, device, loader, *args, **kwargs):
        seen["train"].append(next(iter(loader))[1][:20].tolist())  # the first labels this epoch would see
        return real_train(model, device, loader, *args, **kwargs)

    def spy_test(model, device, loader, *args, **kwargs):
        seen["test"].append([int(t) for t in next(iter(loader))[1][:20]])
        return real_test(model, device, loader, *args, **kwargs)

    monkeypatch.setattr(mnist_nn, "train", spy_train)
    monkeypatch.setattr(mnist_nn, "test", spy_test)
    run(mnist_root, tmp_path, "--epochs", "2", "--log-interval", "100")
    raw = np.frombuffer((mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes(), np.uint8, offset=8)
    assert seen["test"][0] == seen["test"][1] == raw[:20].tolist()  # the file's own order, every time
    train_raw = np.frombuffer((mnist_root / "MNIST" / "raw" / "train-labels-idx1-ubyte").read_bytes(), np.uint8,
                              offset=8)
    assert seen["train"][0] != train_raw[:20].tolist() and seen["train"][0] != seen["train"][1]


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_model_train_and_test_copy_out_alone_and_the_whole_script_needs_common(tmp_path):
    """Both halves of the root README's promise, in one process (each new process spends seconds importing torch):
    SimpleNN, train() and test() copied alone train; the whole script copied without common/ stops with one line."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "mnist_nn.py").write_text(SCRIPT.read_text(encoding="utf-8"), encoding="utf-8")
    code = extract_definitions(SCRIPT, ["SimpleNN", "train", "test"]) + textwrap.dedent("""
        torch.manual_seed(0)
        images = torch.randn(256, 1, 28, 28)
        targets = (images.mean(dim=(1, 2, 3)) > 0).long()  # a rule the network can learn
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, targets), batch_size=32,
                                             shuffle=True)
        model = SimpleNN()
        optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
        for epoch in (1, 2, 3):
            train_metrics = train(model, torch.device("cpu"), loader, optimizer, epoch=epoch, log_interval=4)
        test_metrics = test(model, torch.device("cpu"), loader)
        assert test_metrics["test_accuracy"] > 0.8, test_metrics
        print("copied code OK", flush=True)

        import runpy
        runpy.run_path("mnist_nn.py", run_name="__main__")  # the whole script, without common/
    """)
    result = run_copied_code(code, folder)
    assert "copied code OK" in result.stdout and "Train Epoch: 3 [256/256 (100%)]" in result.stdout, result.stderr
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "needs the repository's common/ folder" in result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs: must be from 1 to 2147483647, got 0"),
    (["--epochs", "-2"], "--epochs: must be from 1 to 2147483647, got -2"),
    (["--epochs", "1.5"], "--epochs: expected a whole number, got '1.5'"),
    (["--batch-size", "0"], "--batch-size: must be from 1"),
    (["--test-batch-size", "-1"], "--test-batch-size: must be from 1"),
    (["--lr", "0"], "--lr: must be a number greater than 0"),
    (["--lr", "-0.5"], "--lr: must be a number greater than 0"),
    (["--lr", "nan"], "--lr: must be a number greater than 0"),
    (["--lr", "1e39"], "--lr: must be a number greater than 0 and at most about 3.4e38"),
    (["--gamma", "abc"], "--gamma: expected a number"),
    (["--seed", "-1"], "--seed: must be from 0 to"),
    (["--out-dir", ""], "--out-dir: must name a folder"),
    (["--log-interval", "0"], "--log-interval: must be from 1"),
    (["--optimizer", "adam"], "unrecognized arguments: --optimizer adam"),
])
def test_bad_flags_one_line_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        mnist_nn.main(flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and err.count("\n") == 1


def user_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(lambda: mnist_nn.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def test_unknown_device(mnist_root, tmp_path, capsys):
    assert "unknown device 'tpu'" in user_error(["--device", "tpu", "--out-dir", str(tmp_path)], capsys)


def test_missing_resume_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        mnist_nn.main(["--resume", str(tmp_path / "nope.pt"), "--out-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "checkpoint" in err and "nope.pt does not exist" in err
    assert not (tmp_path / "run").exists()


def test_resume_refuses_another_scripts_checkpoint_and_fields_of_the_wrong_type(mnist_root, tmp_path, capsys):
    run(mnist_root, tmp_path / "run", "--epochs", "1")
    capsys.readouterr()
    checkpoint = safe_load(tmp_path / "run" / "checkpoint.pt")
    torch.save({**checkpoint, "script": "fashion_mnist"}, tmp_path / "other.pt")
    err = user_error(["--data-dir", str(mnist_root), "--epochs", "2", "--resume", str(tmp_path / "other.pt")], capsys)
    assert "was written by fashion_mnist, not by mnist_nn" in err
    for damage in ({"epoch": "one"}, {"metrics": None}, {"rng": {}}):
        torch.save({**checkpoint, **damage}, tmp_path / "damaged.pt")
        err = user_error(["--data-dir", str(mnist_root), "--epochs", "2", "--resume", str(tmp_path / "damaged.pt")],
                         capsys)
        assert f"{next(iter(damage))} missing or of the wrong type" in err
    (tmp_path / "weights.pt").write_bytes(b"not a checkpoint at all")
    err = user_error(["--data-dir", str(mnist_root), "--epochs", "2", "--resume", str(tmp_path / "weights.pt")], capsys)
    assert "is not a readable PyTorch checkpoint" in err


def test_resume_of_a_finished_run_writes_its_outputs_and_fewer_epochs_are_refused(mnist_root, tmp_path, capsys):
    run(mnist_root, tmp_path, "--epochs", "2")
    (tmp_path / "curves.png").unlink()  # as if Ctrl-C had come right after the last checkpoint
    capsys.readouterr()
    history = mnist_nn.main(["--data-dir", str(mnist_root), "--epochs", "2", "--save-model",
                             "--resume", str(tmp_path / "checkpoint.pt")])
    assert [row["epoch"] for row in history] == [1, 2]  # nothing trained again
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "mnist_simple_nn.pt").is_file()
    err = user_error(["--data-dir", str(mnist_root), "--epochs", "1", "--resume", str(tmp_path / "checkpoint.pt")],
                     capsys)
    assert "has already trained 2 epochs; pass --epochs 2 or more" in err


def test_offline_without_data(tmp_path, capsys):
    err = user_error(["--data-dir", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "run")], capsys)
    assert "download failed" in err and "train-images-idx3-ubyte.gz" in err


# --- as a reader runs it: a real process, from the repo root and from inside the folder ---------

def script(*args: str, cwd: Path = REPO, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": "", "MPLBACKEND": "Agg"}  # not relying on an installed package
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, **kwargs)


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_runs_from_inside_its_folder(mnist_root, tmp_path):
    result = script("mnist_nn.py", "--dry-run", "--no-cuda", "--no-mps", "--data-dir", str(mnist_root),
                    "--out-dir", str(tmp_path), cwd=REPO / "T01_mnist_nn")
    assert result.returncode == 0, result.stderr
    assert "Test set: Average loss" in result.stdout


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT, which Windows delivers differently")
def test_ctrl_c_in_a_real_process(tmp_path):
    data_dir = tmp_path / "data"
    stand_in_data.write_mnist(data_dir, "MNIST", train_size=6400, test_size=100)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--no-accel", "--epochs", "50", "--log-interval", "1",
                                "--data-dir", str(data_dir), "--out-dir", str(tmp_path / "run")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 90
    for line in process.stdout:  # wait until it is training its second epoch
        if line.startswith("Train Epoch: 2 ") or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err
    interrupted = int(re.search(r"Interrupted in epoch (\d+)", out).group(1))
    assert interrupted >= 2  # the signal may land a little later than the line we saw
    assert safe_load(tmp_path / "run" / "checkpoint.pt")["epoch"] == interrupted - 1


# --- the statistics helper --------------------------------------------------------------------

def test_statistics_script_matches_numpy(mnist_root, capsys):
    mean, std = get_mnist_statistics.main(["--data-dir", str(mnist_root)])
    raw = (mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16) / 255.0
    assert mean.item() == pytest.approx(pixels.mean(), rel=1e-5)
    assert std.item() == pytest.approx(pixels.std(), rel=1e-5)
    out = capsys.readouterr().out
    assert f"mean: {pixels.mean():.4f}" in out and "transforms.Normalize((" in out


def test_statistics_for_cifar10_has_three_channels(tmp_path, monkeypatch, capsys):
    from torchvision import datasets

    stand_in_data.write_cifar10(tmp_path, train_size=100, test_size=20)
    monkeypatch.setattr(datasets.cifar, "check_integrity", lambda *a, **k: True)  # test data: MD5s differ
    monkeypatch.setattr(datasets.CIFAR10, "_check_integrity", lambda self: True)
    mean, std = get_mnist_statistics.main(["--dataset", "cifar10", "--data-dir", str(tmp_path)])
    assert mean.shape == (3,) and std.shape == (3,)
    assert "3 channel(s)" in capsys.readouterr().out
