"""T02: quickstart.py, the official PyTorch quickstart, on small FashionMNIST-format data."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import stand_in_data
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets
from torchvision.transforms import ToTensor

from common import cli
from T02_fashion_mnist import quickstart
from tests.lesson_tools import (
    RecordingSGD,
    count_single_image_reads,
    expected_gradients,
    extract_definitions,
    record_modes,
    run_copied_code,
)

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "T02_fashion_mnist" / "quickstart.py"
LOSS_LINE = re.compile(r"^loss: \d\.\d{6}  \[   64/  640\]$")  # two spaces before '[', widths 5 and 5
ACCURACY_LINE = re.compile(r"^ Accuracy: (\d+\.\d)%, Avg loss: (\d\.\d{6}) $")
TIMING_KEYS = {"seconds", "train_images_per_second"}


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory) -> Path:
    """A data folder with a small learnable FashionMNIST (640 train / 200 test): 10 batches of 64."""
    root = tmp_path_factory.mktemp("fashion-data")
    stand_in_data.write_mnist(root, "FashionMNIST", train_size=640, test_size=200)
    return root


def run(root: Path, out_dir: Path, *flags: str) -> list[dict]:
    return quickstart.main(["--data-dir", str(root), "--out-dir", str(out_dir), "--no-accel", *flags])


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def user_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(lambda: quickstart.main(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


# The Quickstart's class, written as PyTorch's Quickstart page writes it (the page this script follows).
# The FashionMNIST post's text is not available here: this is the public Quickstart page's definition,
# written out from it, not copied from the post.
QUICKSTARTS_NEURAL_NETWORK = textwrap.dedent("""
    from torch import nn

    class NeuralNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(
                nn.Linear(28*28, 512),
                nn.ReLU(),
                nn.Linear(512, 512),
                nn.ReLU(),
                nn.Linear(512, 10)
            )

        def forward(self, x):
            x = self.flatten(x)
            logits = self.linear_relu_stack(x)
            return logits
