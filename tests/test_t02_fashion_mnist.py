"""T02: fashion_mnist.py and compare_hyperparameters.py, end to end on small FashionMNIST/MNIST-format data."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from lesson_tools import (
    RecordingSGD,
    count_single_image_reads,
    expected_gradients,
    extract_definitions,
    record_modes,
    run_copied_code,
)
from matplotlib.axes import Axes
from torch.utils.data import DataLoader, TensorDataset

from common import cli, plots, synthetic
from common.checkpoint import safe_load
from common.lifecycle import TrainingRun
from T02_fashion_mnist import compare_hyperparameters, fashion_mnist

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "T02_fashion_mnist"
SCRIPT = FOLDER / "fashion_mnist.py"
TIMING_KEYS = {"seconds", "train_images_per_second"}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A data folder with small learnable FashionMNIST and MNIST (1,000 train / 300 test) as real IDX files."""
    root = tmp_path_factory.mktemp("t02-data")
    synthetic.write_mnist(root, "FashionMNIST", train_size=1000, test_size=300)
    synthetic.write_mnist(root, "MNIST", train_size=1000, test_size=300, seed=7)
    return root


def run(data_root: Path, out_dir: Path, *flags: str) -> list[dict]:
    return fashion_mnist.main(["--data-dir", str(data_root), "--out-dir", str(out_dir), "--no-accel", *flags])


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


@pytest.fixture(scope="module")
def cnn_root(tmp_path_factory) -> Path:
    """A smaller FashionMNIST for the CNN, the slowest model on a CPU.

    481 = 15 x 32 + 1: with batches of 32 the last one would hold a single image, which batch
    norm cannot train on; the script must drop it (and only it).
    """
    root = tmp_path_factory.mktemp("t02-cnn-data")
    synthetic.write_mnist(root, "FashionMNIST", train_size=481, test_size=200)
    return root


CNN_FLAGS = ["--model", "cnn", "--batch-size", "32", "--scheduler", "step", "--step-size", "1",
             "--log-interval", "5", "--test-batch-size", "128"]
CNN_STEPS = 15  # batches per epoch: 481 images, the last batch of one dropped


@pytest.fixture(scope="module")
def cnn_run(cnn_root, tmp_path_factory) -> tuple[Path, list[dict], dict]:
    """One uninterrupted 2-epoch CNN run with a saved model and a step scheduler.

    It also records what predictions.png shows: the titles, and every picture matplotlib draws.
    """
    out_dir = tmp_path_factory.mktemp("cnn-run")
    shown: dict = {"drawn": []}
    real_grid, real_imshow = plots.plot_image_grid, Axes.imshow

    def grid_spy(images, titles, *args, **kwargs):
        shown["titles"] = titles
        return real_grid(images, titles, *args, **kwargs)

    def imshow_spy(self, array, *args, **kwargs):
        shown["drawn"].append(np.array(array, copy=True))
        return real_imshow(self, array, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "plot_image_grid", grid_spy)
        patch.setattr(Axes, "imshow", imshow_spy)
        history = run(cnn_root, out_dir, "--epochs", "2", "--save-model", *CNN_FLAGS)
    return out_dir, history, shown


# --- the models -------------------------------------------------------------------------------

def linear_sizes(model: torch.nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]


def test_models_have_the_posts_shapes():
    assert linear_sizes(fashion_mnist.NeuralNetwork()) == [(784, 512), (512, 512), (512, 10)]
    assert linear_sizes(fashion_mnist.NeuralNetworkDeep()) == [(784, 1024), (1024, 1024), (1024, 512), (512, 512),
                                                                (512, 10)]
    cnn = fashion_mnist.ConvNet()
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in cnn.modules()
            if isinstance(c, torch.nn.Conv2d)] == [(1, 32, (3, 3)), (32, 64, (3, 3)), (64, 128, (3, 3))]
    assert linear_sizes(cnn) == [(1152, 512), (512, 512), (512, 10)]
    assert [m.p for m in cnn.modules() if isinstance(m, torch.nn.Dropout)] == [0.4, 0.4]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in cnn.modules()) == 3
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in cnn.modules()) == 2
    assert fashion_mnist.count_parameters(fashion_mnist.NeuralNetwork()) == 669_706  # the tutorial's count


def test_the_posts_class_names_are_the_same_classes():
    assert fashion_mnist.NeuralNetwork_v1 is fashion_mnist.NeuralNetwork
    assert fashion_mnist.ConvNeuralNetwork is fashion_mnist.ConvNet


def test_cnn_has_953066_weights_and_the_posts_convolution_biases_would_make_953290():
    cnn = fashion_mnist.ConvNet()
    assert fashion_mnist.count_parameters(cnn) == 953_066
    for block in cnn.features:  # the posts' nn.Conv2d(...) keeps its default bias=True
        conv = block[0]
        block[0] = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
    assert fashion_mnist.count_parameters(cnn) == 953_290  # the posts' figure: 32 + 64 + 128 biases more


