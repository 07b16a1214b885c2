"""Tests for the shared helpers in common/."""

from __future__ import annotations

import argparse
import gzip
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from torchvision import datasets, transforms

from common import checkpoint, cli, data, device, plots, seed, synthetic
from common.logger import close_logger, get_logger

REPO = Path(__file__).resolve().parents[1]
MNIST_TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])


# --- device ----------------------------------------------------------------------------------

@pytest.fixture
def fake_accelerators(monkeypatch):
    """Pretend CUDA (2 GPUs) and MPS are available; return a setter to switch them off."""
    state = {"cuda": True, "mps": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: state["cuda"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if state["cuda"] else 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: state["mps"])
    return state


def test_device_prefers_cuda_then_mps_then_cpu(fake_accelerators):
    assert device.select_device() == torch.device("cuda")
    assert device.select_device(no_cuda=True) == torch.device("mps")
    assert device.select_device(no_cuda=True, no_mps=True) == torch.device("cpu")
    assert device.select_device(no_accel=True) == torch.device("cpu")
    fake_accelerators["cuda"] = False
    assert device.select_device() == torch.device("mps")
    assert device.select_device(no_mps=True) == torch.device("cpu")


def test_device_explicit_choice(fake_accelerators):
    assert device.select_device("cuda:1") == torch.device("cuda:1")
    assert device.select_device("CPU", no_accel=False) == torch.device("cpu")
    assert device.select_device("mps") == torch.device("mps")
    with pytest.raises(cli.UserError, match="2 CUDA device"):
        device.select_device("cuda:2")
    with pytest.raises(cli.UserError, match="unknown device 'tpu'"):
        device.select_device("tpu")
    fake_accelerators.update(cuda=False, mps=False)
    with pytest.raises(cli.UserError, match="CUDA is not available"):
        device.select_device("cuda")
    with pytest.raises(cli.UserError, match="no MPS support"):
        device.select_device("mps")


def test_device_on_old_torch_without_mps_backend(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.backends, "mps")  # torch < 1.12 had no torch.backends.mps
    assert not device.mps_is_available()
    assert device.select_device() == torch.device("cpu")


def test_device_flags_parse():
    parser = argparse.ArgumentParser()
    device.add_device_arguments(parser)
    args = parser.parse_args(["--no-accel"])
    assert device.device_from_args(args) == torch.device("cpu")
    assert "torch " + torch.__version__ in device.describe(torch.device("cpu"))


# --- seeding ---------------------------------------------------------------------------------

def draw(generator: torch.Generator) -> tuple:
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist(),
            torch.randperm(10, generator=generator).tolist())


def test_same_seed_same_numbers_other_seed_other_numbers():
    first = draw(seed.seed_everything(7))
    assert draw(seed.seed_everything(7)) == first
    assert draw(seed.seed_everything(8)) != first


def test_deterministic_mode_switches_torch_to_deterministic_algorithms():
    try:
        seed.seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


# --- cli -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["0", "-3", "abc", "1.5"])
def test_positive_int_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli.positive_int(text)


@pytest.mark.parametrize("text", ["0", "-0.1", "nan", "inf", "x"])
def test_positive_float_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli.positive_float(text)


@pytest.mark.parametrize("text", ["1", "1.5", "-0.1", "fast"])
def test_momentum_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli.momentum(text)
    assert cli.momentum("0") == 0.0 and cli.momentum("0.9") == 0.9


def test_bad_flag_is_one_line_and_exit_2(capsys):
    parser = cli.ArgumentParser(prog="demo")
    parser.add_argument("--epochs", type=cli.positive_int, default=1)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--epochs", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--epochs" in err and "greater than 0" in err


def test_run_main_turns_user_errors_into_one_line(capsys):
    def failing():
        raise cli.UserError("the thing is missing")

    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(failing)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: the thing is missing\n"


def test_make_run_dir_gives_each_run_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)
    first, second = cli.make_run_dir(None, "demo"), cli.make_run_dir(None, "demo")
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == tmp_path / "runs"
    assert cli.make_run_dir(tmp_path / "mine", "demo") == tmp_path / "mine"


# --- data folder and loading -----------------------------------------------------------------

def test_data_dir_comes_from_flag_then_env_then_repo_never_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data.resolve_data_dir() == (REPO / "data").resolve()
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    assert data.resolve_data_dir() == tmp_path / "env"
    assert data.resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"