""")


def test_the_quickstarts_weights_load_strictly_into_neural_network():
    page = {}
    exec(QUICKSTARTS_NEURAL_NETWORK, page)
    torch.manual_seed(0)
    theirs = page["NeuralNetwork"]()
    ours = quickstart.NeuralNetwork()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()) == 669_706
    images = torch.randn(4, 1, 28, 28)
    assert torch.allclose(ours.eval()(images), theirs.eval()(images), atol=1e-6)

def test_prints_the_quickstarts_whole_story(fashion_root, tmp_path, capsys):
    """Line by line: the first batch's shapes, the device, the model, the epochs, Done!, the saved weights
    and the prediction of a new model loaded from them."""
    history = run(fashion_root, tmp_path, "--epochs", "2")
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["Shape of X [N, C, H, W]: torch.Size([64, 1, 28, 28])",
                         "Shape of y: torch.Size([64]) torch.int64", "Using cpu device"]
    model_lines = str(quickstart.NeuralNetwork()).splitlines()
    assert lines[3:3 + len(model_lines)] == model_lines  # print(model)
    assert lines[3 + len(model_lines)].startswith("Using device: cpu | torch ")  # the run's own line, with versions
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
    assert lines[-4:-1] == ["Done!", f"Saved PyTorch Model State to {tmp_path / 'model.pth'}",
                            f'Predicted: "{predicted_first_test_image(fashion_root, tmp_path / "model.pth")}", '
                            f'Actual: "{FASHION_CLASSES[raw_test_labels(fashion_root)[0]]}"']
    assert lines[-1].startswith(f"Run folder: {tmp_path} (")

    # The run folder: the run's files, the weights under their own name, metrics = history.
    for name in ("checkpoint.pt", "metrics.json", "metrics.csv", "train.log", "curves.png", "model.pth"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "metrics.json").read_text()) == history
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[-1]["test_images"] == 200 and history[-1]["train_images"] == 640
    assert "Done!" in (tmp_path / "train.log").read_text()
    saved = torch.load(tmp_path / "model.pth", weights_only=True)  # the trained weights, as a state dict
    trained = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model_state_dict"]
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)


def test_a_new_model_loaded_from_model_pth_predicts_the_first_test_image(fashion_root, tmp_path, monkeypatch,
                                                                          capsys):
    """The prediction must come from the saved weights, not from the model that trained or a fresh one."""
    real_load = quickstart.torch.load
    loaded = []

    def tampered_load(path, *args, **kwargs):  # the file's weights, every one moved: another prediction
        state = real_load(path, *args, **kwargs)
        loaded.append(Path(path))
        return {k: v + 10 * torch.randn_like(v) for k, v in state.items()}

    monkeypatch.setattr(quickstart.torch, "load", tampered_load)
    torch.manual_seed(3)
    made = [quickstart.NeuralNetwork(), quickstart.NeuralNetwork()]  # the model that trains, then the new one
    monkeypatch.setattr(quickstart, "NeuralNetwork", lambda: made.pop(0))
    real = made[1]
    run(fashion_root, tmp_path, "--epochs", "1")
    monkeypatch.undo()
    assert loaded == [tmp_path / "model.pth"]
    with torch.no_grad():
        image = (torch.from_numpy(raw_test_images(fashion_root)[:1].copy()).float() / 255).unsqueeze(1)
        expected = FASHION_CLASSES[real.eval()(image).argmax(1).item()]
    assert f'Predicted: "{expected}", ' in capsys.readouterr().out


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def raw_test_labels(root: Path) -> np.ndarray:
    return np.frombuffer((root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes(), np.uint8, offset=8)


def raw_test_images(root: Path) -> np.ndarray:
    raw = (root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)


def predicted_first_test_image(root: Path, weights: Path) -> str:
    model = quickstart.NeuralNetwork()
    model.load_state_dict(torch.load(weights, weights_only=True))
    image = (torch.from_numpy(raw_test_images(root)[:1].copy()).float() / 255).unsqueeze(1)
    with torch.no_grad():
        return FASHION_CLASSES[model.eval()(image).argmax(1).item()]


def test_learns_above_chance_with_a_larger_lr(fashion_root, tmp_path, capsys):
    # At the tutorial's lr 1e-3, 10 batches an epoch barely move the weights; a larger rate shows it learns.
    history = run(fashion_root, tmp_path, "--epochs", "4", "--lr", "0.05", "--batch-size", "8")
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.5  # ten classes: chance is 0.1
    assert history[-1]["test_correct"] == round(history[-1]["test_accuracy"] * 200)


def test_builds_the_tutorials_recipe_on_whole_batches(fashion_root, tmp_path, monkeypatch):
    """ToTensor() alone (no Normalize), batches of 64 fetched whole, CrossEntropyLoss and plain SGD at 1e-3."""
    seen, reads = {}, count_single_image_reads(monkeypatch)
    real_train_loop, real_test_loop = quickstart.train_loop, quickstart.test_loop

    def train_loop(dataloader, model, loss_fn, optimizer, **kwargs):
        seen.update(train=dataloader, model=model, loss_fn=loss_fn, optimizer=optimizer)
        reads.clear()
        metrics = real_train_loop(dataloader, model, loss_fn, optimizer, **kwargs)
        seen["single_reads"] = list(reads)  # the test loader may read image by image; training must not
        return metrics

    def test_loop(dataloader, model, loss_fn, **kwargs):
        seen["test"] = dataloader
        return real_test_loop(dataloader, model, loss_fn, **kwargs)

    monkeypatch.setattr(quickstart, "train_loop", train_loop)
    monkeypatch.setattr(quickstart, "test_loop", test_loop)
    history = run(fashion_root, tmp_path, "--epochs", "1")
    assert history[0]["train_images"] == 640 and history[0]["test_images"] == 200
    assert seen["single_reads"] == []  # whole batches: one indexing operation per batch, no unstacking

    # The training images, in the file's order, are exactly what the tutorial's ToTensor() makes of them.
    images, targets = seen["train"].dataset.tensors
    reference = datasets.FashionMNIST(str(fashion_root), train=True, transform=ToTensor())
    for index in (0, 1, 333, 639):
        image, label = reference[index]
        assert torch.equal(images[index], image) and targets[index].item() == label
    for loader in (seen["train"], seen["test"]):
        batch, _ = next(iter(loader))
        assert batch.shape == (64, 1, 28, 28)
    assert type(seen["model"]) is quickstart.NeuralNetwork
    assert isinstance(seen["loss_fn"], torch.nn.CrossEntropyLoss)
    optimizer = seen["optimizer"]
    assert type(optimizer) is torch.optim.SGD
    assert optimizer.defaults["lr"] == 1e-3
    assert optimizer.defaults["momentum"] == 0 and not optimizer.defaults["nesterov"]
    assert optimizer.defaults["weight_decay"] == 0


def test_training_set_is_shuffled_every_epoch_and_test_set_never(fashion_root, tmp_path, monkeypatch):
    seen = {"train": [], "test": []}
    real_train_loop, real_test_loop = quickstart.train_loop, quickstart.test_loop

    def train_loop(dataloader, *args, **kwargs):
        seen["train"].append(next(iter(dataloader))[1][:20].tolist())  # the first labels this epoch would see
        return real_train_loop(dataloader, *args, **kwargs)

    def test_loop(dataloader, *args, **kwargs):
        seen["test"].append(next(iter(dataloader))[1][:20].tolist())
        return real_test_loop(dataloader, *args, **kwargs)

    monkeypatch.setattr(quickstart, "train_loop", train_loop)
    monkeypatch.setattr(quickstart, "test_loop", test_loop)
    run(fashion_root, tmp_path, "--epochs", "2")
    raw = fashion_root / "FashionMNIST" / "raw"
    test_labels = np.frombuffer((raw / "t10k-labels-idx1-ubyte").read_bytes(), np.uint8, offset=8)
    train_labels = np.frombuffer((raw / "train-labels-idx1-ubyte").read_bytes(), np.uint8, offset=8)
    assert seen["test"][0] == seen["test"][1] == test_labels[:20].tolist()  # the file's own order, every time
    assert seen["train"][0] != train_labels[:20].tolist() and seen["train"][0] != seen["train"][1]


def test_ctrl_c_mid_epoch_then_resume_equals_an_uninterrupted_run(fashion_root, tmp_path, monkeypatch, capsys):
    flags = ["--epochs", "3", "--lr", "0.05", "--batch-size", "32"]
    straight = run(fashion_root, tmp_path / "straight", *flags)
    real_step, calls = torch.optim.SGD.step, {"n": 0}

    def step_then_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 20 + 7:  # 20 batches make an epoch here: Ctrl-C 7 batches into epoch 2
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(fashion_root, tmp_path / "split", *flags)
    monkeypatch.undo()
    checkpoint = tmp_path / "split" / "checkpoint.pt"
    assert f"--resume {checkpoint}" in capsys.readouterr().out
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1  # the last finished epoch
    resumed = quickstart.main(["--data-dir", str(fashion_root), "--no-accel", *flags, "--resume", str(checkpoint)])
    assert without_timing(resumed) == without_timing(straight)
    weights = torch.load(checkpoint, weights_only=True)["model_state_dict"]
    expected = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model_state_dict"]
    assert all(torch.equal(weights[k], expected[k]) for k in expected)  # bit for bit


def test_resume_with_other_settings_names_each(fashion_root, tmp_path, capsys):
    run(fashion_root, tmp_path, "--epochs", "1")
    capsys.readouterr()
    err = user_error(["--data-dir", str(fashion_root), "--no-accel", "--epochs", "2", "--lr", "0.5",
                      "--batch-size", "32", "--seed", "7", "--resume", str(tmp_path / "checkpoint.pt")], capsys)
    for words in ("--batch-size 64 (this run: 32)", "--lr 0.001 (this run: 0.5)", "--seed 1 (this run: 7)"):
        assert words in err


def test_diverging_run_stops_and_saves_nothing(fashion_root, tmp_path, capsys):
    err = user_error(["--data-dir", str(fashion_root), "--out-dir", str(tmp_path / "run"), "--no-accel",
                      "--lr", "3e38", "--epochs", "2"], capsys)
    assert "training diverged in epoch 1" in err and "smaller --lr" in err
    assert not (tmp_path / "run").exists()  # no NaN weights, no checkpoint, no half-made folder


# --- train_loop() and test_loop() themselves ------------------------------------------------------

def small_batches(count: int = 200, batch_size: int = 64) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(count, 1, 28, 28, generator=generator)
    targets = torch.randint(0, 10, (count,), generator=generator)
    return DataLoader(TensorDataset(images, targets), batch_size=batch_size, shuffle=False)


def test_train_loop_counts_images_and_averages_per_image(capsys):
    torch.manual_seed(0)
    model, loader = quickstart.NeuralNetwork(), small_batches()  # batches of 64, 64, 64 and 8
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


def test_every_step_uses_this_batchs_gradient_alone(capsys):
    """Catches a missing optimizer.zero_grad() (gradients pile up) and a loss that is not the batch's."""
    torch.manual_seed(0)
    model, loader = quickstart.NeuralNetwork(), small_batches(count=96, batch_size=32)
    optimizer = RecordingSGD(model.parameters())
    quickstart.train_loop(loader, model, torch.nn.CrossEntropyLoss(), optimizer)
    expected = expected_gradients(model, F.cross_entropy, loader)
    assert len(optimizer.gradients) == len(expected) == 3
    for got, want in zip(optimizer.gradients, expected):
        assert all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got, want))