@pytest.mark.parametrize("name", ["mlp", "mlp-deep", "cnn"])
def test_forward_gives_ten_logits_per_image(name):
    model = fashion_mnist.MODELS[name]().eval()
    out = model(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert not torch.allclose(out.exp().sum(1), torch.ones(5))  # raw scores, not (log-)probabilities


def test_defaults_are_the_posts_set_up():
    args = fashion_mnist.parse_args([])
    assert (args.model, args.dataset, args.batch_size, args.epochs, args.optimizer, args.lr, args.momentum,
            args.scheduler, args.log_interval, args.measured_stats) == \
        ("mlp", "fashion-mnist", 64, 5, "sgd", 0.01, 0.9, "none", 100, False)


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
    metrics = fashion_mnist.train(model, torch.device("cpu"), loader, loss_fn, optimizer, 1, 1, log_interval=100)
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
    fashion_mnist.train(model, torch.device("cpu"), loader, recording_loss, optimizer, 1, 3, log_interval=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"Epoch [1/3], Step [2/5], Loss: {(losses[0] + losses[1]) / 2:.4f}",
                     f"Epoch [1/3], Step [4/5], Loss: {(losses[2] + losses[3]) / 2:.4f}"]  # step 5: no line
    assert f"{losses[3]:.4f}" != f"{(losses[2] + losses[3]) / 2:.4f}"  # so the check tells the two apart


def test_prediction_titles_mark_the_wrong_guesses_as_t03_does(capsys):
    class AlwaysTShirt(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()

    labels = torch.tensor([0, 1, 0, 9])
    loader = DataLoader(TensorDataset(torch.zeros(4, 1, 28, 28), labels), batch_size=4)
    metrics = fashion_mnist.test(AlwaysTShirt(), torch.device("cpu"), loader, torch.nn.CrossEntropyLoss(),
                                 return_predictions=True)
    assert fashion_mnist.prediction_titles(metrics["predictions"], metrics["targets"], FASHION_CLASSES) == [
        "pred: T-shirt/top\ntrue: T-shirt/top", "pred: T-shirt/top (x)\ntrue: Trouser",
        "pred: T-shirt/top\ntrue: T-shirt/top", "pred: T-shirt/top (x)\ntrue: Ankle boot"]


@pytest.mark.usefixtures("one_thread")
def test_train_runs_in_training_mode_and_test_in_eval_mode(capsys):
    model, loader, loss_fn = fashion_mnist.NeuralNetwork(), small_loader(), torch.nn.CrossEntropyLoss()
    modes = record_modes(model)
    model.eval()  # left in the wrong mode on purpose: train() must switch
    fashion_mnist.train(model, torch.device("cpu"), loader, loss_fn, torch.optim.SGD(model.parameters(), lr=0.01),
                        1, 1)
    assert modes == [True, True, True]
    modes.clear()
    fashion_mnist.test(model, torch.device("cpu"), loader, loss_fn)  # left in training mode by train()
    assert modes == [False, False, False]


@pytest.mark.usefixtures("one_thread")
def test_test_loss_is_the_eval_mode_mean_over_every_image(capsys):
    """With a partial last batch, test_loss must be the plain mean over all images, in eval mode.

    The CNN has dropout and batch norm, so a test() that forgets model.eval() gives other numbers.
    """
    torch.manual_seed(0)
    model, loader, loss_fn = fashion_mnist.ConvNet(), small_loader(count=30, batch_size=12), torch.nn.CrossEntropyLoss()
    metrics = fashion_mnist.test(model, torch.device("cpu"), loader, loss_fn, return_predictions=True)
    images, targets = loader.dataset.tensors
    with torch.no_grad():
        output = model.eval()(images)
        train_mode_loss = loss_fn(model.train()(images), targets).item()
    loss = loss_fn(output, targets).item()
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-5)
    assert train_mode_loss != pytest.approx(loss, rel=1e-3)  # so the check above can tell the modes apart
    assert metrics["test_correct"] == (output.argmax(1) == targets).sum().item() and metrics["test_images"] == 30
    assert torch.equal(metrics["predictions"], output.argmax(1)) and torch.equal(metrics["targets"], targets)
    correct = (output.argmax(1) == targets).sum().item()
    assert capsys.readouterr().out == (f"Test Accuracy: {100 * correct / 30:.2f}%\n"  # the post's line, two decimals
                                       f"Test set: {correct}/30 correct, average loss {metrics['test_loss']:.4f}\n")


def tiny_loaded(count: int) -> fashion_mnist.LoadedData:
    dataset = TensorDataset(torch.zeros(count, 1, 28, 28), torch.arange(count))  # label = the image's index
    return fashion_mnist.LoadedData(dataset, dataset, FASHION_CLASSES, 0.5, 0.5)


def test_loaders_shuffle_training_only_and_drop_only_a_last_batch_of_one():
    make = fashion_mnist.make_loaders
    train_loader, test_loader = make(tiny_loaded(65), 32, 10, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert [len(t) for _, t in train_loader] == [32, 32]  # 65 = 2 x 32 + 1: the single image is left out
    assert torch.cat([t for _, t in test_loader]).tolist() == list(range(65))  # every test image, in order
    assert torch.cat([t for _, t in train_loader]).tolist() != sorted(torch.cat([t for _, t in train_loader]).tolist())
    train_loader, _ = make(tiny_loaded(66), 32, 10, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert [len(t) for _, t in train_loader] == [32, 32, 2]  # a last batch of two is kept


def test_model_train_and_test_copy_out_alone_and_the_whole_script_needs_common(tmp_path):
    """One process (torch takes seconds to import): the copied pieces must run on their own; then a copy of
    the whole script, with common/ out of reach, must stop with one line."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "fashion_mnist.py").write_text(SCRIPT.read_text(encoding="utf-8"), encoding="utf-8")
    code = extract_definitions(SCRIPT, ["NeuralNetwork", "conv_block", "ConvNet", "train", "evaluate", "test"]) + \
        textwrap.dedent("""
        torch.manual_seed(0)
        images = torch.randn(64, 1, 28, 28)
        targets = (images.mean(dim=(1, 2, 3)) > 0).long()
        loader = DataLoader(torch.utils.data.TensorDataset(images, targets), batch_size=16, shuffle=True)
        for model in (NeuralNetwork(), ConvNet()):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            train_metrics = train(model, torch.device("cpu"), loader, nn.CrossEntropyLoss(), optimizer, 1, 1,
                                  log_interval=2)
            test_metrics = test(model, torch.device("cpu"), loader, nn.CrossEntropyLoss(), return_predictions=True)
            assert train_metrics["train_images"] == test_metrics["test_images"] == 64, (train_metrics, test_metrics)
            assert 0 < train_metrics["train_loss"] < 5 and 0 <= test_metrics["test_accuracy"] <= 1
            assert test_metrics["predictions"].shape == (64,)
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
    assert "Using device: cpu" in log
    assert re.search(rf"Epoch \[1/2\], Step \[5/{CNN_STEPS}\], Loss: \d+\.\d{{4}}\n", log)
    assert re.search(rf"Epoch \[2/2\], Step \[15/{CNN_STEPS}\], Loss: \d+\.\d{{4}}\n", log)
    assert re.search(r"Test Accuracy: \d+\.\d\d%\n.*Test set: \d+/200 correct, average loss \d+\.\d{4}\n", log)
    assert re.search(r"Epoch 2 took \d+\.\d s \(training: [\d,]+ images/s\)", log)
    assert "Parameters: 953,066" in log and "ConvNet(" in log and "Hardest classes: " in log
    for name in ("checkpoint.pt", "metrics.json", "metrics.csv", "curves.png", "predictions.png",
                 "confusion_matrix.png", "fashion_mnist_cnn.pt"):
        assert (out_dir / name).is_file(), name
    for name in ("curves.png", "predictions.png", "confusion_matrix.png"):
        assert (out_dir / name).read_bytes()[:8] == PNG, name
    assert f"Run folder: {out_dir} (" in log


def test_prediction_pictures_are_the_first_test_images_with_their_own_predictions(cnn_root, cnn_run):
    """Titles must be the model's prediction for test_set[i], drawn as the real 0..1 pixels of that image."""
    out_dir, _, shown = cnn_run
    loaded = fashion_mnist.load_data("fashion-mnist", cnn_root)
    model = fashion_mnist.ConvNet()
    model.load_state_dict(safe_load(out_dir / "fashion_mnist_cnn.pt"))
    images = torch.stack([loaded.test_set[i][0] for i in range(16)])
    with torch.no_grad():
        predicted = model.eval()(images).argmax(1).tolist()
    truth = [int(loaded.test_set[i][1]) for i in range(16)]
    assert shown["titles"] == [f"pred: {FASHION_CLASSES[p]}{'' if p == t else ' (x)'}\ntrue: {FASHION_CLASSES[t]}"
                               for p, t in zip(predicted, truth)]
    raw = (cnn_root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:16] / 255.0
    drawn = [array for array in shown["drawn"] if array.shape == (28, 28)]
    assert len(drawn) == 16
    for picture, expected in zip(drawn, pixels):
        assert np.allclose(picture, expected, atol=1e-6)  # un-normalised: what the eye should see


@pytest.mark.parametrize("model, flags", [("mlp", ["--batch-size", "16"]),
                                          ("mlp-deep", ["--batch-size", "16", "--lr", "0.05"])])
def test_mlps_learn_fashion_mnist(data_root, tmp_path, model, flags):
    history = run(data_root, tmp_path, "--model", model, "--epochs", "2", *flags)
    assert history[-1]["test_accuracy"] > 0.6
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_mnist_with_measured_statistics(data_root, tmp_path, monkeypatch):
    shown = {}
    real_grid = plots.plot_image_grid

    def grid_spy(images, titles, path, mean=None, std=None, **kwargs):
        shown.update(titles=titles, mean=mean, std=std)
        return real_grid(images, titles, path, mean, std, **kwargs)

    monkeypatch.setattr(plots, "plot_image_grid", grid_spy)
    history = run(data_root, tmp_path, "--dataset", "mnist", "--measured-stats", "--epochs", "2",
                  "--batch-size", "16")
    assert history[-1]["test_accuracy"] > 0.6
    raw = (data_root / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16) / 255.0
    assert shown["mean"] == pytest.approx(pixels.mean(), abs=1e-4)
    assert shown["std"] == pytest.approx(pixels.std(), abs=1e-4)
    assert f"normalised with mean {shown['mean']} and std {shown['std']}" in (tmp_path / "train.log").read_text()
    assert len(shown["titles"]) == 16
    assert all(re.fullmatch(r"pred: \d - \w+( \(x\))?\ntrue: \d - \w+", title)  # MNIST's names
               for title in shown["titles"])


def test_figures_name_the_classes(data_root, tmp_path, monkeypatch):
    captured = {}
    real_grid, real_matrix = plots.plot_image_grid, fashion_mnist.plot_confusion_matrix

    def grid_spy(images, titles, path, *args, **kwargs):
        captured["titles"] = titles
        return real_grid(images, titles, path, *args, **kwargs)

    def matrix_spy(counts, class_names, path, **kwargs):
        captured.update(counts=counts, class_names=class_names)
        return real_matrix(counts, class_names, path, **kwargs)

    monkeypatch.setattr(plots, "plot_image_grid", grid_spy)
    monkeypatch.setattr(fashion_mnist, "plot_confusion_matrix", matrix_spy)
    history = run(data_root, tmp_path, "--epochs", "1", "--lr", "0.1")
    assert captured["class_names"] == FASHION_CLASSES
    assert all(re.fullmatch(r"pred: (.+?)( \(x\))?\ntrue: (.+)", t)
               and re.fullmatch(r"pred: (.+?)( \(x\))?\ntrue: (.+)", t).group(1) in FASHION_CLASSES
               for t in captured["titles"])
    counts = captured["counts"]
    assert counts.sum() == 300 and counts.diag().sum() == history[-1]["test_correct"]
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == PNG


def test_confusion_matrix_figure_and_hardest_classes(tmp_path):
    counts = torch.tensor([[8, 2, 0], [0, 5, 5], [0, 0, 0]])  # class "c" has no test images at all
    path = fashion_mnist.plot_confusion_matrix(counts, ["a", "b", "c"], tmp_path / "cm.png")
    assert path.read_bytes()[:8] == PNG
    assert fashion_mnist.hardest_classes(counts, ["a", "b", "c"], 2) == "c 0.0%, b 50.0%"



def test_classic_pipeline_gives_the_same_numbers(data_root, tmp_path, monkeypatch):
    reads = count_single_image_reads(monkeypatch)
    fast = run(data_root, tmp_path / "fast", "--epochs", "1")
    assert len(reads) <= 16  # whole batches (InMemoryDataset.__getitems__); single images only for the picture
    classic = run(data_root, tmp_path / "classic", "--epochs", "1", "--classic-pipeline")
    assert without_timing(fast) == without_timing(classic)


def test_diverging_run_stops_with_one_line_and_leaves_nothing(data_root, tmp_path, capsys):
    err = user_error(["--data-dir", str(data_root), "--out-dir", str(tmp_path / "run"), "--epochs", "3",
                      "--lr", "1000", "--no-accel", "--save-model"], capsys)
    assert "training diverged in epoch 1" in err and "learning rate 1000" in err and "smaller --lr" in err
    assert not (tmp_path / "run").exists()  # no NaN weights, no checkpoint, no half-made folder


# --- checkpoints, resume, Ctrl-C --------------------------------------------------------------

def test_every_run_writes_a_checkpoint_with_the_posts_entries(cnn_run):
    out_dir, history, _ = cnn_run
    state = safe_load(out_dir / "checkpoint.pt")
    assert state["epoch"] == 2 and state["model_class"] == "ConvNet"
    assert {"model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "args", "metrics", "loss"} <= set(state)
    assert state["metrics"][-1]["train_loss"] == history[-1]["train_loss"] == state["loss"]
    assert state["args"]["model"] == "cnn" and state["scheduler_state_dict"]["last_epoch"] == 2


def test_saved_model_reloads_to_identical_outputs(cnn_run):
    out_dir, _, _ = cnn_run
    reloaded = fashion_mnist.ConvNet()
    reloaded.load_state_dict(safe_load(out_dir / "fashion_mnist_cnn.pt"))
    trained = fashion_mnist.ConvNet()
    trained.load_state_dict(safe_load(out_dir / "checkpoint.pt")["model_state_dict"])
    images = torch.randn(8, 1, 28, 28)
    assert torch.equal(reloaded.eval()(images), trained.eval()(images))


def test_ctrl_c_mid_epoch_then_the_printed_command_equals_an_uninterrupted_run(cnn_root, cnn_run, tmp_path,
                                                                              monkeypatch, capsys):
    # The CNN has dropout, batch norm and shuffling: only restored random-number state makes the runs agree.
    straight_dir, straight, _ = cnn_run
    real_step, calls = torch.optim.SGD.step, {"n": 0}

    def step_then_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == CNN_STEPS + 3:  # Ctrl-C 3 batches into epoch 2
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(cnn_root, tmp_path / "split", "--epochs", "2", "--save-model", *CNN_FLAGS)
    monkeypatch.undo()
    out = capsys.readouterr().out
    assert "Interrupted during epoch 2" in out
    assert safe_load(tmp_path / "split" / "checkpoint.pt")["epoch"] == 1  # the last finished epoch, untouched
    command = shlex.split(out.split("continue with:\n")[1].splitlines()[0])
    assert command[:2] == ["python", os.path.relpath(SCRIPT)]
    resumed = fashion_mnist.main(command[2:])  # the command exactly as printed
    assert "Resuming from" in capsys.readouterr().out
    assert without_timing(resumed) == without_timing(straight)
    split_dir = tmp_path / "split"
    resumed_state, straight_state = safe_load(split_dir / "checkpoint.pt"), safe_load(straight_dir / "checkpoint.pt")
    for key in ("epoch", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict"):
        assert identical(resumed_state[key], straight_state[key]), key  # bit for bit
    assert resumed_state["scheduler_state_dict"]["last_epoch"] == 2  # the schedule carried on, not restarted
    assert identical(safe_load(split_dir / "fashion_mnist_cnn.pt"), safe_load(straight_dir / "fashion_mnist_cnn.pt"))


def identical(a, b) -> bool:
    """Equal, tensors bit for bit, through nested dicts and lists (state dicts)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    return a == b


def test_ctrl_c_in_the_first_epoch_leaves_nothing(data_root, tmp_path, monkeypatch, capsys):
    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.optim.SGD, "step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(data_root, tmp_path / "run", "--epochs", "1")
    assert "before any epoch finished: nothing to keep" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def folder_state(folder: Path) -> dict:
    return {path.name: (path.stat().st_mtime_ns, path.stat().st_size) for path in folder.iterdir()}


@pytest.mark.parametrize("flags, messages", [
    (["--lr", "0.5", "--momentum", "0"], ["--lr 0.01 (this run: 0.5)", "--momentum 0.9 (this run: 0.0)"]),
    (["--optimizer", "adam"], ["--optimizer sgd (this run: adam)"]),
    (["--scheduler", "none", "--batch-size", "16"], ["--scheduler step (this run: none)",
                                                     "--batch-size 32 (this run: 16)"]),
    (["--step-size", "2", "--gamma", "0.1"], ["--step-size 1 (this run: 2)", "--gamma 0.5 (this run: 0.1)"]),
    (["--measured-stats"], ["--measured-stats False (this run: True)"]),
    (["--val-size", "100", "--patience", "2"], ["--val-size 0 (this run: 100)", "--patience 0 (this run: 2)"]),
    (["--model", "mlp"], ["holds a ConvNet model, not a NeuralNetwork"]),
    (["--epochs", "2"], ["already trained 2 epoch(s)"]),
])
def test_resume_with_other_settings_is_refused_and_touches_nothing(cnn_root, cnn_run, capsys, flags, messages):
    out_dir, _, _ = cnn_run
    before = folder_state(out_dir)
    err = user_error(["--data-dir", str(cnn_root), "--no-accel", *CNN_FLAGS, "--epochs", "3", *flags,
                      "--resume", str(out_dir / "checkpoint.pt")], capsys)
    for words in messages:
        assert words in err
    assert folder_state(out_dir) == before  # not even train.log has a new line


def test_resume_from_a_weights_only_file_is_refused(cnn_root, cnn_run, capsys):
    out_dir, _, _ = cnn_run
    err = user_error(["--data-dir", str(cnn_root), "--no-accel", "--model", "cnn",
                      "--resume", str(out_dir / "fashion_mnist_cnn.pt")], capsys)
    assert "not a full training checkpoint" in err


def test_save_checkpoint_is_an_accepted_hidden_leftover(capsys):
    assert fashion_mnist.parse_args(["--save-checkpoint"]).save_checkpoint  # older commands still run
    with pytest.raises(SystemExit):
        fashion_mnist.parse_args(["--help"])
    assert "--save-checkpoint" not in capsys.readouterr().out  # every run checkpoints: nothing to ask for


# --- validation and early stopping -------------------------------------------------------------

def test_validation_split_is_disjoint_seeded_and_of_the_asked_size():
    dataset = TensorDataset(torch.arange(100))
    torch.manual_seed(0)
    train_part, val_part = fashion_mnist.split_validation(dataset, 30, seed=1)
    drawn_after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), drawn_after)  # its own generator: torch's global random numbers untouched
    def indices(part):  # the dataset holds 0..99, so each item is its own index
        return [int(item) for (item,) in part]

    train_indices, val_indices = indices(train_part), indices(val_part)
    assert len(val_indices) == 30 and len(train_indices) == 70
    assert sorted(train_indices + val_indices) == list(range(100))  # disjoint, and nothing lost
    assert val_indices == indices(fashion_mnist.split_validation(dataset, 30, seed=1)[1])  # fixed by the seed
    assert val_indices != indices(fashion_mnist.split_validation(dataset, 30, seed=2)[1])
    assert val_indices != list(range(30))  # drawn at random, not the first (or last) images
    loaded = fashion_mnist.hold_out_validation(tiny_loaded(100), 30, seed=1)
    assert sorted(int(loaded.train_set[i][1]) for i in range(70)) == sorted(train_indices)  # labels = indices
    assert sorted(int(loaded.val_set[i][1]) for i in range(30)) == sorted(val_indices)
    assert len(loaded.test_set) == 100  # the test set is not touched


def test_val_size_reports_validation_accuracy_each_epoch(data_root, tmp_path, capsys):
    history = run(data_root, tmp_path, "--dry-run", "--val-size", "200")
    assert {"val_loss", "val_accuracy"} <= set(history[0])
    log = (tmp_path / "train.log").read_text()
    assert "fashion-mnist: 800 training, 200 validation and 300 test images" in log
    assert re.search(rf"Validation accuracy: {100 * history[0]['val_accuracy']:.2f}%\n", log)
    assert (tmp_path / "best_model.pt").is_file()


def test_val_size_must_leave_training_images(data_root, tmp_path, capsys):
    for main in (fashion_mnist.main, compare_hyperparameters.main):
        err = user_error(["--data-dir", str(data_root), "--out-dir", str(tmp_path / "run"), "--no-accel",
                          "--val-size", "1000"], capsys, main)
        assert "--val-size 1000: the training set has only 1,000 images" in err
    assert not (tmp_path / "run").exists()


# Scripted validation accuracies: the best is epoch 2's; epochs 3 and 4 bring nothing better (a tie is not
# better), so with --patience 2 the run stops before epoch 5 and keeps epoch 2's weights.
VAL_CURVE = [0.50, 0.60, 0.55, 0.60, 0.70, 0.80]
EARLY_FLAGS = ["--val-size", "200", "--patience", "2", "--save-model"]
STOPPED = "Early stopping: no better validation accuracy for 2 epochs; keeping epoch 2 (validation accuracy 60.00%)\n"


def script_validation(monkeypatch, first_epoch: int = 1) -> None:
    """Make validate() report VAL_CURVE, one value per epoch from `first_epoch` on (a fixed, known curve)."""
    epochs = iter(range(first_epoch, len(VAL_CURVE) + 1))

    def scripted(model, device, val_loader, loss_fn, dry_run=False):
        assert len(val_loader.dataset) == 200
        accuracy = VAL_CURVE[next(epochs) - 1]
        return {"val_loss": 1 - accuracy, "val_accuracy": accuracy}

    monkeypatch.setattr(fashion_mnist, "validate", scripted)


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
    # The final model is the best epoch's: the saved model, the figures and the last test lines come from it.
    best = safe_load(straight_dir / "best_model.pt")
    assert identical(safe_load(straight_dir / "fashion_mnist_mlp.pt"), best)
    assert not identical(safe_load(straight_dir / "checkpoint.pt")["model_state_dict"], best)  # not epoch 4's
    model = fashion_mnist.NeuralNetwork()
    model.load_state_dict(best)
    test_loader = DataLoader(fashion_mnist.load_data("fashion-mnist", data_root).test_set, batch_size=1000)
    accuracy = fashion_mnist.evaluate(model, torch.device("cpu"), test_loader, torch.nn.CrossEntropyLoss())["accuracy"]
    kept_test_lines = f"The kept weights on the test set:\nTest Accuracy: {100 * accuracy:.2f}%\n"
    assert out.split(STOPPED)[1].startswith(kept_test_lines)

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

def test_tensorboard_scalars_when_installed(data_root, tmp_path, monkeypatch):
    written = []

    class FakeWriter:
        def __init__(self, log_dir):
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
    run(data_root, tmp_path, "--dry-run", "--tensorboard")
    assert written[0] == ("dir", str(tmp_path / "tensorboard"))
    assert {"Loss/train", "Loss/test", "Accuracy/train", "Accuracy/test"} == {w[0] for w in written[1:-2]}
    assert written[-2:] == [("flushed",), ("closed",)]


def test_tensorboard_missing_is_a_hint_not_a_crash(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    history = run(data_root, tmp_path, "--dry-run", "--tensorboard")
    assert len(history) == 1 and history[0]["train_images"] == 64
    assert "tensorboard package is not installed (pip install tensorboard)" in capsys.readouterr().out
    assert not (tmp_path / "checkpoint.pt").exists()  # a dry run is no epoch: nothing to resume


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
    (["--dataset", "cifar10"], "argument --dataset: invalid choice: 'cifar10'"),
    (["--epochs", "0"], "--epochs: must be greater than 0"),
    (["--batch-size", "-1"], "--batch-size: must be greater than 0"),
    (["--lr", "0"], "--lr: must be a finite number greater than 0"),
    (["--momentum", "1"], "--momentum: must be at least 0 and less than 1"),
    (["--momentum", "fast"], "--momentum: expected a number"),
    (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
    (["--scheduler", "cosine"], "argument --scheduler: invalid choice: 'cosine'"),
    (["--step-size", "0"], "--step-size: must be greater than 0"),
    (["--log-interval", "x"], "--log-interval: expected a whole number"),
    (["--val-size", "-5"], "--val-size: must be 0 or more"),
    (["--patience", "2"], "--patience needs --val-size"),
])
def test_bad_flags_one_line_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fashion_mnist.main(flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and err.count("\n") == 1


def user_error(argv: list[str], capsys, main=fashion_mnist.main) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(lambda: main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def test_cnn_with_batches_of_one_is_refused_before_anything_runs(tmp_path, capsys):
    err = user_error(["--model", "cnn", "--batch-size", "1", "--data-dir", str(tmp_path / "nothing"),
                      "--out-dir", str(tmp_path / "run")], capsys)
    assert "--model cnn needs --batch-size 2 or more" in err and "batch norm" in err
    assert not (tmp_path / "run").exists()


def test_missing_resume_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fashion_mnist.main(["--resume", str(tmp_path / "nope.pt"), "--out-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "--resume: checkpoint" in err and "nope.pt does not exist" in err
    assert not (tmp_path / "run").exists()


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


def test_comparison_legends_are_ordered_by_value(monkeypatch):
    """Batch sizes 32, 64, 128 in the legend, as on the axis of a plot, not in the order the runs were made."""
    plan = compare_hyperparameters.plan_runs(compare_hyperparameters.parse_args([]))
    summary = [{"run": number, "label": config.label, "studies": "; ".join(studies), "lr": config.lr,
                "batch_size": config.batch_size, "optimizer": config.optimizer, "scheduler": config.scheduler,
                "status": "ok"} for number, (config, studies) in enumerate(plan.items(), start=1)]
    assert [row["batch_size"] for row in summary if "batch size" in row["studies"]] == [64, 32, 128]  # run order
    results = [{"run": row["run"], "epoch": epoch, "val_accuracy": 0.5} for row in summary for epoch in (1, 2)]
    legends = {}

    def capture(fig, path, show=False):
        import matplotlib.pyplot as plt

        legends.update({ax.get_title(): [t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes})
        plt.close(fig)
        return path

    monkeypatch.setattr(plots, "save_figure", capture)
    compare_hyperparameters.plot_comparison(summary, results, Path("comparison.png"))
    assert legends == {"learning rate": ["lr=0.001", "lr=0.01", "lr=0.1"],
                       "batch size": ["batch=32", "batch=64", "batch=128"],
                       "optimizer": ["adam (lr=0.001)", "sgd (lr=0.01)"],
                       "scheduler": ["constant lr", "StepLR"]}


@pytest.fixture(scope="module")
def study_root(tmp_path_factory) -> Path:
    """A 300-image FashionMNIST (and 100 test images) for the study's own tests."""
    root = tmp_path_factory.mktemp("t02-study-data")
    synthetic.write_mnist(root, "FashionMNIST", train_size=300, test_size=100, seed=3)
    return root


def test_study_post_preset_chooses_on_validation_and_tests_once(study_root, tmp_path, monkeypatch, capsys):
    evaluated, tested, momenta = [], [], []
    real_evaluate, real_test, real_build = (compare_hyperparameters.evaluate, compare_hyperparameters.test,
                                            compare_hyperparameters.build_optimizer)

    def evaluate_spy(model, device, loader, *args, **kwargs):
        evaluated.append(len(loader.dataset))
        return real_evaluate(model, device, loader, *args, **kwargs)

    def test_spy(model, device, loader, *args, **kwargs):
        tested.append(len(loader.dataset))
        return real_test(model, device, loader, *args, **kwargs)

    def build_spy(name, parameters, lr, momentum):
        momenta.append(momentum)
        return real_build(name, parameters, lr, momentum)

    monkeypatch.setattr(compare_hyperparameters, "evaluate", evaluate_spy)
    monkeypatch.setattr(compare_hyperparameters, "test", test_spy)
    monkeypatch.setattr(compare_hyperparameters, "build_optimizer", build_spy)
    summary = compare_hyperparameters.main([
        "--data-dir", str(study_root), "--out-dir", str(tmp_path), "--no-accel", "--epochs", "2", "--preset", "post",
        "--lrs", "0.1", "0.01", "--batch-sizes", "64", "--optimizers", "sgd", "--schedulers", "none", "step"])
    out = capsys.readouterr().out
    assert "Preset: post (the tuning post's settings): SGD momentum 0, Adam lr 0.01, " \
           "StepLR(step_size=10, gamma=0.1)\n" in out
    assert momenta == [0.0, 0.0, 0.0]  # plain SGD
    assert "Note: StepLR(step_size=10, gamma=0.1) lowers the learning rate only after epoch 10" in out
    assert "270 training images, 30 held out to compare the runs on (validation)" in out  # 10% of 300
    assert evaluated == [30] * 6 and tested == [100]  # 3 runs x 2 epochs on validation; the test set once
    assert [row["label"] for row in summary] == ["lr=0.01 batch=64 sgd none", "lr=0.1 batch=64 sgd none",
                                                 "lr=0.01 batch=64 sgd step"]
    finals = [row["final_val_accuracy"] for row in summary]
    chosen = summary[finals.index(max(finals))]  # the best on validation, the first of equals
    assert [row["test_accuracy"] is not None for row in summary] == [row is chosen for row in summary]
    assert f"Best on validation: {chosen['label']} (validation {100 * chosen['final_val_accuracy']:.2f}%); " \
           f"its test accuracy: {100 * chosen['test_accuracy']:.2f}%\n" in out
    with open(tmp_path / "results.csv", newline="") as f:
        results = list(csv.DictReader(f))
    assert [float(row["epoch_lr"]) for row in results if row["scheduler"] == "step"] == [0.01, 0.01]  # never acted
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"final_val_accuracy", "best_val_accuracy", "test_accuracy"} <= set(rows[0])
    assert [row["test_accuracy"] != "" for row in rows] == [row is chosen for row in summary]


def test_study_runs_a_tiny_grid_and_survives_divergence_and_failure(data_root, tmp_path, monkeypatch, capsys):
    real_build = compare_hyperparameters.build_optimizer

    def adam_fails(name, *args, **kwargs):
        if name == "adam":
            raise RuntimeError("out of memory (pretend)")
        return real_build(name, *args, **kwargs)

    monkeypatch.setattr(compare_hyperparameters, "build_optimizer", adam_fails)
    summary = compare_hyperparameters.main([
        "--data-dir", str(data_root), "--out-dir", str(tmp_path), "--no-accel", "--epochs", "2",
        "--lr", "0.1", "--lrs", "0.1", "1000", "--batch-sizes", "64", "--optimizers", "sgd", "adam",
        "--schedulers", "none"])
    status = {row["label"]: row["status"] for row in summary}
    assert status == {"lr=0.1 batch=64 sgd none": "ok", "lr=1000 batch=64 sgd none": "diverged in epoch 1",
                      "lr=0.001 batch=64 adam none": "failed: RuntimeError: out of memory (pretend)"}
    assert summary[0]["final_val_accuracy"] > 0.6 and summary[0]["test_accuracy"] > 0.6  # the one run to choose
    out = capsys.readouterr().out
    assert "Preset: project (this project's set-up): SGD momentum 0.9, Adam lr 0.001, " \
           "StepLR(step_size=2, gamma=0.5)\n" in out
    table_row = r"1/3  lr=0\.1 batch=64 sgd none\s+2\s+0\.1\s+\d+\.\d{4}\s+\d+\.\d{4}\s+\d+\.\d\d%"
    assert re.search(table_row, out) and re.search(table_row, (tmp_path / "study.log").read_text())
    assert "Step [" not in out and "Test Accuracy" not in out  # the table, not every run's progress lines
    chosen = summary[0]
    assert f"Best on validation: lr=0.1 batch=64 sgd none (validation {100 * chosen['final_val_accuracy']:.2f}%); " \
           f"its test accuracy: {100 * chosen['test_accuracy']:.2f}%\n" in out
    with open(tmp_path / "results.csv", newline="") as f:
        results = list(csv.DictReader(f))
    assert [(row["run"], row["epoch"]) for row in results] == [("1", "1"), ("1", "2")]
    assert float(results[-1]["val_accuracy"]) == summary[0]["final_val_accuracy"]
    with open(tmp_path / "summary.csv", newline="") as f:
        assert [row["status"] for row in csv.DictReader(f)] == [row["status"] for row in summary]
    assert (tmp_path / "comparison.png").read_bytes()[:8] == PNG


def test_study_where_every_run_fails_exits_2(data_root, tmp_path, capsys):
    err = user_error(["--data-dir", str(data_root), "--out-dir", str(tmp_path), "--no-accel", "--epochs", "1",
                      "--lr", "1000", "--lrs", "1000", "--batch-sizes", "64", "--optimizers", "sgd",
                      "--schedulers", "none"], capsys, compare_hyperparameters.main)
    assert "every run diverged or failed (1 of 1)" in err
    with open(tmp_path / "summary.csv", newline="") as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["diverged in epoch 1"]  # still written


@pytest.mark.parametrize("flags, message", [
    (["--lrs"], "argument --lrs: expected at least one argument"),
    (["--lrs", "0.1", "-1"], "--lrs: must be a finite number greater than 0"),
    (["--batch-sizes", "0"], "--batch-sizes: must be greater than 0"),
    (["--optimizers", "rmsprop"], "argument --optimizers: invalid choice: 'rmsprop'"),
    (["--epochs", "0"], "--epochs: must be greater than 0"),
    (["--preset", "paper"], "argument --preset: invalid choice: 'paper'"),
    (["--val-size", "0"], "--val-size: must be greater than 0"),
])
def test_study_bad_flags_one_line_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_hyperparameters.main(flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and err.count("\n") == 1


def test_study_refuses_cnn_batches_of_one(tmp_path, capsys):
    err = user_error(["--model", "cnn", "--batch-sizes", "1", "64", "--out-dir", str(tmp_path / "run")], capsys,
                     compare_hyperparameters.main)
    assert "--model cnn needs batch sizes of 2 or more" in err
    assert not (tmp_path / "run").exists()


# --- as a reader runs them: real processes, from inside the lesson folder -------------------------

def script(*args: str, cwd: Path = FOLDER) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": "", "MPLBACKEND": "Agg"}  # not relying on pytest's sys.path
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_lesson_script_runs_from_inside_its_folder(data_root, tmp_path):
    result = script("fashion_mnist.py", "--dry-run", "--no-accel", "--data-dir", str(data_root),
                    "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Test Accuracy: " in result.stdout and "Run folder: " in result.stdout


def test_study_script_imports_the_lesson_and_fails_cleanly(tmp_path):
    result = script(str(FOLDER / "compare_hyperparameters.py"), "--batch-sizes", "0", cwd=tmp_path)
    assert result.returncode == 2  # reached argparse: the import of fashion_mnist worked from elsewhere
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