def test_loads_mnist_through_torchvision(mnist_root):
    train = data.load_dataset("mnist", mnist_root, train=True)
    test = data.load_dataset("mnist", mnist_root, train=False)
    assert isinstance(train, datasets.MNIST)
    assert (len(train), len(test)) == (2000, 500)
    assert train.data.shape == (2000, 28, 28) and train.targets.max() <= 9


def test_gzipped_files_dropped_in_by_hand_are_unpacked(tmp_path, mnist_root):
    synthetic.write_mnist(tmp_path, "MNIST", train_size=2000, test_size=500, gzipped=True)
    raw = tmp_path / "MNIST" / "raw"
    assert not (raw / "train-images-idx3-ubyte").exists()
    from_gz = data.load_dataset("mnist", tmp_path, train=True)
    plain = data.load_dataset("mnist", mnist_root, train=True)
    assert torch.equal(from_gz.data, plain.data) and torch.equal(from_gz.targets, plain.targets)
    assert (raw / "train-images-idx3-ubyte").exists() and (raw / "train-images-idx3-ubyte.gz").exists()


def test_missing_data_and_no_network_gives_instructions(tmp_path):
    with pytest.raises(cli.UserError) as err:
        data.load_dataset("mnist", tmp_path, train=True)
    message = str(err.value)
    assert "download failed" in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte.gz" in message and "https://" in message
    assert "\n" not in message


def test_missing_cifar_names_the_archive(tmp_path):
    with pytest.raises(cli.UserError, match="cifar-10-python.tar.gz"):
        data.load_dataset("cifar10", tmp_path, train=True)


def test_without_download_says_where_to_put_files(tmp_path):
    with pytest.raises(cli.UserError, match="is not in .*FashionMNIST"):
        data.load_dataset("fashion-mnist", tmp_path, train=True, download=False)


def test_truncated_file_is_named(tmp_path, mnist_root):
    shutil.copytree(mnist_root / "MNIST", tmp_path / "MNIST")
    images = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(cli.UserError, match="t10k-images-idx3-ubyte is truncated"):
        data.load_dataset("mnist", tmp_path, train=True)
    assert images.exists()  # never deletes the user's file


def test_garbage_file_and_bad_gzip_are_reported(tmp_path, mnist_root):
    shutil.copytree(mnist_root / "MNIST", tmp_path / "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    (raw / "train-labels-idx1-ubyte").write_bytes(b"<html>not found</html>")
    with pytest.raises(cli.UserError, match="not an MNIST IDX file"):
        data.load_dataset("mnist", tmp_path, train=True)
    (raw / "train-labels-idx1-ubyte").unlink()
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip")
    with pytest.raises(cli.UserError, match="not a valid gzip file"):
        data.load_dataset("mnist", tmp_path, train=True)
    assert not (raw / "train-labels-idx1-ubyte").exists()  # no half-written file left behind


def test_cifar_that_fails_md5_is_reported_not_deleted(tmp_path):
    folder = synthetic.write_cifar10(tmp_path, train_size=50, test_size=10)
    with pytest.raises(cli.UserError, match="MD5"):
        data.load_dataset("cifar10", tmp_path, train=True)
    assert (folder / "data_batch_1").exists()


def test_unknown_dataset():
    with pytest.raises(cli.UserError, match="unknown dataset"):
        data.load_dataset("imagenet", None, train=True)


# --- in-memory datasets ----------------------------------------------------------------------

def test_in_memory_mnist_equals_per_image_transform(mnist_root):
    dataset = data.load_dataset("mnist", mnist_root, train=False, transform=MNIST_TRANSFORM)
    fast = data.to_tensor_dataset(dataset, chunk_size=128)  # several chunks, one partial
    assert fast.tensors[0].shape == (500, 1, 28, 28)
    for i in (0, 1, 255, 499):
        image, label = dataset[i]
        assert torch.equal(fast[i][0], image)  # bit for bit: the same arithmetic as ToTensor+Normalize
        assert fast[i][1].item() == label


def test_in_memory_cifar_layout_equals_per_image_transform(tmp_path, monkeypatch):
    synthetic.write_cifar10(tmp_path, train_size=50, test_size=30)
    monkeypatch.setattr(datasets.cifar, "check_integrity", lambda *a, **k: True)  # our files, not the real MD5s
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))])
    dataset = datasets.CIFAR10(str(tmp_path), train=False, transform=transform)
    fast = data.to_tensor_dataset(dataset)
    assert fast.tensors[0].shape == (30, 3, 32, 32)
    for i in (0, 29):
        assert torch.equal(fast[i][0], dataset[i][0])


