"""T02: fashion_mnist.py and compare_hyperparameters.py, end to end on small FashionMNIST/MNIST-format data."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import stand_in_data
import torch
from lesson_tools import (
    RecordingSGD,
    count_single_image_reads,
    expected_gradients,
    extract_definitions,
    record_modes,
    run_copied_code,
)
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets, transforms

from common import cli
from common.run import TrainingRun
from T02_fashion_mnist import compare_hyperparameters, fashion_mnist

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "T02_fashion_mnist"
SCRIPT = FOLDER / "fashion_mnist.py"
TIMING_KEYS = {"seconds", "train_images_per_second"}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
PNG = b"\x89PNG\r\n\x1a\n"
REAL_EVALUATE = fashion_mnist.evaluate


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A data folder with small learnable FashionMNIST and MNIST (1,000 train / 300 test) as real IDX files."""
    root = tmp_path_factory.mktemp("t02-data")
    stand_in_data.write_mnist(root, "FashionMNIST", train_size=1000, test_size=300)
    stand_in_data.write_mnist(root, "MNIST", train_size=1000, test_size=300, seed=7)
    return root


def run(data_root: Path, out_dir: Path, *flags: str) -> list[dict]:
    return fashion_mnist.main(["--data-dir", str(data_root), "--out-dir", str(out_dir), "--no-accel", *flags])


def safe_load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def identical(a, b) -> bool:
    """Equal, tensors bit for bit, through nested dicts and lists (state dicts)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    return a == b


def raw_idx(root: Path, folder: str, name: str) -> np.ndarray:
    """The bytes of a stand-in IDX file after its header: pixels (N x 28 x 28) or labels (N)."""
    raw = (root / folder / "raw" / name).read_bytes()
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28) if "images" in name \
        else np.frombuffer(raw, np.uint8, offset=8)


def record_figures(monkeypatch) -> dict:
    """What each figure shows, by file name: every panel's title and picture, as run.save_figure gets it."""
    shown: dict = {}
    real_save = TrainingRun.save_figure

    def spy(self, fig, filename):
        shown[filename] = [(ax.get_title(), np.array(ax.images[0].get_array()) if ax.images else None)
                           for ax in fig.axes]
        return real_save(self, fig, filename)

    monkeypatch.setattr(TrainingRun, "save_figure", spy)
    return shown


@pytest.fixture(scope="module")
def cnn_root(tmp_path_factory) -> Path:
    """A smaller FashionMNIST for the CNN, the slowest model on a CPU.

    481 = 15 x 32 + 1: with batches of 32 the last one would hold a single image, which batch
    norm cannot train on; the script must drop it (and only it).
    """
    root = tmp_path_factory.mktemp("t02-cnn-data")
    stand_in_data.write_mnist(root, "FashionMNIST", train_size=481, test_size=200)
    return root


CNN_FLAGS = ["--model", "cnn", "--batch-size", "32", "--scheduler", "step", "--step-size", "1",
             "--log-interval", "5", "--test-batch-size", "128"]
CNN_STEPS = 15  # batches per epoch: 481 images, the last batch of one dropped


@pytest.fixture(scope="module")
def cnn_run(cnn_root, tmp_path_factory) -> tuple[Path, list[dict], dict]:
    """One uninterrupted 2-epoch CNN run with a saved model and a step scheduler: its folder, its history, and
    what its figures show and what it printed (under "stdout")."""
    out_dir, printed = tmp_path_factory.mktemp("cnn-run"), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        shown = record_figures(patch)
        history = run(cnn_root, out_dir, "--epochs", "2", "--save-model", *CNN_FLAGS)
    return out_dir, history, {**shown, "stdout": printed.getvalue()}


@pytest.fixture
def no_figures(monkeypatch):
    """Skip drawing the figures (the slowest part of a small run) in tests about something else."""
    monkeypatch.setattr(fashion_mnist, "save_figures", lambda *args: None)


# --- the models -------------------------------------------------------------------------------

def linear_sizes(model: torch.nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The posts' own class definitions, as the posts write them (attribute names included). A state_dict
# saved from them must load into the lesson's classes of the same name with strict=True.
POSTS_CLASSES = textwrap.dedent("""
    import torch.nn as nn
    import torch.nn.functional as F

    class NeuralNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(
                nn.Linear(28*28, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))

    class NeuralNetwork_v1(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(
                nn.Linear(28*28, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))

    class ConvNeuralNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1)
            self.batch_norm1 = nn.BatchNorm2d(32)
            self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
            self.batch_norm2 = nn.BatchNorm2d(64)
            self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1)
            self.batch_norm3 = nn.BatchNorm2d(128)
            self.pool = nn.MaxPool2d(2, 2)
            self.fc1 = nn.Linear(128 * 3 * 3, 512)
            self.batch_norm4 = nn.BatchNorm1d(512)
            self.fc2 = nn.Linear(512, 512)
            self.batch_norm5 = nn.BatchNorm1d(512)
            self.fc3 = nn.Linear(512, 10)
            self.dropout = nn.Dropout(0.4)

        def forward(self, x):
            x = self.pool(F.relu(self.batch_norm1(self.conv1(x))))
            x = self.pool(F.relu(self.batch_norm2(self.conv2(x))))
            x = self.pool(F.relu(self.batch_norm3(self.conv3(x))))
            x = x.view(-1, 128 * 3 * 3)
            x = self.dropout(F.relu(self.batch_norm4(self.fc1(x))))
            x = self.dropout(F.relu(self.batch_norm5(self.fc2(x))))
            return self.fc3(x)
""")


@pytest.mark.parametrize("name, count", [("NeuralNetwork", 669_706), ("NeuralNetwork_v1", 2_646_026),
                                         ("ConvNeuralNetwork", 953_290)])
def test_the_posts_weights_load_strictly_into_the_class_of_the_same_name(name, count):
    posts = {}
    exec(POSTS_CLASSES, posts)
    torch.manual_seed(0)
    theirs = posts[name]()
    if name == "ConvNeuralNetwork":  # running statistics too, so that the outputs below can tell them apart
        theirs.train()(torch.randn(8, 1, 28, 28))
    ours = getattr(fashion_mnist, name)()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert count_parameters(ours) == count_parameters(theirs) == count
    if name == "ConvNeuralNetwork":  # the same computation too, in eval mode
        images = torch.randn(4, 1, 28, 28)
        assert torch.allclose(ours.eval()(images), theirs.eval()(images), atol=1e-5)


def test_the_options_name_the_posts_models():
    assert {name: model.__name__ for name, model in fashion_mnist.MODELS.items()} == {
        "mlp": "NeuralNetwork", "mlp-deep": "NeuralNetwork_v1", "cnn": "ConvNeuralNetwork"}
    assert [m.p for m in fashion_mnist.ConvNeuralNetwork().modules() if isinstance(m, torch.nn.Dropout)] == [0.4]


@pytest.mark.parametrize("name", ["mlp", "mlp-deep", "cnn"])
def test_forward_gives_ten_logits_per_image(name):
    model = fashion_mnist.MODELS[name]().eval()
    out = model(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert not torch.allclose(out.exp().sum(1), torch.ones(5))  # raw scores, not (log-)probabilities


# --- the lesson itself: mistakes a beginner makes must turn these red ---------------------------

def small_loader(count: int = 96, batch_size: int = 32) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images, targets = torch.randn(count, 1, 28, 28, generator=generator), torch.randint(0, 10, (count,))
    return DataLoader(TensorDataset(images, targets), batch_size=batch_size)  # not shuffled: batches known


@pytest.mark.usefixtures("one_thread")
def test_every_step_uses_this_batchs_gradient_alone(capsys):
    """Catches a missing optimizer.zero_grad() (gradients pile up) and a loss that is not the batch mean."""
    torch.manual_seed(0)
    model, loader, loss_fn = fashion_mnist.NeuralNetwork(), small_loader(), torch.nn.CrossEntropyLoss()
    optimizer = RecordingSGD(model.parameters())
    metrics = fashion_mnist.train(model, torch.device("cpu"), loader, optimizer, loss_fn=loss_fn)
    expected = expected_gradients(model, loss_fn, loader)
    assert len(optimizer.gradients) == len(expected) == 3
    for got, want in zip(optimizer.gradients, expected):
        assert all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got, want))
    assert metrics["train_images"] == 96 and metrics["train_seconds"] > 0


