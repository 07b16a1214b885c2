"""T03: cifar10_lenet.py end to end on small CIFAR-10-format data (the real pickled batches, learnable classes)."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets

from common import cli, synthetic
from common.checkpoint import safe_load
from T03_cifar10_lenet import cifar10_lenet
from T03_cifar10_lenet.cifar10_lenet import CLASSES, LeNet

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "T03_cifar10_lenet" / "cifar10_lenet.py"
TIMING_KEYS = {"seconds", "train_images_per_second"}
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


# --- the model and the pieces ------------------------------------------------------------------

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


def test_test_counts_every_image_whatever_the_batch_size():
    torch.manual_seed(0)
    model = LeNet()
    images, labels = torch.randn(TEST_SIZE, 3, 32, 32), torch.randint(0, 10, (TEST_SIZE,))
    with torch.no_grad():
        predicted = model(images).argmax(1)
    results = [cifar10_lenet.test(model, torch.device("cpu"), DataLoader(TensorDataset(images, labels), batch_size=b))
               for b in (4, 7, 1000)]
    for result in results:
        assert result["test_images"] == TEST_SIZE
        assert result["test_correct"] == int((predicted == labels).sum())
        for c in range(10):  # row c, column c: images of class c predicted as c
            assert result["confusion"][c].sum() == (labels == c).sum()
            assert result["confusion"][c, c] == ((labels == c) & (predicted == c)).sum()
    assert results[0]["test_loss"] == pytest.approx(results[2]["test_loss"], rel=1e-5)


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


# --- end to end ---------------------------------------------------------------------------------

def test_trains_end_to_end_and_per_class_figures_match_a_direct_count(cifar, tmp_path, capsys):
    history = run(cifar, tmp_path, *FAST, "--epochs", "3", "--log-interval", "50", "--test-batch-size", "4",
                  "--num-images", "8", "--save-model")
    out = capsys.readouterr().out
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"] * 0.5
    assert history[-1]["test_accuracy"] > 0.6  # ten classes: chance is 0.1
    assert history[-1]["test_images"] == TEST_SIZE  # the partial last batch of 3 included

    # The post's line formats.
    assert "Parameters: 62,006" in out
    assert re.search(r"^\[1,    50\] loss: \d\.\d{3}$", out, re.M)
    assert re.search(r"^\[3,   200\] loss: \d\.\d{3}$", out, re.M)  # 800 / 4 = 200 batches an epoch
    assert re.search(r"^Epoch 3: .*took \d+\.\d s \(training: [\d,]+ images/s\)$", out, re.M)

    # Per-class figures against a direct count with the trained weights, one image at a time.
    model = LeNet()
    model.load_state_dict(safe_load(tmp_path / "cifar10_lenet.pt"))
    model.eval()
    images, labels = read_test_batch(cifar)
    with torch.no_grad():
        predicted = torch.cat([model(images[i:i + 1]).argmax(1) for i in range(len(images))])
    correct = int((predicted == labels).sum())
    assert history[-1]["test_correct"] == correct
    assert f"Accuracy of the network on the {TEST_SIZE} test images: {100 * correct // TEST_SIZE} %" in out
    for c, name in enumerate(CLASSES):
        right, total = int(((labels == c) & (predicted == c)).sum()), int((labels == c).sum())
        assert history[-1][f"test_accuracy_{name}"] == pytest.approx(right / total)
        assert re.search(rf"^Accuracy of {name:>5} : {100 * right // total:2d} %$", out, re.M)

    # The picture's lines name the first 8 test images and their predictions, as the post prints them.
    truth = " ".join(f"{CLASSES[i]:>5}" for i in labels[:8].tolist())
    guesses = " ".join(f"{CLASSES[i]:>5}" for i in predicted[:8].tolist())
    assert f"\nGroundTruth:  {truth}\n" in out and f"\nPredicted:  {guesses}\n" in out

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


def test_classic_pipeline_gives_the_same_numbers(cifar, tmp_path):
    fast = run(cifar, tmp_path / "fast", "--epochs", "1", "--batch-size", "16")
    classic = run(cifar, tmp_path / "classic", "--epochs", "1", "--batch-size", "16", "--classic-pipeline")
    assert without_timing(fast) == without_timing(classic)


def test_dry_run_is_one_batch_each(cifar, tmp_path, capsys):
    history = run(cifar, tmp_path, "--dry-run", "--epochs", "5", "--test-batch-size", "100")
    out = capsys.readouterr().out
    assert len(history) == 1
    assert history[0]["train_images"] == 4 and history[0]["test_images"] == 100
    assert "Dry run: stopping after one batch of training." in out
    assert "Accuracy of the network on the 100 test images: " in out  # the images it tested, not 10,000


def test_resume_continues_and_matches_an_uninterrupted_run(cifar, tmp_path, capsys):
    straight = run(cifar, tmp_path / "straight", *FAST, "--epochs", "2")
    run(cifar, tmp_path / "split", *FAST, "--epochs", "1")
    resumed = cifar10_lenet.main(["--data-dir", str(cifar), "--no-accel", *FAST, "--epochs", "2",
                                  "--resume", str(tmp_path / "split" / "checkpoint.pt")])
    assert "Resuming from" in capsys.readouterr().out
    assert [row["epoch"] for row in resumed] == [1, 2]  # the history carries on in the same folder
    assert without_timing(resumed) == without_timing(straight)  # momentum buffers and shuffling order restored
    weights_straight = safe_load(tmp_path / "straight" / "checkpoint.pt")["model_state_dict"]
    weights_resumed = safe_load(tmp_path / "split" / "checkpoint.pt")["model_state_dict"]
    assert all(torch.equal(weights_straight[k], weights_resumed[k]) for k in weights_straight)


def test_ctrl_c_saves_a_checkpoint_that_resumes(cifar, tmp_path, monkeypatch):
    real_step, calls = torch.optim.SGD.step, {"n": 0}

    def step_then_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 50 + 5:  # 50 batches of 16 make an epoch here: stop 5 batches into epoch 2
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(cifar, tmp_path, "--epochs", "3", "--batch-size", "16")
    monkeypatch.setattr(torch.optim.SGD, "step", real_step)
    state = safe_load(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1 and len(state["metrics"]) == 1
    assert "Interrupted during epoch 2" in (tmp_path / "train.log").read_text()
    history = cifar10_lenet.main(["--data-dir", str(cifar), "--no-accel", "--epochs", "2", "--batch-size", "16",
                                  "--resume", str(tmp_path / "checkpoint.pt")])
    assert [row["epoch"] for row in history] == [1, 2]


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
    (["--optimizer", "adam"], "unrecognized arguments: --optimizer adam"),
])
def test_bad_flags_one_line_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cifar10_lenet.main(flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and err.count("\n") == 1


def user_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(lambda: cifar10_lenet.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def test_offline_without_data(tmp_path, capsys):
    err = user_error(["--data-dir", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "run")], capsys)
    assert "download failed" in err and "cifar-10-python.tar.gz" in err
    assert not (tmp_path / "run").exists()  # a failed start leaves no empty run folder behind


def test_resume_from_another_model(cifar, tmp_path, capsys):
    other = torch.nn.Sequential(torch.nn.Linear(3, 2))
    torch.save({"model_class": "SimpleNN", "model_state_dict": other.state_dict(), "epoch": 1},
               tmp_path / "other.pt")
    err = user_error(["--data-dir", str(cifar), "--out-dir", str(tmp_path / "run"),
                      "--resume", str(tmp_path / "other.pt")], capsys)
    assert "holds a SimpleNN model, not a LeNet" in err


def test_missing_resume_file(tmp_path, capsys):
    err = user_error(["--resume", str(tmp_path / "nope.pt"), "--out-dir", str(tmp_path)], capsys)
    assert "--resume" in err and "does not exist" in err


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