def test_in_memory_falls_back_to_per_image_for_other_transforms(mnist_root):
    transform = transforms.Compose([transforms.Resize(14), transforms.ToTensor()])
    dataset = data.load_dataset("mnist", mnist_root, train=False, transform=transform)
    fast = data.to_tensor_dataset(dataset)
    assert fast.tensors[0].shape == (500, 1, 14, 14)
    assert torch.equal(fast[7][0], dataset[7][0])


def test_in_memory_refuses_random_augmentation(mnist_root):
    transform = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    dataset = data.load_dataset("mnist", mnist_root, train=False, transform=transform)
    with pytest.raises(cli.UserError, match="RandomHorizontalFlip.*--classic-pipeline"):
        data.to_tensor_dataset(dataset)


def shuffled_batches(dataset, batch_size: int = 16, seed: int = 3, **options) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return list(torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                                            **options))


def test_in_memory_batches_are_fetched_whole_and_equal_the_image_by_image_ones(monkeypatch):
    images, labels = torch.randn(100, 1, 4, 4), torch.randint(0, 10, (100,))
    expected = shuffled_batches(TensorDataset(images, labels))  # DataLoader's usual way: one image at a time
    in_memory = data.InMemoryDataset(images, labels)
    without_collate = shuffled_batches(in_memory)  # a reader's DataLoader without loader_options: still right

    def one_image_at_a_time(self, index):
        raise AssertionError("the DataLoader asked for single images: __getitems__ was not used")
    monkeypatch.setattr(data.InMemoryDataset, "__getitem__", one_image_at_a_time)
    fast = shuffled_batches(in_memory, **data.loader_options(0, "cpu", in_memory))
    assert len(fast) == len(expected) == 7  # the last batch holds 4
    for got, other, want in zip(fast, without_collate, expected):
        for a, b, c in zip(got, other, want):
            assert a.dtype == b.dtype == c.dtype and torch.equal(a, c) and torch.equal(b, c)


def test_a_subset_of_an_in_memory_dataset_is_fetched_whole_too():  # T05's evaluation shards
    in_memory = data.InMemoryDataset(torch.arange(20.0).view(20, 1), torch.arange(20))
    shard = torch.utils.data.Subset(in_memory, range(1, 20, 2))
    images, labels = next(iter(torch.utils.data.DataLoader(shard, batch_size=4, **data.loader_options(0, "cpu"))))
    assert labels.tolist() == [1, 3, 5, 7] and images.shape == (4, 1)


def test_the_data_moves_to_the_gpu_only_when_it_fits_with_room_to_spare(monkeypatch, capsys):
    # No GPU here: torch.cuda.mem_get_info is faked and the "meta" device stands in for the GPU's
    # memory, so what is checked is the decision and that batches then come from that device.
    train, test = data.InMemoryDataset(torch.zeros(1000, 1, 28, 28), torch.zeros(1000, dtype=torch.long)), \
        data.InMemoryDataset(torch.zeros(200, 1, 28, 28), torch.zeros(200, dtype=torch.long))
    needed = train.nbytes() + test.nbytes()
    assert needed == 1200 * (28 * 28 * 4 + 8)
    free = {"bytes": 4 * needed + 1}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * 2**30))
    real_to = data.InMemoryDataset.to
    monkeypatch.setattr(data.InMemoryDataset, "to", lambda self, device: real_to(self, "meta"))

    moved = data.keep_on_gpu_if_it_fits([train, test], "cuda")
    assert [d.tensors[0].device.type for d in moved] == ["meta", "meta"]
    assert "kept on the GPU" in capsys.readouterr().out
    options = data.loader_options(0, "cuda", moved[0])
    assert options["pin_memory"] is False  # pinning is for host memory; this data needs no copy
    images, labels = next(iter(torch.utils.data.DataLoader(moved[0], batch_size=64, **options)))
    assert images.device.type == "meta" and images.shape == (64, 1, 28, 28)

    free["bytes"] = 4 * needed - 1  # more than a quarter of the free memory: stays on the host
    assert data.keep_on_gpu_if_it_fits([train, test], "cuda") == [train, test]
    assert "stays in host memory" in capsys.readouterr().out
    assert data.loader_options(0, "cuda", train)["pin_memory"] is True
    free["bytes"] = 10**15
    assert data.keep_on_gpu_if_it_fits([train, test], "cuda", num_workers=2) == [train, test]  # workers: no
    assert data.keep_on_gpu_if_it_fits([train, test], "cpu") == [train, test]
    assert data.keep_on_gpu_if_it_fits([train, TensorDataset(torch.zeros(3))], "cuda")[0] is train


