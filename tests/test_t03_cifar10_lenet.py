"""T03: cifar10_lenet.py end to end on small CIFAR-10-format data (the real pickled batches, learnable classes)."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lesson_tools import (
    RecordingSGD,
    count_single_image_reads,
    expected_gradients,
    extract_definitions,
    record_modes,
    run_copied_code,
)
from matplotlib.axes import Axes
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets

from common import cli, synthetic
from common.checkpoint import safe_load
from T03_cifar10_lenet import cifar10_lenet
from T03_cifar10_lenet.cifar10_lenet import CLASSES, LeNet

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "T03_cifar10_lenet" / "cifar10_lenet.py"
TIMING_KEYS = {"seconds", "train_images_per_second"}
CPU = torch.device("cpu")
TRAIN_SIZE, TEST_SIZE = 800, 203  # 203 = 50 x 4 + 3: with batches of 4 the last test batch is partial
# The post's learning rate (0.001) needs the real 50,000 images; these 800 learn in a few epochs at 0.01.
FAST = ["--lr", "0.01"]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    """A data folder with a small learnable CIFAR-10 in torchvision's cifar-10-batches-py layout (read-only)."""
    root = tmp_path_factory.mktemp("cifar-data")
    synthetic.write_cifar10(root, train_size=TRAIN_SIZE, test_size=TEST_SIZE)
    return root