@pytest.mark.usefixtures("one_thread")
def test_the_loss_line_is_the_average_of_the_last_log_interval_steps(capsys):
    """As the post's running_loss: the mean of the batch losses since the last line, not the last batch's."""
    torch.manual_seed(0)
    model, loader = fashion_mnist.NeuralNetwork(), small_loader(count=160, batch_size=32)  # 5 steps
    losses = []

    def recording_loss(outputs, targets):
        loss = torch.nn.functional.cross_entropy(outputs, targets)
        losses.append(loss.item())
        return loss

    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # a big step: each batch's loss differs clearly
    fashion_mnist.train(model, torch.device("cpu"), loader, optimizer, loss_fn=recording_loss, epoch=1, epochs=3,
                        log_interval=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"Epoch [1/3], Step [2/5], Loss: {(losses[0] + losses[1]) / 2:.4f}",
                     f"Epoch [1/3], Step [4/5], Loss: {(losses[2] + losses[3]) / 2:.4f}"]  # step 5: no line
    assert f"{losses[3]:.4f}" != f"{(losses[2] + losses[3]) / 2:.4f}"  # so the check tells the two apart


@pytest.mark.usefixtures("one_thread")
def test_train_runs_in_training_mode_and_test_in_eval_mode(capsys):
    model, loader, loss_fn = fashion_mnist.NeuralNetwork(), small_loader(), torch.nn.CrossEntropyLoss()
    modes = record_modes(model)
    model.eval()  # left in the wrong mode on purpose: train() must switch
    fashion_mnist.train(model, torch.device("cpu"), loader, torch.optim.SGD(model.parameters(), lr=0.01),
                        loss_fn=loss_fn)
    assert modes == [True, True, True]
    modes.clear()
    fashion_mnist.test(model, torch.device("cpu"), loader, loss_fn=loss_fn)  # left in training mode by train()
    assert modes == [False, False, False]


@pytest.mark.usefixtures("one_thread")
def test_test_loss_is_the_eval_mode_mean_over_every_image(capsys):
    """With a partial last batch, test_loss must be the plain mean over all images, in eval mode.

    The CNN has dropout and batch norm, so a test() that forgets model.eval() gives other numbers.
    """
    torch.manual_seed(0)
    model, loader = fashion_mnist.ConvNeuralNetwork(), small_loader(count=30, batch_size=12)
    loss_fn = torch.nn.CrossEntropyLoss()
    metrics = fashion_mnist.test(model, torch.device("cpu"), loader, loss_fn=loss_fn)
    images, targets = loader.dataset.tensors
    with torch.no_grad():
        output = model.eval()(images)
        train_mode_loss = loss_fn(model.train()(images), targets).item()
    loss = loss_fn(output, targets).item()
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-5)
    assert train_mode_loss != pytest.approx(loss, rel=1e-3)  # so the check above can tell the modes apart
    correct = (output.argmax(1) == targets).sum().item()
    assert metrics["test_correct"] == correct and metrics["test_images"] == 30
    assert capsys.readouterr().out == (f"Test Accuracy: {100 * correct / 30:.2f}%\n"  # the post's line, two decimals
                                       f"Test set: {correct}/30 correct, average loss {metrics['test_loss']:.4f}\n")


