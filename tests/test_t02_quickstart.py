"""T02: quickstart.py, the official PyTorch quickstart, on small FashionMNIST-format data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, TensorDataset

from common import cli, synthetic
from T02_fashion_mnist import quickstart
from T02_fashion_mnist.fashion_mnist import NeuralNetwork

LOSS_LINE = re.compile(r"^loss: \d\.\d{6}  \[   64/  640\]$")  # two spaces before '[', widths 5 and 5
ACCURACY_LINE = re.compile(r"^ Accuracy: (\d+\.\d)%, Avg loss: (\d\.\d{6}) $")


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory) -> Path:
    """A data folder with a small learnable FashionMNIST (640 train / 200 test): 10 batches of 64."""
    root = tmp_path_factory.mktemp("fashion-data")
    synthetic.write_mnist(root, "FashionMNIST", train_size=640, test_size=200)
    return root


def run(root: Path, out_dir: Path, *flags: str) -> list[dict]:
    return quickstart.main(["--data-dir", str(root), "--out-dir", str(out_dir), "--no-accel", *flags])


def test_prints_the_tutorials_lines(fashion_root, tmp_path, capsys, one_thread):
    history = run(fashion_root, tmp_path, "--epochs", "2", "--save-model")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Using device: cpu")
    for epoch in (1, 2):
        start = lines.index(f"Epoch {epoch}")
        header, loss, test_error, accuracy, blank, took = lines[start + 1:start + 7]
        assert header == "-" * 31
        assert LOSS_LINE.match(loss), loss  # 10 batches, --log-interval 100: only the first batch prints
        assert test_error == "Test Error: "  # with the tutorial's trailing space
        found = ACCURACY_LINE.match(accuracy)
        assert found, accuracy
        assert float(found.group(1)) == round(100 * history[epoch - 1]["test_accuracy"], 1)
        assert blank == ""
        assert took.startswith(f"Epoch {epoch} took ")
    assert lines[-2] == "Done!"  # last before the run folder's line
    assert lines[-1].startswith(f"Run folder: {tmp_path} (")

    # The run folder: the lifecycle's files, the weights under their own name, metrics = history.
    for name in ("checkpoint.pt", "metrics.json", "metrics.csv", "train.log", "curves.png", "quickstart_model.pt"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "metrics.json").read_text()) == history
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[-1]["test_images"] == 200 and history[-1]["train_images"] == 640
    assert "Done!" in (tmp_path / "train.log").read_text()
    model = NeuralNetwork()
    model.load_state_dict(torch.load(tmp_path / "quickstart_model.pt", weights_only=True))


def test_learns_above_chance_with_a_larger_lr(fashion_root, tmp_path, capsys, one_thread):
    # At the tutorial's lr 1e-3, 10 batches an epoch barely move the weights; a larger rate shows it learns.
    history = run(fashion_root, tmp_path, "--epochs", "4", "--lr", "0.05", "--batch-size", "8")
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.5  # ten classes: chance is 0.1
    assert history[-1]["test_correct"] == round(history[-1]["test_accuracy"] * 200)


def test_defaults_are_the_tutorials():
    args = quickstart.parse_args([])
    assert (args.epochs, args.batch_size, args.lr, args.log_interval) == (5, 64, 1e-3, 100)


def test_builds_the_tutorials_recipe(fashion_root, tmp_path, monkeypatch, one_thread):
    """No Normalize, shuffled training only, batches of 64, CrossEntropyLoss and plain SGD at 1e-3."""
    seen = {}
    real_train_loop, real_test_loop = quickstart.train_loop, quickstart.test_loop

    def train_loop(dataloader, model, loss_fn, optimizer, **kwargs):
        seen.update(train=dataloader, model=model, loss_fn=loss_fn, optimizer=optimizer)
        return real_train_loop(dataloader, model, loss_fn, optimizer, **kwargs)

    def test_loop(dataloader, model, loss_fn, **kwargs):
        seen["test"] = dataloader
        return real_test_loop(dataloader, model, loss_fn, **kwargs)

    monkeypatch.setattr(quickstart, "train_loop", train_loop)
    monkeypatch.setattr(quickstart, "test_loop", test_loop)
    history = run(fashion_root, tmp_path, "--dry-run")
    assert history[0]["train_images"] == 64 and history[0]["test_images"] == 64  # --dry-run: one batch each

    for loader in (seen["train"], seen["test"]):
        images, _ = next(iter(loader))
        assert images.shape == (64, 1, 28, 28)
        assert images.min() >= 0 and images.max() <= 1  # ToTensor alone: no Normalize
        assert images.max() > 0.5
    assert isinstance(seen["train"].sampler, RandomSampler)  # always shuffle training...
    assert isinstance(seen["test"].sampler, SequentialSampler)  # ...never test
    assert type(seen["model"]) is NeuralNetwork
    assert isinstance(seen["loss_fn"], torch.nn.CrossEntropyLoss)
    optimizer = seen["optimizer"]
    assert type(optimizer) is torch.optim.SGD
    assert optimizer.defaults["lr"] == 1e-3
    assert optimizer.defaults["momentum"] == 0 and not optimizer.defaults["nesterov"]
    assert optimizer.defaults["weight_decay"] == 0


def small_batches(count: int = 200, batch_size: int = 64) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(count, 1, 28, 28, generator=generator)
    targets = torch.randint(0, 10, (count,), generator=generator)
    return DataLoader(TensorDataset(images, targets), batch_size=batch_size, shuffle=False)


def test_train_loop_counts_images_and_averages_per_image(capsys, one_thread):
    torch.manual_seed(0)
    model, loader = NeuralNetwork(), small_batches()  # batches of 64, 64, 64 and 8
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay as they are
    with torch.no_grad():
        batch_losses = [F.cross_entropy(model(x), y).item() for x, y in loader]
    metrics = quickstart.train_loop(loader, model, torch.nn.CrossEntropyLoss(), optimizer, log_interval=1)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"loss: {loss:>7f}  [{current:>5d}/  200]"
                     for loss, current in zip(batch_losses, (64, 128, 192, 200))]
    expected = sum(loss * n for loss, n in zip(batch_losses, (64, 64, 64, 8))) / 200
    assert metrics["train_loss"] == pytest.approx(expected, rel=1e-6)
    assert metrics["train_images"] == 200 and metrics["train_seconds"] > 0


def test_test_loop_prints_the_tutorials_batch_mean_and_returns_the_image_mean(capsys, one_thread):
    torch.manual_seed(0)
    model, loader = NeuralNetwork(), small_batches()
    with torch.no_grad():
        batch_losses = [F.cross_entropy(model(x), y).item() for x, y in loader]
        images, targets = loader.dataset.tensors
        per_image = F.cross_entropy(model(images), targets).item()
        correct = (model(images).argmax(1) == targets).sum().item()
    tutorials = sum(batch_losses) / len(batch_losses)
    assert abs(tutorials - per_image) > 1e-4  # the last batch of 8 makes the two differ

    metrics = quickstart.test_loop(loader, model, torch.nn.CrossEntropyLoss())
    out = capsys.readouterr().out
    assert out == f"Test Error: \n Accuracy: {100 * correct / 200:>0.1f}%, Avg loss: {tutorials:>8f} \n\n"
    assert metrics["test_loss"] == pytest.approx(per_image, rel=1e-6)
    assert metrics == {"test_loss": metrics["test_loss"], "test_accuracy": correct / 200, "test_correct": correct,
                       "test_images": 200}


@pytest.mark.parametrize(("flags", "message"), [
    (["--lr", "0"], "argument --lr: must be a finite number greater than 0"),
    (["--batch-size", "0"], "argument --batch-size: must be greater than 0"),
    (["--momentum", "0.9"], "unrecognized arguments: --momentum 0.9"),
])
def test_bad_flags_one_line_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        quickstart.main(flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and err.count("\n") == 1


def test_missing_data_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(lambda: run(tmp_path / "empty", tmp_path / "run"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "FashionMNIST is not in" in err