@pytest.fixture
def cifar(cifar_root, monkeypatch) -> Path:
    """The small CIFAR-10, with torchvision's MD5 check switched off for it (its files are not the real ones).

    Only the tests do this; the script itself keeps the check (see test_script_keeps_the_md5_check).
    """
    monkeypatch.setattr(datasets.cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(datasets.CIFAR10, "_check_integrity", lambda self: True)
    return cifar_root


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def run(data_dir: Path, out_dir: Path, *flags: str) -> list[dict]:
    return cifar10_lenet.main(["--data-dir", str(data_dir), "--out-dir", str(out_dir), "--no-accel", *flags])


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def read_test_batch(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images straight from the pickled file, normalised by hand (no torchvision involved)."""
    with open(root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    pixels = torch.as_tensor(np.asarray(batch["data"]).reshape(-1, 3, 32, 32), dtype=torch.float32)
    return (pixels / 255 - 0.5) / 0.5, torch.as_tensor(batch["labels"])


def record_pictures(monkeypatch) -> list[tuple[Axes, np.ndarray]]:
    """A list that gets (axes, array) for every image matplotlib draws from now on (the drawing still happens)."""
    drawn, real_imshow = [], Axes.imshow

    def imshow(self, array, *args, **kwargs):
        drawn.append((self, np.array(array, copy=True)))
        return real_imshow(self, array, *args, **kwargs)

    monkeypatch.setattr(Axes, "imshow", imshow)
    return drawn


def user_error(argv: list[str], capsys) -> str:
    """Run main() as the command line does (cli.run_main): expect exit 2 and one `error: ...` line."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(lambda: cifar10_lenet.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def expected_title(truth: int, guess: int) -> str:
    return f"true: {CLASSES[truth]}\npredicted: {CLASSES[guess]}" + ("" if truth == guess else " (x)")


def predict_one_by_one(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(images[i:i + 1]).argmax(1) for i in range(len(images))])



# --- the model and the pieces ------------------------------------------------------------------

def test_the_posts_class_name_net_is_lenet():
    assert cifar10_lenet.Net is cifar10_lenet.LeNet


def test_lenet_layers_and_shapes():
    model = LeNet()
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {"conv1.weight": (6, 3, 5, 5), "conv1.bias": (6,), "conv2.weight": (16, 6, 5, 5),
                      "conv2.bias": (16,), "fc1.weight": (120, 400), "fc1.bias": (120,),
                      "fc2.weight": (84, 120), "fc2.bias": (84,), "fc3.weight": (10, 84), "fc3.bias": (10,)}
    assert cifar10_lenet.count_parameters(model) == sum(p.numel() for p in model.parameters()) == 62_006
    x = torch.randn(5, 3, 32, 32)
    after_first = model.pool(torch.relu(model.conv1(x)))
    assert after_first.shape == (5, 6, 14, 14)
    assert model.pool(torch.relu(model.conv2(after_first))).shape == (5, 16, 5, 5)  # 16 x 5 x 5 = 400 for fc1
    out = model(x)
    assert out.shape == (5, 10)
    assert (out < 0).any()  # raw logits (no ReLU, no softmax at the end), as CrossEntropyLoss expects


def test_defaults_are_the_posts_run():
    args = cifar10_lenet.parse_args([])
    assert (args.batch_size, args.epochs, args.lr, args.momentum, args.log_interval, args.num_images) == \
        (4, 5, 0.001, 0.9, 2000, 4)


def random_batches(count: int, batch_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, DataLoader]:
    """`count` random CIFAR-sized images with labels, and a loader over them in order (never shuffled)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return images, labels, DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=False)


def test_every_step_uses_this_batchs_gradient_and_the_loss_is_the_mean_over_every_image(capsys):
    """zero_grad() each batch; train_loss = the mean over all images, the partial last batch included."""
    torch.manual_seed(0)
    model = LeNet()
    images, labels, loader = random_batches(10, 4)  # batches of 4, 4 and 2
    criterion = nn.CrossEntropyLoss()
    expected = expected_gradients(model, criterion, loader)
    optimizer = RecordingSGD(model.parameters())  # lr 0: the weights stay put, so each step can be checked
    metrics = cifar10_lenet.train(model, CPU, loader, optimizer, criterion, epoch=1, log_interval=2)
    assert len(optimizer.gradients) == len(expected) == 3
    for step, (used, wanted) in enumerate(zip(optimizer.gradients, expected)):
        assert all(torch.allclose(u, w, atol=1e-6) for u, w in zip(used, wanted)), f"step {step}"
    with torch.no_grad():
        direct = F.cross_entropy(model(images), labels).item()
    assert metrics["train_images"] == 10
    assert metrics["train_loss"] == pytest.approx(direct, rel=1e-5)
    assert metrics["train_seconds"] > 0
    # The post's line: the average loss of the 2 batches (8 images) since the last line.
    with torch.no_grad():
        first_two = F.cross_entropy(model(images[:8]), labels[:8]).item()
    assert capsys.readouterr().out == f"[1,     2] loss: {first_two:.3f}\n"


def test_train_and_test_set_the_models_mode():
    model = LeNet()
    modes = record_modes(model)
    _, _, loader = random_batches(6, 4)
    model.eval()  # as test() leaves it: train() must switch back itself
    cifar10_lenet.train(model, CPU, loader, torch.optim.SGD(model.parameters(), lr=0.0), nn.CrossEntropyLoss(), 1)
    assert modes == [True, True]
    modes.clear()
    model.train()  # as train() leaves it
    cifar10_lenet.test(model, CPU, loader)
    assert modes == [False, False]


def test_test_uses_evaluation_mode_with_dropout():
    """With dropout, train-mode scores are random; test() must give the eval-mode numbers every time."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10))
    images, labels, loader = random_batches(30, 8)
    model.eval()
    with torch.no_grad():
        direct = F.cross_entropy(model(images), labels).item()
        train_mode = F.cross_entropy(model.train()(images), labels).item()
    assert train_mode != pytest.approx(direct, rel=1e-4)  # dropout makes a difference here
    model.train()
    assert cifar10_lenet.test(model, CPU, loader)["test_loss"] == pytest.approx(direct, rel=1e-5)


@pytest.mark.parametrize("batch_size", [4, 10, 1000])  # 203 = 50 x 4 + 3 = 20 x 10 + 3: partial last batches
def test_test_counts_every_image_whatever_the_batch_size(batch_size, capsys):
    torch.manual_seed(0)
    model = LeNet()
    images, labels, loader = random_batches(TEST_SIZE, batch_size)
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    predicted, direct_loss = outputs.argmax(1), F.cross_entropy(outputs, labels).item()
    result = cifar10_lenet.test(model, CPU, loader)
    assert result["test_images"] == TEST_SIZE
    assert result["test_loss"] == pytest.approx(direct_loss, rel=1e-6)  # the mean over images, not over batches
    assert result["test_correct"] == int((predicted == labels).sum())
    assert result["test_accuracy"] == result["test_correct"] / TEST_SIZE
    confusion = result["confusion"]
    assert confusion.shape == (10, 10) and int(confusion.sum()) == TEST_SIZE
    accuracies = cifar10_lenet.per_class_accuracy(confusion)
    for c in range(10):  # row c, column c: images of class c predicted as c
        assert confusion[c].sum() == (labels == c).sum()
        assert confusion[c, c] == ((labels == c) & (predicted == c)).sum()
        assert accuracies[c] == pytest.approx(float(((labels == c) & (predicted == c)).sum() / (labels == c).sum()))
    assert f"Accuracy: {result['test_correct']}/{TEST_SIZE} " in capsys.readouterr().out


def test_post_style_lines_truncate_like_the_post_and_survive_an_empty_class():
    confusion = torch.zeros(10, 10, dtype=torch.long)
    confusion[0, 0], confusion[0, 3] = 2, 1  # plane: 2 of 3 right = 66.7%, which '%d' prints as 66
    confusion[1, 1] = 5  # car: 5 of 5
    confusion[3, 5] = 4  # cat: 0 of 4
    lines = cifar10_lenet.post_style_lines(confusion)  # birds and the rest: no test images at all
    assert lines[0] == "Accuracy of the network on the 12 test images: 58 %"  # 7 / 12 = 58.3%
    assert lines[1:5] == ["Accuracy of plane : 66 %", "Accuracy of   car : 100 %",
                          "Accuracy of  bird : n/a (no test images of this class)", "Accuracy of   cat :  0 %"]
    assert len(lines) == 11
    assert cifar10_lenet.per_class_accuracy(confusion)[:4] == [2 / 3, 1.0, None, 0.0]


def test_show_predictions_titles_and_real_colours_of_the_first_images(cifar_root, tmp_path, monkeypatch, capsys):
    """An untrained model gets many wrong: each title must be the model's own guess for that very image."""
    images, labels = read_test_batch(cifar_root)
    test_set = TensorDataset(images[:12], labels[:12])
    torch.manual_seed(3)
    model = LeNet()
    guesses = predict_one_by_one(model, images[:12])
    drawn = record_pictures(monkeypatch)
    cifar10_lenet.show_predictions(model, CPU, test_set, 10, tmp_path / "predictions.png")
    assert len(drawn) == 10
    assert [ax.get_title() for ax, _ in drawn] == [expected_title(int(t), int(g))
                                                  for t, g in zip(labels[:10], guesses[:10])]
    assert any(" (x)" in ax.get_title() for ax, _ in drawn) and (guesses[:10] != labels[:10]).any()
    for i, (_, picture) in enumerate(drawn):  # the 0..1 pixels, not the -1..1 the model sees
        assert np.allclose(picture, (images[i] * 0.5 + 0.5).permute(1, 2, 0).numpy(), atol=1e-6), i
    out = capsys.readouterr().out
    assert out == ("GroundTruth:  " + " ".join(f"{CLASSES[i]:>5}" for i in labels[:10].tolist()) + "\n"
                   "Predicted:  " + " ".join(f"{CLASSES[i]:>5}" for i in guesses[:10].tolist()) + "\n")
    assert plt.imread(tmp_path / "predictions.png").ndim == 3


COPIED_CODE_RUN = """

import json
import runpy
from torch.utils.data import TensorDataset

torch.manual_seed(0)
images, labels = torch.randn(40, 3, 32, 32), torch.randint(0, 10, (40,))
loader = DataLoader(TensorDataset(images, labels), batch_size=8)
model = LeNet()
optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
trained = train(model, torch.device("cpu"), loader, optimizer, nn.CrossEntropyLoss(), 1, log_interval=2)
tested = test(model, torch.device("cpu"), loader)
tested["confusion"] = tested["confusion"].tolist()
print("RESULT", json.dumps({**trained, **tested}), flush=True)

# Then the whole script copied alone, common/ still blocked: it must stop with one line of its own.
sys.argv = ["cifar10_lenet.py", "--dry-run"]
runpy.run_path("cifar10_lenet.py", run_name="__main__")
print("the whole script ran without common/")
"""


@pytest.fixture(scope="module")
def copied(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A folder outside the repository with LeNet + train + test copied alone, and the whole script copied alone.

    One Python process runs both (torch takes seconds to import): first the copied pieces on random
    tensors, then the whole script, with the repository's common/ blocked (it is also pip-installed).
    """
    folder = tmp_path_factory.mktemp("copied")
    assert REPO not in folder.resolve().parents
    code = extract_definitions(SCRIPT, ["LeNet", "train", "test"])
    future = "from __future__ import annotations\n"
    if future in code and not code.startswith(future):  # a __future__ import must be the file's first line
        code = future + code.replace(future, "", 1)
    shutil.copy(SCRIPT, folder / "cifar10_lenet.py")
    return folder, run_copied_code(code + COPIED_CODE_RUN, folder)


def test_model_train_and_test_copy_out_alone(copied):
    """What a reader copies into a new file (LeNet, train, test) runs one epoch with torch alone."""
    _, result = copied
    assert "RESULT " in result.stdout, result.stderr
    assert re.search(r"^\[1,     2\] loss: \d\.\d{3}$", result.stdout, re.M)
    metrics = json.loads(result.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert metrics["train_images"] == metrics["test_images"] == 40
    assert all(math.isfinite(metrics[k]) and metrics[k] > 0 for k in ("train_loss", "test_loss", "train_seconds"))
    assert 0 <= metrics["test_accuracy"] <= 1 and sum(map(sum, metrics["confusion"])) == 40


def test_copied_script_without_common_stops_with_one_line(copied):
    folder, result = copied
    assert result.returncode == 1
    assert "the whole script ran without common/" not in result.stdout
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ") and "common/" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["cifar10_lenet.py", "copied.py"]  # no run folder


# --- end to end ---------------------------------------------------------------------------------

def test_trains_end_to_end_and_per_class_figures_match_a_direct_count(cifar, tmp_path, capsys, monkeypatch):
    file_images, file_labels = read_test_batch(cifar)
    tested_orders, real_test = [], cifar10_lenet.test

    def test_in_file_order(model, device, test_loader, *args, **kwargs):  # what order does test() see?
        tested_orders.append(torch.cat([targets for _, targets in test_loader]))
        return real_test(model, device, test_loader, *args, **kwargs)

    monkeypatch.setattr(cifar10_lenet, "test", test_in_file_order)
    drawn = record_pictures(monkeypatch)
    history = run(cifar, tmp_path, *FAST, "--epochs", "2", "--log-interval", "50", "--test-batch-size", "4",
                  "--num-images", "8", "--save-model")
    out = capsys.readouterr().out
    assert [row["epoch"] for row in history] == [1, 2]
    assert [row["lr"] for row in history] == [0.01] * 2  # no schedule in this lesson: the rate stays put
    assert history[-1]["train_loss"] < history[0]["train_loss"] * 0.5
    assert history[-1]["test_accuracy"] > 0.6  # ten classes: chance is 0.1
    assert history[-1]["test_images"] == TEST_SIZE  # the partial last batch of 3 included
    assert len(tested_orders) == 2 and all(torch.equal(order, file_labels) for order in tested_orders)  # unshuffled

    # The post's line formats, and the lifecycle's.
    assert "Using device: cpu" in out and "Parameters: 62,006" in out
    assert re.search(r"^\[1,    50\] loss: \d\.\d{3}$", out, re.M)
    assert re.search(r"^\[2,   200\] loss: \d\.\d{3}$", out, re.M)  # 800 / 4 = 200 batches an epoch
    assert re.search(r"^Epoch 2 took \d+\.\d s \(training: [\d,]+ images/s\)$", out, re.M)
    assert re.search(rf"^Test set: Average loss: \d+\.\d{{4}}, Accuracy: \d+/{TEST_SIZE} \(\d+%\)$", out, re.M)

    # Per-class figures against a direct count with the trained weights, one image at a time.
    model = LeNet()
    model.load_state_dict(safe_load(tmp_path / "cifar10_lenet.pt"))
    predicted = predict_one_by_one(model, file_images)
    correct = int((predicted == file_labels).sum())
    assert history[-1]["test_correct"] == correct
    assert history[-1]["test_loss"] == pytest.approx(F.cross_entropy(model(file_images), file_labels).item(),
                                                     rel=1e-5)
    assert f"Accuracy of the network on the {TEST_SIZE} test images: {100 * correct // TEST_SIZE} %" in out
    for c, name in enumerate(CLASSES):
        right, total = int(((file_labels == c) & (predicted == c)).sum()), int((file_labels == c).sum())
        assert history[-1][f"test_accuracy_{name}"] == pytest.approx(right / total)
        assert re.search(rf"^Accuracy of {name:>5} : {100 * right // total:2d} %$", out, re.M)

    # The picture and its lines: the first 8 test images, in order, in real colours, with the model's guesses.
    truth = " ".join(f"{CLASSES[i]:>5}" for i in file_labels[:8].tolist())
    guesses = " ".join(f"{CLASSES[i]:>5}" for i in predicted[:8].tolist())
    assert f"\nGroundTruth:  {truth}\nPredicted:  {guesses}\n" in out
    assert out.index("Finished Training\n") < out.index("GroundTruth:")  # the post's words, where it says them
    assert len(drawn) == 8
    assert [ax.get_title() for ax, _ in drawn] == [expected_title(int(t), int(p))
                                                  for t, p in zip(file_labels[:8], predicted[:8])]
    for i, (_, picture) in enumerate(drawn):
        assert np.allclose(picture, (file_images[i] * 0.5 + 0.5).permute(1, 2, 0).numpy(), atol=1e-6), i

    for name in ("metrics.json", "metrics.csv", "curves.png", "per_class.png", "predictions.png",
                 "checkpoint.pt", "cifar10_lenet.pt", "train.log"):
        assert (tmp_path / name).is_file(), name
    for name in ("curves.png", "per_class.png", "predictions.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    picture = plt.imread(tmp_path / "predictions.png")  # decodes: a real image, not just a PNG header
    assert picture.ndim == 3 and picture.shape[1] > 3 * picture.shape[0]  # 8 images in one row: wide, not tall
    assert json.loads((tmp_path / "metrics.json").read_text()) == history
    log = (tmp_path / "train.log").read_text()
    assert "Accuracy of the network on the 203 test images" in log and "GroundTruth:" in log
    assert f"Run folder: {tmp_path} (" in out



def test_classic_pipeline_gives_the_same_numbers(cifar, tmp_path, monkeypatch):
    reads = count_single_image_reads(monkeypatch)
    fast = run(cifar, tmp_path / "fast", "--epochs", "1", "--batch-size", "16")
    assert len(reads) <= 16  # whole batches (InMemoryDataset.__getitems__); single images only for the picture
    classic = run(cifar, tmp_path / "classic", "--epochs", "1", "--batch-size", "16", "--classic-pipeline")
    assert without_timing(fast) == without_timing(classic)


def test_dry_run_is_one_batch_each(cifar, tmp_path, capsys):
    history = run(cifar, tmp_path, "--dry-run", "--epochs", "5", "--test-batch-size", "100")
    out = capsys.readouterr().out
    assert len(history) == 1
    assert history[0]["train_images"] == 4 and history[0]["test_images"] == 100
    assert "Dry run: stopping after one batch of training." in out
    assert "Accuracy of the network on the 100 test images: " in out  # the images it tested, not 10,000
    assert not (tmp_path / "checkpoint.pt").exists()  # one batch is no epoch: nothing to resume


# --- resume, Ctrl-C, divergence -----------------------------------------------------------------

RESUMABLE = ["--batch-size", "32", "--lr", "0.05"]  # 800 / 32 = 25 steps an epoch


def final_weights(folder: Path) -> dict:
    return safe_load(folder / "checkpoint.pt")["model_state_dict"]


def assert_same_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_ctrl_c_mid_epoch_then_the_printed_command_equals_an_uninterrupted_run(cifar, tmp_path, monkeypatch,
                                                                              capsys):
    straight = run(cifar, tmp_path / "straight", *RESUMABLE, "--epochs", "2")
    real_step, calls = torch.optim.SGD.step, {"n": 0}

    def step_then_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 25 + 4:  # 4 steps into epoch 2, its weights already moved
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step_then_interrupt)
    capsys.readouterr()
    with pytest.raises(KeyboardInterrupt):
        run(cifar, tmp_path / "split", *RESUMABLE, "--epochs", "2")
    monkeypatch.setattr(torch.optim.SGD, "step", real_step)
    out = capsys.readouterr().out
    state = safe_load(tmp_path / "split" / "checkpoint.pt")
    assert state["epoch"] == 1 and len(state["metrics"]) == 1  # the last finished epoch, not the torn one
    assert "Interrupted during epoch 2" in (tmp_path / "split" / "train.log").read_text()
    command = shlex.split(re.search(r"continue with:\n  (.+)$", out, re.M).group(1))
    assert command[0] == "python" and Path(command[1]).resolve() == SCRIPT
    assert "--resume" in command and "--out-dir" not in command

    resumed = cifar10_lenet.main(command[2:])  # the printed command, as a reader pastes it
    assert [row["epoch"] for row in resumed] == [1, 2]
    assert without_timing(resumed) == without_timing(straight)
    assert_same_weights(final_weights(tmp_path / "straight"), final_weights(tmp_path / "split"))
    assert json.loads((tmp_path / "split" / "metrics.json").read_text()) == resumed


def test_resume_needs_the_same_batch_size_lr_and_momentum_and_epochs_may_grow(cifar, tmp_path, capsys):
    run(cifar, tmp_path, *RESUMABLE, "--epochs", "1")
    before = (tmp_path / "checkpoint.pt").read_bytes()
    base = ["--data-dir", str(cifar), "--no-accel", "--epochs", "2", "--resume", str(tmp_path / "checkpoint.pt")]
    capsys.readouterr()
    for flags, named in [(["--batch-size", "64", "--lr", "0.05"], ["--batch-size 32 (this run: 64)"]),
                         (["--batch-size", "32", "--lr", "0.1"], ["--lr 0.05 (this run: 0.1)"]),
                         (["--batch-size", "32", "--lr", "0.05", "--momentum", "0.5"],
                          ["--momentum 0.9 (this run: 0.5)"]),
                         (["--lr", "0.001", "--momentum", "0"],  # batch size 4 by default
                          ["--batch-size 32 (this run: 4)", "--lr 0.05 (this run: 0.001)",
                           "--momentum 0.9 (this run: 0.0)"])]:
        err = user_error(base + flags, capsys)
        assert "was trained with other settings" in err
        assert all(name in err for name in named), (err, named)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert len(json.loads((tmp_path / "metrics.json").read_text())) == 1
    # The same three flags continue it, and --epochs may grow.
    history = cifar10_lenet.main(base + RESUMABLE)
    assert "Resuming from" in capsys.readouterr().out
    assert [row["epoch"] for row in history] == [1, 2]  # the history carries on in the same folder
    assert safe_load(tmp_path / "checkpoint.pt")["epoch"] == 2


def test_divergence_stops_with_one_line_and_saves_no_weights(cifar, tmp_path, capsys):
    """The issue's run: --lr 100 --batch-size 64 used to finish, exit 0 and predict 'plane' for everything."""
    err = user_error(["--data-dir", str(cifar), "--out-dir", str(tmp_path / "run"), "--no-accel", "--lr", "100",
                      "--batch-size", "64", "--epochs", "2", "--save-model"], capsys)
    assert "training diverged in epoch 1" in err and "learning rate 100" in err
    assert not (tmp_path / "run").exists()  # nothing finished: no checkpoint, no weights, no folder
    assert not list(tmp_path.rglob("*.pt"))


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs: must be greater than 0"),
    (["--batch-size", "0"], "--batch-size: must be greater than 0"),
    (["--test-batch-size", "-4"], "--test-batch-size: must be greater than 0"),
    (["--lr", "0"], "--lr: must be a finite number greater than 0"),
    (["--momentum", "1"], "--momentum: must be at least 0 and less than 1"),
    (["--momentum", "-0.1"], "--momentum: must be at least 0 and less than 1"),
    (["--momentum", "fast"], "--momentum: expected a number"),
    (["--log-interval", "0"], "--log-interval: must be greater than 0"),
    (["--num-images", "0"], "--num-images: must be greater than 0"),
    (["--resume", "no-such-checkpoint.pt"], "--resume: checkpoint no-such-checkpoint.pt does not exist"),
    (["--optimizer", "adam"], "unrecognized arguments: --optimizer adam"),
])
def test_bad_flags_one_line_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cifar10_lenet.main(flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and err.count("\n") == 1


def test_offline_without_data(tmp_path, capsys):
    err = user_error(["--data-dir", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "run")], capsys)
    assert "download failed" in err and "cifar-10-python.tar.gz" in err
    assert not (tmp_path / "run").exists()  # a failed start leaves no empty run folder behind


def test_resume_from_another_model(cifar, tmp_path, capsys):
    other = torch.nn.Sequential(torch.nn.Linear(3, 2))
    torch.save({"model_class": "SimpleNN", "model_state_dict": other.state_dict(), "epoch": 1},
               tmp_path / "other.pt")
    err = user_error(["--data-dir", str(cifar), "--resume", str(tmp_path / "other.pt")], capsys)
    assert "holds a SimpleNN model, not a LeNet" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt"]  # nothing written beside it


def test_script_keeps_the_md5_check(cifar_root, tmp_path):
    """A real process, run from inside the lesson folder, on files whose MD5s are not CIFAR-10's."""
    env = {**os.environ, "PYTHONPATH": "", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "cifar10_lenet.py", "--no-accel", "--data-dir", str(cifar_root),
                             "--out-dir", str(tmp_path / "run")], cwd=SCRIPT.parent, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert "failed torchvision's MD5 check" in result.stderr and "data_batch_1" in result.stderr
    assert not (tmp_path / "run").exists()