# --- statistics ------------------------------------------------------------------------------

def test_channel_statistics_match_numpy():
    rng = np.random.default_rng(0)
    images = rng.random((1003, 3, 8, 8)).astype(np.float32) * np.array([1.0, 0.5, 0.2], np.float32)[:, None, None]
    dataset = TensorDataset(torch.from_numpy(images), torch.zeros(1003))
    mean, std = data.channel_statistics(dataset, batch_size=100)  # 11 batches, the last one partial
    np.testing.assert_allclose(mean.numpy(), images.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), images.std(axis=(0, 2, 3)), rtol=1e-5)


def test_channel_statistics_of_mnist_files_match_numpy(mnist_root):
    raw = (mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).astype(np.float64) / 255
    dataset = data.load_dataset("mnist", mnist_root, train=True, transform=transforms.ToTensor())
    mean, std = data.channel_statistics(dataset, batch_size=300)
    assert mean.item() == pytest.approx(pixels.mean(), rel=1e-5)
    assert std.item() == pytest.approx(pixels.std(), rel=1e-5)


# --- checkpoints -----------------------------------------------------------------------------

class TinyA(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


class TinyB(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 5)


def test_full_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = TinyA()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    generator = torch.Generator().manual_seed(3)
    path = checkpoint.save_checkpoint(tmp_path / "ck.pt", model, optimizer, scheduler, epoch=4,
                                      metrics=[{"epoch": 4, "loss": 0.5}], args={"out": tmp_path, "lr": 0.1},
                                      generator=generator)
    expected_next = torch.rand(3)

    fresh = TinyA()
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    fresh_scheduler = torch.optim.lr_scheduler.StepLR(fresh_optimizer, step_size=1, gamma=0.5)
    fresh_generator = torch.Generator()
    state = checkpoint.load_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler, fresh_generator)
    assert torch.equal(torch.rand(3), expected_next)  # torch's RNG continues where it was saved
    assert state["epoch"] == 4 and state["metrics"][0]["loss"] == 0.5 and state["args"]["out"] == str(tmp_path)
    x = torch.randn(5, 4)
    assert torch.equal(fresh(x), model(x))
    assert fresh_optimizer.state_dict()["state"][0]["momentum_buffer"].equal(
        optimizer.state_dict()["state"][0]["momentum_buffer"])
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr() == [0.05]
    assert fresh_generator.get_state().equal(generator.get_state())


def test_atomic_save_keeps_the_old_file_if_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    checkpoint.atomic_save({"version": 1}, path)

    def broken_save(obj, f):
        f.write(b"half a file")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_save({"version": 2}, path)
    monkeypatch.undo()
    assert checkpoint.safe_load(path) == {"version": 1}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_checkpoint_of_another_model_is_named(tmp_path):
    path = checkpoint.save_checkpoint(tmp_path / "ck.pt", TinyB())
    with pytest.raises(cli.UserError, match="holds a TinyB model, not a TinyA"):
        checkpoint.load_checkpoint(path, TinyA())


