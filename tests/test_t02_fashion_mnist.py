"""T02: fashion_mnist.py and compare_hyperparameters.py, end to end on small FashionMNIST/MNIST-format data."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common import cli, plots, synthetic
from common.checkpoint import safe_load
from T02_fashion_mnist import compare_hyperparameters, fashion_mnist

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "T02_fashion_mnist"
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
    """A smaller FashionMNIST (500 train / 200 test) for the CNN, the slowest model on a CPU."""
    root = tmp_path_factory.mktemp("t02-cnn-data")
    synthetic.write_mnist(root, "FashionMNIST", train_size=500, test_size=200)
    return root


CNN_FLAGS = ["--model", "cnn", "--batch-size", "32", "--save-checkpoint", "--scheduler", "step", "--step-size", "1",
             "--log-interval", "5", "--test-batch-size", "128"]


@pytest.fixture(scope="module")
def cnn_run(cnn_root, tmp_path_factory) -> tuple[Path, list[dict]]:
    """One uninterrupted 2-epoch CNN run with a checkpoint, a saved model and a step scheduler."""
    out_dir = tmp_path_factory.mktemp("cnn-run")
    history = run(cnn_root, out_dir, "--epochs", "2", "--save-model", *CNN_FLAGS)
    return out_dir, history


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


# --- training end to end ----------------------------------------------------------------------

def test_cnn_end_to_end_with_the_posts_output(cnn_run, capsys):
    out_dir, history = cnn_run
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[-1]["test_accuracy"] > 0.7  # ten classes: chance is 0.1
    assert history[-1]["test_images"] == 200  # every test image, the last partial batch included
    assert [row["lr"] for row in history] == [0.01, 0.005]  # StepLR halved it after epoch 1
    log = (out_dir / "train.log").read_text()
    assert re.search(r"Epoch \[1/2\], Step \[5/16\], Loss: \d+\.\d{4}\n", log)
    assert re.search(r"Epoch \[2/2\], Step \[15/16\], Loss: \d+\.\d{4}\n", log)
    assert re.search(r"Test Accuracy: \d+\.\d\d% \(\d+/200\), Average loss: \d+\.\d{4}\n", log)
    assert re.search(r"Epoch 2 took \d+\.\d s \(training: [\d,]+ images/s\)", log)
    assert "Parameters: 953,066" in log and "ConvNet(" in log
    for name in ("metrics.json", "metrics.csv", "curves.png", "predictions.png", "confusion_matrix.png"):
        assert (out_dir / name).is_file(), name
    for name in ("curves.png", "predictions.png", "confusion_matrix.png"):
        assert (out_dir / name).read_bytes()[:8] == PNG, name


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
    assert all(re.fullmatch(r"pred: \d - \w+\ntrue: \d - \w+", title) for title in shown["titles"])  # MNIST's names


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
    assert all(re.fullmatch(r"pred: (.+)\ntrue: (.+)", t) and t.split("\n")[0][6:] in FASHION_CLASSES
               for t in captured["titles"])
    counts = captured["counts"]
    assert counts.sum() == 300 and counts.diag().sum() == history[-1]["test_correct"]
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == PNG


def test_confusion_matrix_figure_and_hardest_classes(tmp_path):
    counts = torch.tensor([[8, 2, 0], [0, 5, 5], [0, 0, 0]])  # class "c" has no test images at all
    path = fashion_mnist.plot_confusion_matrix(counts, ["a", "b", "c"], tmp_path / "cm.png")
    assert path.read_bytes()[:8] == PNG
    assert fashion_mnist.hardest_classes(counts, ["a", "b", "c"], 2) == "c 0.0%, b 50.0%"


def test_classic_pipeline_gives_the_same_numbers(data_root, tmp_path):
    fast = run(data_root, tmp_path / "fast", "--epochs", "1")
    classic = run(data_root, tmp_path / "classic", "--epochs", "1", "--classic-pipeline")
    assert without_timing(fast) == without_timing(classic)


def test_diverging_run_stops_with_a_hint(data_root, tmp_path, capsys):
    err = user_error(["--data-dir", str(data_root), "--out-dir", str(tmp_path), "--epochs", "3", "--lr", "1000",
                      "--no-accel"], capsys)
    assert "training diverged" in err and "smaller --lr" in err


# --- checkpoints ------------------------------------------------------------------------------

def test_checkpoint_holds_the_posts_entries(cnn_run):
    out_dir, history = cnn_run
    state = safe_load(out_dir / "checkpoint.pt")
    assert state["epoch"] == 2 and state["model_class"] == "ConvNet"
    assert {"model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "args", "metrics", "loss"} <= set(state)
    assert state["metrics"][-1]["train_loss"] == history[-1]["train_loss"] == state["loss"]
    assert state["args"]["model"] == "cnn" and state["scheduler_state_dict"]["last_epoch"] == 2


def test_saved_model_reloads_to_identical_outputs(cnn_run):
    out_dir, _ = cnn_run
    reloaded = fashion_mnist.ConvNet()
    reloaded.load_state_dict(safe_load(out_dir / "fashion_mnist_cnn.pt"))
    trained = fashion_mnist.ConvNet()
    trained.load_state_dict(safe_load(out_dir / "checkpoint.pt")["model_state_dict"])
    images = torch.randn(8, 1, 28, 28)
    assert torch.equal(reloaded.eval()(images), trained.eval()(images))


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(cnn_root, cnn_run, tmp_path, capsys):
    # The CNN has dropout and shuffling: only restored random-number state makes the runs agree.
    straight_dir, straight = cnn_run
    run(cnn_root, tmp_path, "--epochs", "1", *CNN_FLAGS)
    resumed = fashion_mnist.main(["--data-dir", str(cnn_root), "--no-accel", "--epochs", "2", *CNN_FLAGS,
                                  "--resume", str(tmp_path / "checkpoint.pt")])
    assert "Resuming from" in capsys.readouterr().out
    assert without_timing(resumed) == without_timing(straight)
    weights_straight = safe_load(straight_dir / "checkpoint.pt")["model_state_dict"]
    weights_resumed = safe_load(tmp_path / "checkpoint.pt")["model_state_dict"]
    assert weights_straight.keys() == weights_resumed.keys()
    assert all(torch.equal(weights_straight[k], weights_resumed[k]) for k in weights_straight)


def test_ctrl_c_keeps_the_last_finished_epoch(data_root, tmp_path, monkeypatch, capsys):
    real_step, calls = torch.optim.SGD.step, {"n": 0}

    def step_then_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 16 + 3:  # 16 batches make an epoch here: stop 3 batches into epoch 2
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(data_root, tmp_path, "--epochs", "3", "--save-checkpoint")
    monkeypatch.undo()
    assert "Interrupted during epoch 2" in capsys.readouterr().out
    assert safe_load(tmp_path / "checkpoint.pt")["epoch"] == 1
    history = fashion_mnist.main(["--data-dir", str(data_root), "--no-accel", "--epochs", "2",
                                  "--resume", str(tmp_path / "checkpoint.pt")])
    assert [row["epoch"] for row in history] == [1, 2]


def test_ctrl_c_without_checkpoints_says_nothing_was_saved(data_root, tmp_path, monkeypatch, capsys):
    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.optim.SGD, "step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(data_root, tmp_path, "--epochs", "1")
    assert "nothing saved (pass --save-checkpoint to be able to resume)" in capsys.readouterr().out
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("flags, message", [
    (["--optimizer", "adam"], "trained with --optimizer sgd"),
    (["--model", "mlp"], "trained with --model cnn"),
    (["--scheduler", "none"], "trained with --scheduler step"),
    (["--model", "cnn", "--scheduler", "step", "--epochs", "2"], "already trained 2 epoch(s)"),
])
def test_resume_with_other_settings_is_refused(cnn_run, tmp_path, capsys, flags, message):
    out_dir, _ = cnn_run
    argv = ["--model", "cnn", "--scheduler", "step", "--batch-size", "32", "--epochs", "3", *flags,
            "--resume", str(out_dir / "checkpoint.pt"), "--out-dir", str(tmp_path)]
    assert message in user_error(argv, capsys)


def test_tensorboard_scalars_when_installed(data_root, tmp_path, monkeypatch):
    written = []

    class FakeWriter:
        def __init__(self, log_dir):
            written.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            written.append((tag, step))

        def close(self):
            written.append(("closed",))

    fake = type(sys)("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    run(data_root, tmp_path, "--dry-run", "--tensorboard")
    assert written[0] == ("dir", str(tmp_path / "tensorboard"))
    assert {"Loss/train", "Loss/test", "Accuracy/train", "Accuracy/test"} == {w[0] for w in written[1:-1]}
    assert written[-1] == ("closed",)


def test_tensorboard_missing_is_a_hint_not_a_crash(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    history = run(data_root, tmp_path, "--dry-run", "--tensorboard")
    assert len(history) == 1 and history[0]["train_images"] == 64
    assert "tensorboard package is not installed (pip install tensorboard)" in capsys.readouterr().out


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


def test_missing_resume_file(tmp_path, capsys):
    assert "does not exist" in user_error(["--resume", str(tmp_path / "nope.pt"), "--out-dir", str(tmp_path)],
                                          capsys)


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
    assert summary[0]["final_test_accuracy"] > 0.6
    out = capsys.readouterr().out
    assert re.search(r"1/3  lr=0\.1 batch=64 sgd none\s+2\s+\d+\.\d{4}\s+\d+\.\d{4}\s+\d+\.\d\d%", out)
    with open(tmp_path / "results.csv", newline="") as f:
        results = list(csv.DictReader(f))
    assert [(row["run"], row["epoch"]) for row in results] == [("1", "1"), ("1", "2")]
    assert float(results[-1]["test_accuracy"]) == summary[0]["final_test_accuracy"]
    with open(tmp_path / "summary.csv", newline="") as f:
        assert [row["status"] for row in csv.DictReader(f)] == [row["status"] for row in summary]
    assert (tmp_path / "comparison.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("flags, message", [
    (["--lrs"], "argument --lrs: expected at least one argument"),
    (["--lrs", "0.1", "-1"], "--lrs: must be a finite number greater than 0"),
    (["--batch-sizes", "0"], "--batch-sizes: must be greater than 0"),
    (["--optimizers", "rmsprop"], "argument --optimizers: invalid choice: 'rmsprop'"),
    (["--epochs", "0"], "--epochs: must be greater than 0"),
])
def test_study_bad_flags_one_line_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_hyperparameters.main(flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and err.count("\n") == 1


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


def test_resume_from_a_weights_only_file_is_refused(cnn_root, cnn_run, tmp_path, capsys):
    out_dir, _ = cnn_run
    err = user_error(["--data-dir", str(cnn_root), "--model", "cnn", "--out-dir", str(tmp_path),
                      "--resume", str(out_dir / "fashion_mnist_cnn.pt")], capsys)
    assert "not a full training checkpoint" in err