def test_train_loop_runs_in_training_mode_and_test_loop_in_eval_mode(capsys):
    model, loader = quickstart.NeuralNetwork(), small_batches(count=96, batch_size=32)
    modes = record_modes(model)
    model.eval()  # left in the wrong mode on purpose: train_loop() must switch
    quickstart.train_loop(loader, model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.0))
    assert modes == [True, True, True]
    modes.clear()
    quickstart.test_loop(loader, model, torch.nn.CrossEntropyLoss())
    assert modes == [False, False, False]


def test_test_loop_prints_the_tutorials_batch_mean_and_returns_the_image_mean(capsys):
    torch.manual_seed(0)
    model, loader = quickstart.NeuralNetwork(), small_batches()
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


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_model_and_loops_copy_out_alone_and_the_whole_script_needs_common(tmp_path):
    """NeuralNetwork, train_loop() and test_loop() copied alone train; the script without common/ says one line."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "quickstart.py").write_text(SCRIPT.read_text(encoding="utf-8"), encoding="utf-8")
    code = extract_definitions(SCRIPT, ["NeuralNetwork", "train_loop", "test_loop"]) + textwrap.dedent("""
        torch.manual_seed(0)
        targets = torch.randint(0, 2, (256,))
        images = 0.6 * torch.rand(256, 1, 28, 28) + 0.4 * targets.view(-1, 1, 1, 1)  # class 1 is brighter
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, targets), batch_size=32,
                                             shuffle=True)
        model = NeuralNetwork()
        loss_fn = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for epoch in range(8):
            train_loop(loader, model, loss_fn, optimizer, log_interval=4)
        metrics = test_loop(loader, model, loss_fn)
        assert metrics["test_accuracy"] > 0.8, metrics
        print("copied code OK", flush=True)

        import runpy
        runpy.run_path("quickstart.py", run_name="__main__")  # the whole script, without common/
    """)
    result = run_copied_code(code, folder)
    assert "copied code OK" in result.stdout and "loss: " in result.stdout, result.stderr
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "needs the repository's common/ folder" in result.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (["--lr", "0"], "argument --lr: must be a number greater than 0"),
    (["--batch-size", "0"], "argument --batch-size: must be from 1 to"),
    (["--momentum", "0.9"], "unrecognized arguments: --momentum 0.9"),
])
def test_bad_flags_one_line_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        quickstart.main(flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and err.count("\n") == 1


def test_missing_data_is_one_line(tmp_path, capsys):
    err = user_error(["--data-dir", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "run"), "--no-accel"],
                     capsys)
    assert "FashionMNIST is not in" in err
    assert not (tmp_path / "run").exists()