def test_loaders_shuffle_training_only_take_whole_batches_and_drop_only_a_last_batch_of_one(data_root, tmp_path,
                                                                                             monkeypatch):
    """Also: the tensors made once in main() are what ToTensor() + Normalize() give image by image."""
    made = []
    real_loader, real_train = fashion_mnist.DataLoader, fashion_mnist.train

    def keep(dataset, *args, **kwargs):
        made.append(real_loader(dataset, *args, **kwargs))
        return made[-1]

    reads, while_training = count_single_image_reads(monkeypatch), []

    def counting_train(*args, **kwargs):
        before = len(reads)
        result = real_train(*args, **kwargs)
        while_training.extend(reads[before:])
        return result

    monkeypatch.setattr(fashion_mnist, "DataLoader", keep)
    monkeypatch.setattr(fashion_mnist, "train", counting_train)
    monkeypatch.setattr(fashion_mnist, "save_figures", lambda *args: None)  # not what this test is about
    run(data_root, tmp_path / "a", "--dry-run", "--val-size", "199", "--batch-size", "50")  # 801 training images
    run(data_root, tmp_path / "b", "--dry-run", "--val-size", "198", "--batch-size", "50")  # 802
    monkeypatch.undo()
    assert while_training == []  # whole batches only, while training
    (train_a, test_a, val_a), (train_b, _, _) = made[:3], made[3:]
    assert [len(t) for _, t in train_a] == [50] * 16  # 801 = 16 x 50 + 1: the single image is left out
    assert [len(t) for _, t in train_b] == [50] * 16 + [2]  # a last batch of two is kept
    file_labels = raw_idx(data_root, "FashionMNIST", "t10k-labels-idx1-ubyte").tolist()
    assert torch.cat([t for _, t in test_a]).tolist() == file_labels  # every test image, in the file's order
    split = torch.randperm(1000, generator=torch.Generator().manual_seed(1))  # the script's split, --seed 1
    train_labels = raw_idx(data_root, "FashionMNIST", "train-labels-idx1-ubyte")
    for _ in range(2):  # validation: the split's order, every time
        assert torch.cat([t for _, t in val_a]).tolist() == train_labels[split[:199].numpy()].tolist()
    first, second = (torch.cat([t for _, t in train_b]).tolist() for _ in range(2))
    assert first != second and sorted(first) == sorted(train_labels[split[198:].numpy()].tolist()) == sorted(second)
    reference = datasets.FashionMNIST(data_root, train=False, transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
    images, labels = test_a.dataset.tensors
    for i in (0, 1, len(reference) - 1):
        assert torch.equal(images[i], reference[i][0]) and labels[i] == reference[i][1]  # bit for bit


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_model_train_test_and_data_helpers_copy_out_alone_and_the_whole_script_needs_common(tmp_path):
    """One process (torch takes seconds to import): the copied pieces must run on their own; then a copy of
    the whole script, with common/ out of reach, must stop with one line."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "fashion_mnist.py").write_text(SCRIPT.read_text(encoding="utf-8"), encoding="utf-8")
    code = extract_definitions(SCRIPT, ["NeuralNetwork", "ConvNeuralNetwork", "train", "evaluate", "test",
                                        "split_validation", "measured_statistics", "normalised"]) + \
        textwrap.dedent("""
        torch.manual_seed(0)
        pixels = torch.randint(0, 256, (80, 28, 28), dtype=torch.uint8)
        labels = (pixels.float().mean(dim=(1, 2)) > 127.5).long()
        (train_pixels, train_labels), (val_pixels, val_labels) = split_validation(pixels, labels, 16, seed=1)
        mean, std = measured_statistics(train_pixels)
        train_set = normalised(train_pixels, train_labels, mean, std, torch.device("cpu"))
        loader = DataLoader(train_set, batch_size=16, shuffle=True)
        for model in (NeuralNetwork(), ConvNeuralNetwork()):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            train_metrics = train(model, torch.device("cpu"), loader, optimizer, loss_fn=nn.CrossEntropyLoss(),
                                  log_interval=2)
            test_metrics = test(model, torch.device("cpu"), loader, loss_fn=nn.CrossEntropyLoss())
            assert train_metrics["train_images"] == test_metrics["test_images"] == 64, (train_metrics, test_metrics)
            assert 0 < train_metrics["train_loss"] < 5 and 0 <= test_metrics["test_accuracy"] <= 1
        print("copied code OK", flush=True)

        import runpy
        runpy.run_path("fashion_mnist.py", run_name="__main__")  # the whole script, without common/
        print("the script ran without common/")
    """)
    result = run_copied_code(code, folder)
    assert "copied code OK" in result.stdout, result.stderr
    assert "Epoch [1/1], Step [4/4], Loss: " in result.stdout and "Test Accuracy: " in result.stdout
    assert result.returncode != 0 and "the script ran without common/" not in result.stdout
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert "needs the repository's common/ folder" in result.stderr


# --- training end to end ----------------------------------------------------------------------

def test_cnn_end_to_end_with_the_posts_output(cnn_run):
    out_dir, history, _ = cnn_run
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[-1]["test_accuracy"] > 0.7  # ten classes: chance is 0.1
    assert history[-1]["test_images"] == 200  # every test image, the last partial batch included
    assert [row["train_images"] for row in history] == [480, 480]  # 481: the last batch of one dropped
    assert [row["lr"] for row in history] == [0.01, 0.005]  # StepLR once per epoch: halved after epoch 1
    log = (out_dir / "train.log").read_text()
    assert "Using device: cpu" in log and "Parameters: 953,290" in log and "ConvNeuralNetwork(" in log
    assert re.search(r"Epoch 2 took \d+\.\d s \(training: [\d,]+ images/s\)", log)
    assert re.search(r"Hardest classes: (.+ \d+\.\d%, ){2}.+ \d+\.\d%\n", log)
    for name in ("checkpoint.pt", "metrics.json", "metrics.csv", "curves.png", "predictions.png",
                 "confusion_matrix.png", "fashion_mnist_cnn.pt"):
        assert (out_dir / name).is_file(), name
    for name in ("curves.png", "predictions.png", "confusion_matrix.png"):
        assert (out_dir / name).read_bytes()[:8] == PNG, name
    assert f"Run folder: {out_dir} (" in log


def test_the_posts_progress_and_test_lines(cnn_run):
    out = cnn_run[2]["stdout"]
    assert re.search(rf"Epoch \[1/2\], Step \[5/{CNN_STEPS}\], Loss: \d+\.\d{{4}}\n", out)
    assert re.search(rf"Epoch \[2/2\], Step \[15/{CNN_STEPS}\], Loss: \d+\.\d{{4}}\n", out)
    assert re.search(r"Test Accuracy: \d+\.\d\d%\nTest set: \d+/200 correct, average loss \d+\.\d{4}\n", out)


def cnn_predictions(cnn_root: Path, out_dir: Path) -> tuple[list[int], list[int]]:
    """The saved CNN's prediction for every test image, and the true classes (from the files themselves)."""
    model = fashion_mnist.ConvNeuralNetwork()
    model.load_state_dict(safe_load(out_dir / "fashion_mnist_cnn.pt"))
    pixels = torch.from_numpy(raw_idx(cnn_root, "FashionMNIST", "t10k-images-idx3-ubyte").copy())
    with torch.no_grad():
        predicted = model.eval()((pixels.unsqueeze(1).float() / 255 - 0.5) / 0.5).argmax(1).tolist()
    return predicted, raw_idx(cnn_root, "FashionMNIST", "t10k-labels-idx1-ubyte").tolist()


def test_prediction_pictures_are_the_first_test_images_with_their_own_predictions(cnn_root, cnn_run):
    """Titles must be the model's prediction for test image i, drawn as the real 0..1 pixels of that image."""
    out_dir, _, shown = cnn_run
    predicted, truth = cnn_predictions(cnn_root, out_dir)
    panels = [panel for panel in shown["predictions.png"] if panel[1] is not None]
    assert [title for title, _ in panels] == [
        f"pred: {FASHION_CLASSES[p]}{'' if p == t else ' (x)'}\ntrue: {FASHION_CLASSES[t]}"
        for p, t in zip(predicted[:16], truth[:16])]
    pixels = raw_idx(cnn_root, "FashionMNIST", "t10k-images-idx3-ubyte")[:16] / 255.0
    for (_, picture), expected in zip(panels, pixels):
        assert np.allclose(picture, expected, atol=1e-6)  # un-normalised: what the eye should see


def test_confusion_matrix_is_the_final_models_test_predictions_per_true_class(cnn_root, cnn_run):
    out_dir, history, shown = cnn_run
    predicted, truth = cnn_predictions(cnn_root, out_dir)
    counts = np.zeros((10, 10))
    np.add.at(counts, (truth, predicted), 1)
    (title, rates), _colorbar = shown["confusion_matrix.png"]
    assert np.allclose(rates, counts / np.maximum(counts.sum(1, keepdims=True), 1))  # rows: true classes
    assert title == f"ConvNeuralNetwork on fashion-mnist: {100 * history[-1]['test_accuracy']:.2f}% test accuracy"


@pytest.mark.usefixtures("no_figures")
@pytest.mark.parametrize("model, flags", [("mlp", ["--batch-size", "16"]),
                                          ("mlp-deep", ["--batch-size", "32", "--lr", "0.1"])])
def test_mlps_learn_fashion_mnist(data_root, tmp_path, model, flags):
    history = run(data_root, tmp_path, "--model", model, "--epochs", "2", *flags)
    assert history[-1]["test_accuracy"] > 0.6
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_measured_statistics_come_from_the_training_images_alone_and_are_saved(data_root, tmp_path, monkeypatch):
    """--measured-stats with --val-size: the validation images must not shape the mean and std, and the values
    must reach checkpoint.pt (predict.py reads them there)."""
    shown = record_figures(monkeypatch)
    history = run(data_root, tmp_path, "--dataset", "mnist", "--measured-stats", "--val-size", "300", "--epochs", "2",
                  "--batch-size", "32", "--lr", "0.05")
    assert history[-1]["test_accuracy"] > 0.6
    pixels = torch.from_numpy(raw_idx(data_root, "MNIST", "train-images-idx3-ubyte").copy()).double() / 255
    training_rows = torch.randperm(1000, generator=torch.Generator().manual_seed(1))[300:]  # the script's split
    expected = (round(pixels[training_rows].mean().item(), 4), round(pixels[training_rows].std().item(), 4))
    every_image = (round(pixels.mean().item(), 4), round(pixels.std().item(), 4))
    assert expected != every_image  # so the check tells the two apart
    saved = safe_load(tmp_path / "checkpoint.pt")["args"]
    assert (saved["mean"], saved["std"]) == expected
    assert f"700 training, 300 validation and 300 test images, normalised with mean {expected[0]} and std " \
           f"{expected[1]}" in (tmp_path / "train.log").read_text()
    titles = [title for title, picture in shown["predictions.png"] if picture is not None]
    assert len(titles) == 16 and all(re.fullmatch(r"pred: \d - \w+( \(x\))?\ntrue: \d - \w+", t) for t in titles)


def test_the_posts_statistics_are_saved_too(cnn_run):
    out_dir, _, _ = cnn_run
    saved = safe_load(out_dir / "checkpoint.pt")["args"]
    assert (saved["mean"], saved["std"], saved["measured_stats"]) == (0.5, 0.5, False)


def test_diverging_run_stops_with_one_line_and_leaves_nothing(data_root, tmp_path, capsys):
    err = user_error(["--data-dir", str(data_root), "--out-dir", str(tmp_path / "run"), "--epochs", "3",
                      "--lr", "1000", "--no-accel", "--save-model"], capsys)
    assert "training diverged in epoch 1" in err and "learning rate 1000" in err and "smaller --lr" in err
    assert not (tmp_path / "run").exists()  # no NaN weights, no checkpoint, no half-made folder


# --- checkpoints, resume, Ctrl-C --------------------------------------------------------------

def test_every_run_writes_a_checkpoint_with_the_posts_entries(cnn_run):
    out_dir, history, _ = cnn_run
    state = safe_load(out_dir / "checkpoint.pt")
    assert state["epoch"] == 2 and state["model_class"] == "ConvNeuralNetwork"
    assert {"model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "args", "metrics", "loss"} <= set(state)
    assert state["metrics"][-1]["train_loss"] == history[-1]["train_loss"] == state["loss"]  # the post's `loss`
    assert state["args"]["model"] == "cnn" and state["scheduler_state_dict"]["last_epoch"] == 2


def test_saved_model_reloads_to_identical_outputs(cnn_run):
    out_dir, _, _ = cnn_run
    reloaded = fashion_mnist.ConvNeuralNetwork()
    reloaded.load_state_dict(safe_load(out_dir / "fashion_mnist_cnn.pt"))
    trained = fashion_mnist.ConvNeuralNetwork()
    trained.load_state_dict(safe_load(out_dir / "checkpoint.pt")["model_state_dict"])
    images = torch.randn(8, 1, 28, 28)
    assert torch.equal(reloaded.eval()(images), trained.eval()(images))


@pytest.mark.usefixtures("no_figures")
def test_ctrl_c_mid_epoch_then_resume_equals_an_uninterrupted_run(cnn_root, cnn_run, tmp_path, monkeypatch, capsys):
    # The CNN has dropout, batch norm and shuffling: only restored random-number state makes the runs agree.
    straight_dir, straight, _ = cnn_run
    real_step, calls = torch.optim.SGD.step, {"n": 0}

    def step_then_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == CNN_STEPS + 3:  # Ctrl-C 3 batches into epoch 2
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step_then_interrupt)
    split_dir = tmp_path / "split"
    checkpoint = split_dir / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        run(cnn_root, split_dir, "--epochs", "2", "--save-model", *CNN_FLAGS)
    monkeypatch.undo()
    out = capsys.readouterr().out
    assert f"Interrupted in epoch 2. {checkpoint} holds epoch 1" in out
    assert f"run the same command again with --resume {checkpoint}" in out
    assert safe_load(checkpoint)["epoch"] == 1  # the last finished epoch, untouched
    resumed = run(cnn_root, split_dir, "--epochs", "2", "--save-model", *CNN_FLAGS, "--resume", str(checkpoint))
    assert "Resuming from" in capsys.readouterr().out
    assert without_timing(resumed) == without_timing(straight)
    resumed_state, straight_state = safe_load(checkpoint), safe_load(straight_dir / "checkpoint.pt")
    for key in ("epoch", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict"):
        assert identical(resumed_state[key], straight_state[key]), key  # bit for bit
    assert resumed_state["scheduler_state_dict"]["last_epoch"] == 2  # the schedule carried on, not restarted
    assert identical(safe_load(split_dir / "fashion_mnist_cnn.pt"), safe_load(straight_dir / "fashion_mnist_cnn.pt"))


def test_ctrl_c_in_the_first_epoch_leaves_nothing(data_root, tmp_path, monkeypatch, capsys):
    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.optim.SGD, "step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(data_root, tmp_path / "run", "--epochs", "1")
    assert "No epoch finished: nothing to keep" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def folder_state(folder: Path) -> dict:
    return {path.name: (path.stat().st_mtime_ns, path.stat().st_size) for path in folder.iterdir()}


@pytest.mark.parametrize("flags, messages", [
    (["--lr", "0.5", "--momentum", "0"], ["--lr 0.01 (this run: 0.5)", "--momentum 0.9 (this run: 0.0)"]),
    (["--optimizer", "adam"], ["--optimizer sgd (this run: adam)"]),
    (["--scheduler", "none", "--batch-size", "16"], ["--scheduler step (this run: none)",
                                                     "--batch-size 32 (this run: 16)"]),
    (["--step-size", "2", "--gamma", "0.1"], ["--step-size 1 (this run: 2)", "--gamma 0.5 (this run: 0.1)"]),
    (["--measured-stats", "--dataset", "mnist"], ["--measured-stats False (this run: True)",
                                                  "--dataset fashion-mnist (this run: mnist)"]),
    (["--val-size", "100", "--patience", "2"], ["--val-size None (this run: 100)", "--patience None (this run: 2)"]),
    (["--seed", "2"], ["--seed 1 (this run: 2)"]),
    (["--model", "mlp"], ["--model cnn (this run: mlp)"]),
    (["--epochs", "1"], ["already trained 2 epochs"]),
])
def test_resume_with_other_settings_is_refused_naming_each_and_touches_nothing(cnn_root, cnn_run, data_root, capsys,
                                                                              flags, messages):
    out_dir, _, _ = cnn_run
    before = folder_state(out_dir)
    root = data_root if "mnist" in flags else cnn_root  # the stand-in MNIST lives there
    err = user_error(["--data-dir", str(root), "--no-accel", *CNN_FLAGS, "--epochs", "3", *flags,
                      "--resume", str(out_dir / "checkpoint.pt")], capsys)
    for words in messages:
        assert words in err
    assert folder_state(out_dir) == before  # not even train.log has a new line


def test_resume_from_a_weights_only_file_is_refused(cnn_root, cnn_run, capsys):
    out_dir, _, _ = cnn_run
    err = user_error(["--data-dir", str(cnn_root), "--no-accel", *CNN_FLAGS,
                      "--resume", str(out_dir / "fashion_mnist_cnn.pt")], capsys)
    assert "a file of weights alone cannot resume training" in err


# --- validation and early stopping -------------------------------------------------------------

def test_validation_split_is_disjoint_seeded_and_of_the_asked_size():
    images, labels = torch.arange(100).reshape(100, 1, 1).expand(100, 28, 28), torch.arange(100)
    torch.manual_seed(0)
    (train_images, train_labels), (val_images, val_labels) = fashion_mnist.split_validation(images, labels, 30, 1)
    drawn_after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), drawn_after)  # its own generator: torch's global random numbers untouched
    assert len(val_labels) == 30 and len(train_labels) == 70
    assert sorted(train_labels.tolist() + val_labels.tolist()) == list(range(100))  # disjoint, and nothing lost
    assert torch.equal(train_images[:, 0, 0], train_labels) and torch.equal(val_images[:, 0, 0], val_labels)
    assert torch.equal(fashion_mnist.split_validation(images, labels, 30, 1)[1][1], val_labels)  # fixed by the seed
    assert not torch.equal(fashion_mnist.split_validation(images, labels, 30, 2)[1][1], val_labels)
    assert sorted(val_labels.tolist()) != list(range(30))  # drawn at random, not the first images
    assert sorted(val_labels.tolist()) != list(range(70, 100))  # nor the last