def test_state_dict_of_another_shape_is_named(tmp_path):
    path = checkpoint.atomic_save(TinyB().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(cli.UserError, match="different model than TinyA"):
        checkpoint.load_weights(TinyA(), path)
    with pytest.raises(cli.UserError, match="not a full training checkpoint"):
        checkpoint.load_checkpoint(path, TinyA())


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(cli.UserError, match="does not exist"):
        checkpoint.safe_load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(cli.UserError, match="not a readable PyTorch checkpoint"):
        checkpoint.safe_load(bad)


def test_weights_only_refuses_pickled_objects(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(TinyA(), path)  # the old habit: pickling the whole model object
    with pytest.raises(cli.UserError, match="not a readable PyTorch checkpoint"):
        checkpoint.safe_load(path)


# --- metrics, plots, logging -----------------------------------------------------------------

HISTORY = [{"epoch": 1, "train_loss": 1.0, "test_loss": 0.9, "test_accuracy": 0.7},
           {"epoch": 2, "train_loss": 0.6, "test_loss": 0.5, "test_accuracy": 0.8}]


def test_metrics_files(tmp_path):
    json_path, csv_path = plots.write_metrics(HISTORY, tmp_path)
    import json

    assert json.loads(json_path.read_text()) == HISTORY
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "epoch,train_loss,test_loss,test_accuracy" and lines[2] == "2,0.6,0.5,0.8"


def test_curves_are_a_png(tmp_path):
    plots.use_backend(show=False)
    path = plots.plot_curves(HISTORY, tmp_path / "curves.png", title="demo")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_logger_writes_console_and_file(tmp_path, capsys):
    log = get_logger("test-logger", tmp_path / "train.log")
    log.info("Train Epoch: 1")
    log = get_logger("test-logger", tmp_path / "train.log")  # a second main() must not double lines
    log.info("Test set: done")
    close_logger(log)
    assert capsys.readouterr().out == "Train Epoch: 1\nTest set: done\n"
    text = (tmp_path / "train.log").read_text()
    assert "Train Epoch: 1" in text and "Test set: done" in text


# --- synthetic formats -----------------------------------------------------------------------

def test_idx_writer_matches_torchvision_reader(tmp_path):
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = synthetic.write_idx(tmp_path / "x-idx3-ubyte", array, gzipped=True)
    with gzip.open(path) as f:
        (tmp_path / "plain").write_bytes(f.read())
    assert torch.equal(read_sn3_pascalvincent_tensor(str(tmp_path / "plain")), torch.from_numpy(array))


# --- packaging -------------------------------------------------------------------------------

def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower() for req in requirements}


def test_environment_yml_and_pyproject_name_the_same_runtime_dependencies():
    block = re.search(r"^dependencies = \[(.*?)\]", (REPO / "pyproject.toml").read_text(), re.S | re.M)
    runtime = _names(re.findall(r'"([^"]+)"', block.group(1)))
    assert runtime == {"torch", "torchvision", "numpy", "matplotlib"}
    conda = set()
    for line in (REPO / "environment.yml").read_text().splitlines():
        match = re.match(r"\s*-\s*([A-Za-z][\w.-]*)\s*([<>=!]=?[\w.*]+)?\s*(#.*)?$", line)
        if match and match.group(1) not in ("python", "pip", "conda-forge"):
            conda.add({"pytorch": "torch"}.get(match.group(1), match.group(1)).lower())
    assert conda == runtime
    assert "-e .[test]" in (REPO / "environment.yml").read_text()  # installs the project itself


def test_confusion_matrix_counts_pairs():
    matrix = plots.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert matrix.sum().item() == 6


def test_image_grid_is_a_png(tmp_path):
    plots.use_backend(show=False)
    images = torch.rand(5, 3, 32, 32)
    path = plots.plot_image_grid(images, [f"img {i}" for i in range(5)], tmp_path / "grid.png",
                                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), columns=4)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gray = plots.plot_image_grid(torch.rand(3, 1, 28, 28), ["a", "b", "c"], tmp_path / "gray.png")
    assert gray.stat().st_size > 1000


def test_loader_options():
    assert data.loader_options(0, "cpu") == {"num_workers": 0, "collate_fn": data.collate, "pin_memory": False}
    options = data.loader_options(2, torch.device("cuda"))
    assert options["pin_memory"] and options["persistent_workers"] and options["worker_init_fn"] is seed.seed_worker


@pytest.mark.parametrize("epochs", [1, 3, 14])
def test_curves_have_whole_epoch_ticks_only(tmp_path, monkeypatch, epochs):
    plots.use_backend(show=False)
    captured = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, show=False: captured.append(fig) or path)
    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.1 / e, "test_accuracy": 0.5 + e / 100}
               for e in range(1, epochs + 1)]
    plots.plot_curves(history, tmp_path / "curves.png")
    (fig,) = captured
    fig.canvas.draw()  # fills in the tick labels
    for ax in fig.axes:
        low, high = sorted(ax.get_xlim())
        shown = [tick for tick in ax.get_xticks() if low - 1e-9 <= tick <= high + 1e-9]
        labels = [label for label in ax.get_xticklabels() if label.get_text()]
        assert shown and labels
        assert all(float(tick).is_integer() for tick in shown), shown
        for label in labels:
            assert float(label.get_position()[0]).is_integer(), label
            assert re.fullmatch(r"\d+", label.get_text()), label.get_text()
    import matplotlib.pyplot as plt

    plt.close(fig)