@pytest.mark.usefixtures("no_figures")
def test_val_size_reports_validation_accuracy_each_epoch(data_root, tmp_path, capsys):
    history = run(data_root, tmp_path, "--dry-run", "--val-size", "200")
    assert {"val_loss", "val_accuracy"} <= set(history[0])
    out = capsys.readouterr().out
    assert "fashion-mnist: 800 training, 200 validation and 300 test images" in out
    assert re.search(rf"Validation accuracy: {100 * history[0]['val_accuracy']:.2f}%\n", out)
    assert (tmp_path / "best_model.pt").is_file()


# Scripted validation accuracies: the best is epoch 2's; epochs 3 and 4 bring nothing better (a tie is not
# better), so with --patience 2 the run stops before epoch 5 and keeps epoch 2's weights.
VAL_CURVE = [0.50, 0.60, 0.55, 0.60, 0.70, 0.80]
EARLY_FLAGS = ["--val-size", "200", "--patience", "2", "--save-model"]
STOPPED = "Early stopping: no better validation accuracy for 2 epochs; keeping epoch 2 (validation accuracy 60.00%)\n"


def script_validation(monkeypatch, first_epoch: int = 1) -> None:
    """Make the validation (200 images) report VAL_CURVE, one value per epoch from `first_epoch` on."""
    epochs = iter(range(first_epoch, len(VAL_CURVE) + 1))

    def scripted(model, device, loader, **kwargs):
        if len(loader.dataset) != 200:  # the test set: evaluated for real
            return REAL_EVALUATE(model, device, loader, **kwargs)
        accuracy = VAL_CURVE[next(epochs) - 1]
        return {"loss": 1 - accuracy, "accuracy": accuracy, "correct": round(200 * accuracy), "images": 200}

    monkeypatch.setattr(fashion_mnist, "evaluate", scripted)


@pytest.mark.usefixtures("no_figures")
def test_early_stopping_keeps_the_best_epoch_and_a_resumed_run_ends_the_same(data_root, tmp_path, monkeypatch,
                                                                              capsys):
    best_saves = []
    real_save = TrainingRun.save_weights

    def save_spy(self, filename):
        if filename == "best_model.pt":
            best_saves.append(self.epoch)
        return real_save(self, filename)

    monkeypatch.setattr(TrainingRun, "save_weights", save_spy)
    script_validation(monkeypatch)
    straight_dir, split_dir = tmp_path / "straight", tmp_path / "split"
    straight = run(data_root, straight_dir, "--epochs", "6", *EARLY_FLAGS)
    out = capsys.readouterr().out
    assert [row["epoch"] for row in straight] == [1, 2, 3, 4]
    assert [row["val_accuracy"] for row in straight] == VAL_CURVE[:4]
    assert best_saves == [1, 2]  # whenever validation improved, and only then
    assert STOPPED in out
    # The final model is the best epoch's: the saved model and the last test lines come from it.
    best = safe_load(straight_dir / "best_model.pt")
    assert identical(safe_load(straight_dir / "fashion_mnist_mlp.pt"), best)
    assert not identical(safe_load(straight_dir / "checkpoint.pt")["model_state_dict"], best)  # not epoch 4's
    model = fashion_mnist.NeuralNetwork()
    model.load_state_dict(best)
    test_set = datasets.FashionMNIST(data_root, train=False)
    test_loader = DataLoader(fashion_mnist.normalised(test_set.data, test_set.targets, 0.5, 0.5, torch.device("cpu")),
                             batch_size=1000)
    accuracy = REAL_EVALUATE(model, torch.device("cpu"), test_loader, loss_fn=torch.nn.CrossEntropyLoss())["accuracy"]
    kept_lines = f"The kept weights on the test set:\nTest Accuracy: {100 * accuracy:.2f}%\n"
    assert out.split(STOPPED)[1].startswith(kept_lines)

    # Stopped after epoch 3, resumed: the best epoch and the epochs since come back from the checkpoint's history.
    script_validation(monkeypatch)
    run(data_root, split_dir, "--epochs", "3", *EARLY_FLAGS)
    script_validation(monkeypatch, first_epoch=4)
    resumed = run(data_root, split_dir, "--epochs", "6", *EARLY_FLAGS, "--resume", str(split_dir / "checkpoint.pt"))
    assert without_timing(resumed) == without_timing(straight)
    assert STOPPED in capsys.readouterr().out
    for name in ("best_model.pt", "fashion_mnist_mlp.pt"):
        assert identical(safe_load(split_dir / name), safe_load(straight_dir / name)), name
    assert identical(safe_load(split_dir / "checkpoint.pt")["model_state_dict"],
                     safe_load(straight_dir / "checkpoint.pt")["model_state_dict"])

    # A run that had already stopped stays stopped when resumed with more epochs: nothing is trained.
    script_validation(monkeypatch, first_epoch=len(VAL_CURVE) + 1)  # any validation now would fail
    again = run(data_root, straight_dir, "--epochs", "8", *EARLY_FLAGS, "--resume", str(straight_dir / "checkpoint.pt"))
    assert without_timing(again) == without_timing(straight)
    assert STOPPED in capsys.readouterr().out
    assert identical(safe_load(straight_dir / "fashion_mnist_mlp.pt"), best)


# --- TensorBoard ------------------------------------------------------------------------------

@pytest.mark.usefixtures("no_figures")
def test_tensorboard_scalars_when_installed(data_root, tmp_path, monkeypatch):
    written = []

    class FakeWriter:
        def __init__(self, log_dir):
            Path(log_dir).mkdir(parents=True)  # as the real one does
            written.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            written.append((tag, step))

        def flush(self):
            written.append(("flushed",))

        def close(self):
            written.append(("closed",))

    fake = type(sys)("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    run(data_root, tmp_path / "run", "--dry-run", "--tensorboard", "--val-size", "100")
    assert written[0] == ("dir", str(tmp_path / "run" / "tensorboard"))
    assert {w for w in written[1:-2]} == {("Loss/train", 1), ("Loss/test", 1), ("Accuracy/train", 1),
                                          ("Accuracy/test", 1), ("Loss/val", 1), ("Accuracy/val", 1)}
    assert written[-2:] == [("flushed",), ("closed",)]
    with pytest.raises(cli.UserError, match="diverged in epoch 1"):  # a run that finishes no epoch leaves nothing
        run(data_root, tmp_path / "diverged", "--tensorboard", "--lr", "1000")
    assert not (tmp_path / "diverged").exists()


@pytest.mark.usefixtures("no_figures")
def test_tensorboard_missing_is_a_hint_not_a_crash(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    history = run(data_root, tmp_path, "--dry-run", "--tensorboard")
    assert len(history) == 1 and history[0]["train_images"] == 64
    assert "tensorboard package is not installed (pip install tensorboard)" in capsys.readouterr().out
    assert not (tmp_path / "tensorboard").exists()


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
    (["--dataset", "cifar10"], "argument --dataset: invalid choice: 'cifar10'"),
    (["--momentum", "1"], "--momentum: must be at least 0 and less than 1, got 1.0"),
    (["--momentum", "nan"], "--momentum: must be at least 0 and less than 1, got nan"),
    (["--momentum", "-0.1"], "--momentum: must be at least 0 and less than 1"),
    (["--patience", "2"], "--patience needs --val-size"),
    (["--val-size", "0"], "--val-size: must be from 1 to"),
    (["--val-size", "60000"], "--val-size 60000: the training set has 60,000 images"),
    (["--model", "cnn", "--batch-size", "1"], "--model cnn needs --batch-size 2 or more"),
])
def test_bad_flags_one_line_exit_2(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fashion_mnist.main([*flags, "--out-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def user_error(argv: list[str], capsys, main=fashion_mnist.main) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(lambda: main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def test_offline_without_data(tmp_path, capsys):
    for main in (fashion_mnist.main, compare_hyperparameters.main):
        err = user_error(["--data-dir", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "run")], capsys, main)
        assert "FashionMNIST is not in" in err and "download failed" in err
    assert not (tmp_path / "run").exists()  # a failed start leaves no run folder behind


# --- the hyper-parameter study ----------------------------------------------------------------

def test_study_plan_changes_one_thing_at_a_time():
    args = compare_hyperparameters.parse_args([])
    plan = compare_hyperparameters.plan_runs(args)
    labels = [config.label for config in plan]
    assert labels[0] == "lr=0.01 batch=64 sgd none"  # the baseline, shared by every study, trained once
    assert set(plan[next(iter(plan))]) == set(compare_hyperparameters.STUDIES)
    assert sorted(labels[1:]) == sorted(["lr=0.1 batch=64 sgd none", "lr=0.001 batch=64 sgd none",
                                         "lr=0.01 batch=32 sgd none", "lr=0.01 batch=128 sgd none",
                                         "lr=0.001 batch=64 adam none", "lr=0.01 batch=64 sgd step"])
    assert len(compare_hyperparameters.plan_runs(compare_hyperparameters.parse_args(["--full-grid"]))) == 36


def test_study_presets_and_explicit_flags_override_them(capsys):
    parse = compare_hyperparameters.parse_args
    project, post = parse([]), parse(["--preset", "post"])
    assert (project.preset, project.momentum, project.adam_lr, project.step_size, project.gamma) == \
        ("project", 0.9, 0.001, 2, 0.5)
    assert (post.momentum, post.adam_lr, post.step_size, post.gamma) == (0.0, 0.01, 10, 0.1)  # the tuning post's
    assert "lr=0.01 batch=64 adam none" in [config.label for config in compare_hyperparameters.plan_runs(post)]
    given = parse(["--preset", "post", "--momentum", "0.9", "--step-size", "3"])
    assert (given.momentum, given.adam_lr, given.step_size, given.gamma) == (0.9, 0.01, 3, 0.1)
    assert compare_hyperparameters.describe_preset(given) == (
        "Preset: post (the tuning post's settings, with --momentum 0.9 --step-size 3 from the command line): "
        "SGD momentum 0.9, Adam lr 0.01, StepLR(step_size=3, gamma=0.1)")
    assert parse(["--momentum", "0"]).momentum == 0.0  # an explicit 0 is a value, not "not given"
    with pytest.raises(SystemExit):
        parse(["--help"])
    assert "overrides its preset value" in " ".join(capsys.readouterr().out.split())


def test_study_says_when_steplr_never_acts():
    def note(*flags: str):
        args = compare_hyperparameters.parse_args(list(flags))
        return compare_hyperparameters.scheduler_note(args, compare_hyperparameters.plan_runs(args))

    assert note("--preset", "post") == (
        "Note: StepLR(step_size=10, gamma=0.1) lowers the learning rate only after epoch 10, and each run trains "
        "5 epoch(s): it never acts here, so the StepLR runs' lr column stays constant (train more than 10 epochs, "
        "or lower --step-size)")
    assert note("--epochs", "2") is not None  # step_size == epochs: it would act after the last epoch only
    assert note() is None  # the project's StepLR halves the rate after epochs 2 and 4 of 5
    assert note("--preset", "post", "--epochs", "11") is None
    assert note("--preset", "post", "--schedulers", "none") is None  # no StepLR run at all


def test_comparison_legends_are_ordered_by_value(tmp_path, monkeypatch):
    """Batch sizes 32, 64, 128 in the legend, as on the axis of a plot, not in the order the runs were made."""
    import matplotlib.pyplot as plt

    plan = compare_hyperparameters.plan_runs(compare_hyperparameters.parse_args([]))
    summary = [{"run": number, "label": config.label, "studies": "; ".join(studies), "lr": config.lr,
                "batch_size": config.batch_size, "optimizer": config.optimizer, "scheduler": config.scheduler,
                "status": "ok"} for number, (config, studies) in enumerate(plan.items(), start=1)]
    assert [row["batch_size"] for row in summary if "batch size" in row["studies"]] == [64, 32, 128]  # run order
    histories = {row["run"]: [{"epoch": epoch, "val_accuracy": 0.5} for epoch in (1, 2)] for row in summary}
    legends, real_close = {}, plt.close

    def capture(fig):
        legends.update({ax.get_title(): [t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes})
        real_close(fig)

    monkeypatch.setattr(plt, "close", capture)
    compare_hyperparameters.plot_comparison(summary, histories, tmp_path / "comparison.png")
    assert legends == {"learning rate": ["lr=0.001", "lr=0.01", "lr=0.1"],
                       "batch size": ["batch=32", "batch=64", "batch=128"],
                       "optimizer": ["adam (lr=0.001)", "sgd (lr=0.01)"],
                       "scheduler": ["constant lr", "StepLR"]}
    assert (tmp_path / "comparison.png").read_bytes()[:8] == PNG


@pytest.fixture(scope="module")
def study_root(tmp_path_factory) -> Path:
    """A 300-image FashionMNIST (and 100 test images) for the study's own tests."""
    root = tmp_path_factory.mktemp("t02-study-data")
    stand_in_data.write_mnist(root, "FashionMNIST", train_size=300, test_size=100, seed=3)
    return root


@pytest.mark.usefixtures("no_figures")
def test_study_post_preset_runs_the_lesson_chooses_on_validation_and_reports_that_runs_test(study_root, tmp_path,
                                                                                          capsys):
    summary = compare_hyperparameters.main([
        "--data-dir", str(study_root), "--out-dir", str(tmp_path), "--no-accel", "--epochs", "2", "--preset", "post",
        "--lrs", "0.1", "0.01", "--batch-sizes", "64", "--optimizers", "sgd", "--schedulers", "none", "step"])
    out = capsys.readouterr().out
    assert "Preset: post (the tuning post's settings): SGD momentum 0, Adam lr 0.01, " \
           "StepLR(step_size=10, gamma=0.1)\n" in out
    assert "Note: StepLR(step_size=10, gamma=0.1) lowers the learning rate only after epoch 10" in out
    assert "270 training images, 30 held out to compare the runs on" in out  # 10% of 300
    assert [row["label"] for row in summary] == ["lr=0.01 batch=64 sgd none", "lr=0.1 batch=64 sgd none",
                                                 "lr=0.01 batch=64 sgd step"]
    for row in summary:  # each configuration is one fashion_mnist.py run in a folder of its own
        state = safe_load(tmp_path / row["folder"] / "checkpoint.pt")
        assert state["script"] == "fashion_mnist" and state["epoch"] == 2
        assert (state["args"]["momentum"], state["args"]["val_size"], state["args"]["seed"]) == (0.0, 30, 1)
        assert (state["args"]["lr"], state["args"]["scheduler"]) == (row["lr"], row["scheduler"])
        assert [r["lr"] for r in state["metrics"]] == [row["lr"]] * 2  # StepLR never acted
    assert "Step [" not in out and "Test Accuracy" not in out  # the table, not every run's progress lines
    assert re.search(r"1/3  lr=0\.01 batch=64 sgd none\s+2\s+0\.01\s+\d+\.\d{4}\s+\d+\.\d{4}\s+\d+\.\d\d%", out)
    finals = [row["final_val_accuracy"] for row in summary]
    chosen = summary[finals.index(max(finals))]  # the best on validation, the first of equals
    assert [row["test_accuracy"] is not None for row in summary] == [row is chosen for row in summary]
    chosen_history = safe_load(tmp_path / chosen["folder"] / "checkpoint.pt")["metrics"]
    assert chosen["test_accuracy"] == chosen_history[-1]["test_accuracy"]
    best_line = f"Best on validation: {chosen['label']} (validation {100 * chosen['final_val_accuracy']:.2f}%); " \
                f"its test accuracy: {100 * chosen['test_accuracy']:.2f}%\n"
    assert best_line in out and best_line in (tmp_path / "study.log").read_text()
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["status"] for row in rows] == ["ok"] * 3
    assert [row["test_accuracy"] != "" for row in rows] == [row is chosen for row in summary]
    assert (tmp_path / "comparison.png").read_bytes()[:8] == PNG


@pytest.mark.usefixtures("no_figures")
def test_study_records_divergence_and_failed_runs_and_goes_on(study_root, tmp_path, monkeypatch, capsys):
    real_main = fashion_mnist.main

    def adam_fails(argv):
        if "adam" in argv:
            raise cli.UserError("out of disk space (pretend)")
        return real_main(argv)

    monkeypatch.setattr(fashion_mnist, "main", adam_fails)
    summary = compare_hyperparameters.main([
        "--data-dir", str(study_root), "--out-dir", str(tmp_path), "--no-accel", "--epochs", "2", "--val-size", "50",
        "--lr", "0.1", "--lrs", "0.1", "1000", "--batch-sizes", "64", "--optimizers", "sgd", "adam",
        "--schedulers", "none"])
    status = {row["label"]: row["status"] for row in summary}
    assert status == {"lr=0.1 batch=64 sgd none": "ok", "lr=1000 batch=64 sgd none": "diverged in epoch 1",
                      "lr=0.001 batch=64 adam none": "failed: out of disk space (pretend)"}
    assert summary[0]["test_accuracy"] is not None  # the one run to choose
    assert "Best on validation: lr=0.1 batch=64 sgd none" in capsys.readouterr().out
    with open(tmp_path / "summary.csv", newline="") as f:
        assert [row["status"] for row in csv.DictReader(f)] == [row["status"] for row in summary]


def test_study_chooses_the_best_final_validation_accuracy_never_the_test_accuracy(tmp_path, study_root, monkeypatch,
                                                                                 capsys):
    """Scripted runs: lr 0.1 has the best test accuracy and the best single validation epoch, but the final
    validation accuracies of lr 0.01 and 0.001 are higher (and equal: the first of equals wins)."""
    curves = {"0.1": ([0.9, 0.5], [0.6, 0.99]), "0.01": ([0.6, 0.7], [0.5, 0.55]), "0.001": ([0.7, 0.7], [0.5, 0.6])}

    def scripted(argv):
        val, test = curves[argv[argv.index("--lr") + 1]]
        return [{"epoch": epoch, "lr": 0.1, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": v, "test_accuracy": t,
                 "seconds": 0.1} for epoch, (v, t) in enumerate(zip(val, test), start=1)]

    monkeypatch.setattr(fashion_mnist, "main", scripted)
    summary = compare_hyperparameters.main(["--data-dir", str(study_root), "--out-dir", str(tmp_path), "--lrs", "0.1",
                                            "0.01", "0.001", "--batch-sizes", "64", "--optimizers", "sgd",
                                            "--schedulers", "none"])
    assert [(row["lr"], row["test_accuracy"]) for row in summary] == [(0.01, 0.55), (0.1, None), (0.001, None)]
    assert "Best on validation: lr=0.01 batch=64 sgd none (validation 70.00%); its test accuracy: 55.00%" in \
        capsys.readouterr().out


def test_study_stops_on_a_programming_error_instead_of_calling_it_a_failed_run(study_root, tmp_path, monkeypatch):
    def broken(argv):
        raise TypeError("a bug, not a bad setting")

    monkeypatch.setattr(fashion_mnist, "main", broken)
    with pytest.raises(TypeError, match="a bug"):
        compare_hyperparameters.main(["--data-dir", str(study_root), "--out-dir", str(tmp_path), "--no-accel",
                                      "--lrs", "0.1", "--batch-sizes", "64", "--optimizers", "sgd",
                                      "--schedulers", "none"])


def test_study_where_every_run_fails_exits_2(study_root, tmp_path, capsys):
    err = user_error(["--data-dir", str(study_root), "--out-dir", str(tmp_path), "--no-accel", "--epochs", "1",
                      "--lr", "1000", "--lrs", "1000", "--batch-sizes", "64", "--optimizers", "sgd",
                      "--schedulers", "none"], capsys, compare_hyperparameters.main)
    assert "every run diverged or failed (1 of 1)" in err
    with open(tmp_path / "summary.csv", newline="") as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["diverged in epoch 1"]  # still written


def test_study_never_reuses_a_folder_that_holds_a_study(study_root, tmp_path, capsys):
    (tmp_path / "study.log").write_text("an earlier study\n")
    err = user_error(["--data-dir", str(study_root), "--out-dir", str(tmp_path), "--no-accel", "--lrs", "0.1",
                      "--batch-sizes", "64", "--optimizers", "sgd", "--schedulers", "none"], capsys,
                     compare_hyperparameters.main)
    assert f"{tmp_path} already holds a study (study.log)" in err
    assert (tmp_path / "study.log").read_text() == "an earlier study\n" and len(list(tmp_path.iterdir())) == 1


def test_study_val_size_must_leave_training_images(study_root, tmp_path, capsys):
    err = user_error(["--data-dir", str(study_root), "--out-dir", str(tmp_path / "run"), "--no-accel",
                      "--val-size", "300"], capsys, compare_hyperparameters.main)
    assert "--val-size 300: the training set has only 300 images" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--lrs"], "argument --lrs: expected at least one argument"),
    (["--optimizers", "rmsprop"], "argument --optimizers: invalid choice: 'rmsprop'"),
    (["--preset", "paper"], "argument --preset: invalid choice: 'paper'"),
    (["--momentum", "1"], "--momentum: must be at least 0 and less than 1"),
    (["--resume", __file__], "--resume: a study does not resume"),
    (["--model", "cnn", "--batch-sizes", "1", "64"], "--model cnn needs batch sizes of 2 or more"),
])
def test_study_bad_flags_one_line_exit_2(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_hyperparameters.main([*flags, "--out-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


# --- as a reader runs them: real processes, from inside the lesson folder -------------------------

def script(*args: str, cwd: Path = FOLDER) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": "", "MPLBACKEND": "Agg"}  # not relying on pytest's sys.path
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_study_script_run_from_inside_the_folder_imports_the_lesson_and_fails_cleanly():
    """One process for both: run as `python compare_hyperparameters.py` from inside T02_fashion_mnist/ (T01's
    test runs its script from inside its folder too), with a flag it refuses."""
    result = script("compare_hyperparameters.py", "--batch-sizes", "0", cwd=FOLDER)
    assert result.returncode == 2  # reached argparse: the imports of common/ and fashion_mnist worked
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
